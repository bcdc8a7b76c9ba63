"""The transcription stage on JetStream: canonical audio in, transcript out, cached by content.

The transcript cache key covers everything that changes the result: the canonical audio's sha256, the
model, the compute type and every decoding option. A hit never touches the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json

from escriba.audio.pcm import decode_pcm
from escriba.bus import Job
from escriba.common import metrics
from escriba.pipeline.budget import AudioBudget
from escriba.pipeline.cache import MessageCache, count_shared
from escriba.pipeline.handoff import HANDOFF
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.singleflight import SingleFlight
from escriba.pipeline.stage import StageHandler
from escriba.stages import Stage
from escriba.transcript import merge_channels
from escriba.transcript_pb import transcript_from_pb, transcript_to_pb
from escriba.transcription.convert import transcription_options_from_pb
from escriba.transcription.engine import WhisperEngine
from escriba.transcription.options import TranscriptionOptions
from escriba.transcription.progress import ProgressReporter
from escriba.transcription.servicer import UnknownModelError
from escriba.v1 import jobs_pb2, transcription_pb2

#: Bump when a change in how transcripts are produced should invalidate cached ones.
TRANSCRIPT_CACHE_VERSION = 3  # 2: no timestamp tokens, segments from words, temperature fallback;
# 3: repeated speech at speech pace is not re-decoded as a loop; sampling seeded


def transcript_cache_key(
    audio_sha256: str,
    *,
    model: str,
    compute_type: str,
    options: TranscriptionOptions,
    encoder_context: str = "full",
) -> str:
    document = {
        "v": TRANSCRIPT_CACHE_VERSION,
        "model": model,
        "compute_type": compute_type,
        "options": dataclasses.asdict(options),
    }
    if encoder_context != "full":  # keys of the default context stay as they were
        document["encoder_context"] = encoder_context
    shape = json.dumps(
        document,
        sort_keys=True,
        default=str,
    )
    return f"{audio_sha256}.{hashlib.sha256(shape.encode()).hexdigest()[:32]}"


class TranscriptionStage(StageHandler[jobs_pb2.TranscribeJob]):
    stage = Stage.TRANSCRIPTION
    job_type = jobs_pb2.TranscribeJob

    def __init__(
        self,
        runtime: PipelineRuntime,
        engine: WhisperEngine,
        *,
        max_audio_in_flight_s: float,
        progress_interval_s: float = 1.0,
    ) -> None:
        super().__init__(runtime)
        self.engine = engine
        self.budget = AudioBudget(max_audio_in_flight_s)
        self._flights: SingleFlight[tuple[transcription_pb2.Transcript, float]] = SingleFlight()
        self.progress_interval_s = progress_interval_s

    @property
    def cache(self) -> MessageCache[transcription_pb2.Transcript]:
        return MessageCache(self.pipeline.transcripts, transcription_pb2.Transcript, self.stage)

    async def process(self, message: jobs_pb2.TranscribeJob, job: Job) -> None:
        pipeline = self.pipeline
        task_id = message.task_id
        requested = message.transcription.model
        if requested and requested != self.engine.model_name:
            raise UnknownModelError(
                f"this deployment serves model {self.engine.model_name!r}, not {requested!r}"
            )
        options = transcription_options_from_pb(message.transcription, self.engine.default_options)
        audio_sha = message.audio.normalized_sha256 or message.audio_object
        key = transcript_cache_key(
            audio_sha,
            model=self.engine.model_name,
            compute_type=self.engine.compute_type,
            options=options,
            encoder_context=self.engine.encoder_context,
        )
        if message.channels:
            transcript, from_cache, duration_ms = await self._per_channel(message, options, job)
        else:
            transcript, from_cache, duration_ms = await self._one(
                message.audio_object, audio_sha, key, message.audio.duration_s, options, job, task_id
            )
        write = await pipeline.repo.record_stage_result(
            task_id,
            Stage.TRANSCRIPTION,
            {"cache_key": key, "from_cache": from_cache},
            duration_ms=duration_ms,
        )
        if not write.applied and write.stored is None:
            return
        await self.hand_on(
            jobs_pb2.CorrectJob(
                task_id=task_id,
                audio=message.audio,
                transcript=transcript,
                correction=message.correction,
                output_formats=message.output_formats,
                transcript_from_cache=from_cache,
            ),
            task_id=task_id,
            audio_duration_s=message.audio.duration_s,
        )

    async def _one(
        self,
        audio_object: str,
        audio_sha256: str,
        key: str,
        duration_s: float,
        options: TranscriptionOptions,
        job: Job,
        task_id: str,
    ) -> tuple[transcription_pb2.Transcript, bool, float]:
        """One recording (or one channel of it, ``task_id`` empty: no progress events of its own):
        from the cache, or through the model."""
        pipeline = self.pipeline
        # Audio handed over by a preprocess stage in this process is taken either way, so a cache hit
        # leaves nothing behind; without it, the object store has the audio as always.
        taken = HANDOFF.take(audio_sha256) if HANDOFF.enabled else None
        joining = self._flights.in_flight(key)
        # Read once, then let go (a long recording's canonical audio is large); a task that waits for
        # another's transcript keeps none of it meanwhile.
        handed = [taken] if taken is not None and not joining else []
        del taken
        if not joining:  # in flight: not stored yet, so no lookup
            cached = await self.cache.get(key)
            if cached is not None:
                return cached, True, 0.0

        async def compute() -> tuple[transcription_pb2.Transcript, float]:
            async with self.budget.hold(duration_s, while_waiting=job.clock.paused()):
                data = handed.pop() if handed else await pipeline.normalized.get_bytes(audio_object)
                samples = await asyncio.to_thread(decode_pcm, data)
                del data
                if task_id:
                    reporter = ProgressReporter(pipeline, task_id, interval_s=self.progress_interval_s)
                    async with reporter:
                        result = await self.engine.transcribe_async(samples, options, reporter)
                else:
                    result = await self.engine.transcribe_async(samples, options)
                del samples
            metrics.record_work(
                "transcription",
                audio_s=result.duration_s,
                elapsed_s=result.inference_ms / 1000,
                batch_size=result.batch_size,
                windows_redecoded=result.windows_redecoded,
            )
            transcript = transcript_to_pb(result)
            await self.cache.put(key, transcript)
            return transcript, result.inference_ms

        # Another task of the same audio and options already in the model: take its transcript.
        (transcript, inference_ms), shared = await self._flights.run(
            key, compute, while_waiting=job.clock.paused
        )
        if shared:
            if joining:  # one count per lookup: a lookup that missed just before was counted
                count_shared(self.stage)
            return transcript, True, 0.0
        return transcript, False, inference_ms

    async def _per_channel(
        self, message: jobs_pb2.TranscribeJob, options: TranscriptionOptions, job: Job
    ) -> tuple[transcription_pb2.Transcript, bool, float]:
        """Each distinct channel on its own (together, so their windows share batches), then merged."""
        engine = self.engine
        if HANDOFF.enabled:
            HANDOFF.take(message.audio.normalized_sha256)  # the mixdown, handed over but not needed
        results = await asyncio.gather(
            *(
                self._one(
                    channel.audio_object,
                    channel.normalized_sha256,
                    transcript_cache_key(
                        channel.normalized_sha256,
                        model=engine.model_name,
                        compute_type=engine.compute_type,
                        options=options,
                        encoder_context=engine.encoder_context,
                    ),
                    message.audio.duration_s,
                    options,
                    job,
                    "",
                )
                for channel in message.channels
            )
        )
        merged = merge_channels(
            [
                (channel.channel, transcript_from_pb(transcript))
                for channel, (transcript, _, _) in zip(message.channels, results, strict=True)
            ]
        )
        return (
            transcript_to_pb(merged),
            all(from_cache for _, from_cache, _ in results),
            sum(ms for _, _, ms in results),
        )
