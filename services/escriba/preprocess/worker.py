"""The preprocess stage on JetStream: upload in, canonical audio out, cached by content.

The normalized-audio cache is an object store keyed by the upload's sha256 plus the settings that shape
the output (:meth:`Preprocessor.cache_key`); the object carries its AudioInfo in a header, so a hit
skips decoding entirely.

Each job works in a directory of its own under the system's temporary directory (the pod's /tmp
emptyDir): the upload is read from the object store (or downloaded) into a file there, the canonical
audio is written there and stored from the file, and the directory is removed however the job ends.
So a job's memory does not depend on the upload's size or the recording's length (issue 15).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from escriba.bus import Job
from escriba.common import metrics
from escriba.pipeline.cache import count_lookup
from escriba.pipeline.handoff import offer_file
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.stage import StageHandler
from escriba.pipeline.taskpb import audio_to_dict
from escriba.preprocess.convert import audio_info_to_pb
from escriba.preprocess.engine import PreprocessInfo, Preprocessor
from escriba.preprocess.fetch import AudioFetcher
from escriba.stages import Stage
from escriba.v1 import common_pb2, jobs_pb2

log = logging.getLogger(__name__)

AUDIO_INFO_HEADER = "Escriba-Audio-Info"


class PreprocessStage(StageHandler[jobs_pb2.PreprocessJob]):
    stage = Stage.PREPROCESS
    job_type = jobs_pb2.PreprocessJob

    def __init__(self, runtime: PipelineRuntime, engine: Preprocessor, fetcher: AudioFetcher) -> None:
        super().__init__(runtime)
        self.engine = engine
        self.fetcher = fetcher
        self.max_worker_deaths = engine.settings.max_worker_deaths

    async def process(self, message: jobs_pb2.PreprocessJob, job: Job) -> None:
        async with _work_dir() as work:
            await self._process(message, job, work)

    async def _process(self, message: jobs_pb2.PreprocessJob, job: Job, work: Path) -> None:
        pipeline = self.pipeline
        task_id = message.task_id
        started = time.perf_counter()
        upload: Path | None = None
        filename = message.filename
        sha256 = message.audio_sha256
        if message.audio_url:
            # Fetched on every delivery: the content may have changed, and only its hash names it.
            # Not this job's work time: the download has its own limits (ESCRIBA_FETCH_TIMEOUT_S).
            with job.clock.paused():
                fetched = await self.fetcher.fetch(
                    message.audio_url, work / "upload", max_bytes=self.engine.settings.max_input_bytes
                )
            upload, sha256 = fetched.path, fetched.sha256
            filename = filename or fetched.filename
        key = self.engine.cache_key(sha256)
        info = await self._cached(key)
        count_lookup(self.stage, hit=info is not None)
        if info is None:
            upload = upload or await self._upload(message, work)
            output = work / "canonical"
            work_started = time.perf_counter()
            result = await asyncio.to_thread(self._preprocess, upload, output, filename, work)
            work_s = time.perf_counter() - work_started
            info = audio_info_to_pb(result)
            header = base64.b64encode(info.SerializeToString()).decode()
            await pipeline.normalized.put_file(key, output, headers={AUDIO_INFO_HEADER: header})
            await offer_file(info.normalized_sha256, output)  # a transcription stage here reads no store
            metrics.record_work("preprocess", audio_s=info.duration_s, elapsed_s=work_s)
        channels: list[jobs_pb2.ChannelAudio] = []
        if message.transcription.channels == "separate" and info.source_channels > 1:
            channels = await self._channels(message, key, info.source_channels, upload, filename, work)
        duration_ms = (time.perf_counter() - started) * 1000
        await pipeline.repo.record_audio(task_id, duration_s=info.duration_s, info=audio_to_dict(info))
        write = await pipeline.repo.record_stage_result(
            task_id, Stage.PREPROCESS, {"object": key}, duration_ms=duration_ms
        )
        if not write.applied and write.stored is None:
            return  # cancelled or failed meanwhile: no next stage
        await self.hand_on(
            jobs_pb2.TranscribeJob(
                task_id=task_id,
                audio_object=key,
                audio=info,
                transcription=message.transcription,
                correction=message.correction,
                output_formats=message.output_formats,
                channels=channels if len(channels) > 1 else [],
            ),
            task_id=task_id,
            audio_duration_s=info.duration_s,
        )

    def _preprocess(self, upload: Path, output: Path, filename: str, work: Path) -> PreprocessInfo:
        return self.engine.preprocess(upload, output, filename=filename, work_dir=work)

    async def _upload(self, message: jobs_pb2.PreprocessJob, work: Path) -> Path:
        path = work / "upload"
        await self.pipeline.uploads.get_to_file(message.audio_object, path)
        return path

    async def _channels(
        self,
        message: jobs_pb2.PreprocessJob,
        key: str,
        source_channels: int,
        upload: Path | None,
        filename: str,
        work: Path,
    ) -> list[jobs_pb2.ChannelAudio]:
        """The distinct channels' canonical audio, cached beside the mixdown (an index object lists
        ``channel:sha256`` of each, so a repeat costs two small reads)."""
        pipeline = self.pipeline
        index_key = f"{key}.channels"
        if await pipeline.normalized.info(index_key) is not None:
            listing = (await pipeline.normalized.get_bytes(index_key)).decode()
            listed = [item.split(":", 1) for item in listing.split(",") if item]
            return [
                jobs_pb2.ChannelAudio(channel=int(c), audio_object=f"{key}.ch{c}", normalized_sha256=sha)
                for c, sha in listed
            ]
        upload = upload or await self._upload(message, work)
        split = await asyncio.to_thread(
            self.engine.split_channels_to, upload, work, channels=source_channels, filename=filename
        )
        out = []
        for channel in split:
            name = f"{key}.ch{channel.channel}"
            await pipeline.normalized.put_file(name, channel.path)
            await offer_file(channel.normalized_sha256, channel.path)
            out.append(
                jobs_pb2.ChannelAudio(
                    channel=channel.channel, audio_object=name, normalized_sha256=channel.normalized_sha256
                )
            )
        # Never empty (an input whose channels are all silent lists none, and writes a comma).
        listing = ",".join(f"{c.channel}:{c.normalized_sha256}" for c in out) or ","
        await pipeline.normalized.put_bytes(index_key, listing.encode())
        return out

    async def _cached(self, key: str) -> common_pb2.AudioInfo | None:
        stored = await self.pipeline.normalized.info(key)
        if stored is None or AUDIO_INFO_HEADER not in stored.headers:
            return None
        return common_pb2.AudioInfo.FromString(base64.b64decode(stored.headers[AUDIO_INFO_HEADER]))


@contextlib.asynccontextmanager
async def _work_dir() -> AsyncIterator[Path]:
    """A job's own directory under the system's temporary one, removed when the job ends."""
    path = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="escriba-preprocess-"))
    try:
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, path, True)
