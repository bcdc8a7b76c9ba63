"""gRPC transport of the transcription engine.

Canonical audio (the preprocess output) is read directly; any other upload is decoded and resampled
with the same audio code the preprocess stage uses, so a caller can skip preprocessing for one-off
requests. Inference runs on the engine's executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import numpy.typing as npt

from escriba.audio.decode import decode_audio
from escriba.audio.pcm import decode_pcm
from escriba.common import metrics
from escriba.common.errors import DeadlineError, InvalidInputError
from escriba.common.grpc_status import translate_errors
from escriba.common.upload import receive_upload
from escriba.transcript_pb import transcript_to_pb
from escriba.transcription.convert import transcription_options_from_pb
from escriba.transcription.engine import WhisperEngine
from escriba.v1 import transcription_pb2, transcription_pb2_grpc

SERVICE_NAME = transcription_pb2.DESCRIPTOR.services_by_name["TranscriptionService"].full_name
STAGE = "transcription"


class UnknownModelError(InvalidInputError):
    reason = "unknown_model"


def load_samples(data: bytes, *, filename: str, max_duration_s: float) -> npt.NDArray[np.float32]:
    """Canonical audio fast; anything else through the full decoder (limits enforced)."""
    if data.startswith((b"RIFF", b"fLaC")):
        try:
            return decode_pcm(data, max_duration_s=max_duration_s)
        except InvalidInputError:
            pass  # a WAV/FLAC that is not canonical (rate, channels, depth): decode it fully
    return decode_audio(data, max_duration_s=max_duration_s, filename=filename).samples


class TranscriptionServicer(transcription_pb2_grpc.TranscriptionServiceServicer):
    def __init__(self, engine: WhisperEngine, *, max_input_bytes: int, max_duration_s: float) -> None:
        self.engine = engine
        self.max_input_bytes = max_input_bytes
        self.max_duration_s = max_duration_s

    @translate_errors
    async def Transcribe(
        self,
        request_iterator: AsyncIterator[transcription_pb2.TranscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> transcription_pb2.TranscribeResponse:
        upload = await receive_upload(request_iterator, max_bytes=self.max_input_bytes)
        config = upload.config or transcription_pb2.TranscribeConfig()
        if config.options.model and config.options.model != self.engine.model_name:
            raise UnknownModelError(
                f"this server serves model {self.engine.model_name!r}, not {config.options.model!r}"
            )
        options = transcription_options_from_pb(config.options, self.engine.default_options)
        samples = await asyncio.to_thread(
            load_samples, upload.data, filename=config.filename, max_duration_s=self.max_duration_s
        )
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineError("the deadline passed before inference started")
        started = time.perf_counter()
        with metrics.IN_FLIGHT.labels(STAGE).track_inprogress():
            transcript = await self.engine.transcribe_async(samples, options)
        elapsed = time.perf_counter() - started
        metrics.STAGE_LATENCY.labels(STAGE).observe(elapsed)
        metrics.record_work(
            STAGE,
            audio_s=transcript.duration_s,
            elapsed_s=elapsed,
            batch_size=transcript.batch_size,
            windows_redecoded=transcript.windows_redecoded,
        )
        return transcription_pb2.TranscribeResponse(transcript=transcript_to_pb(transcript))
