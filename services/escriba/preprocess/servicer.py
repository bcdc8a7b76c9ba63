"""gRPC transport of the preprocess engine.

The upload is received with its byte limit enforced while streaming, the engine runs in a worker thread
(PyAV and numpy release the GIL), and the canonical audio streams back in chunks so no single message
approaches the gRPC size limit. The canonical audio is written to a temporary file and read back chunk
by chunk, so the reply holds a megabyte at a time, not the recording.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from escriba.common import metrics
from escriba.common.grpc_status import translate_stream_errors
from escriba.common.upload import receive_upload
from escriba.preprocess.convert import audio_info_to_pb, encoding_from_pb
from escriba.preprocess.engine import Preprocessor
from escriba.v1 import preprocess_pb2, preprocess_pb2_grpc

SERVICE_NAME = preprocess_pb2.DESCRIPTOR.services_by_name["PreprocessService"].full_name
STAGE = "preprocess"
OUTPUT_CHUNK_BYTES = 1 << 20


class PreprocessServicer(preprocess_pb2_grpc.PreprocessServiceServicer):
    def __init__(self, engine: Preprocessor, max_concurrency: int) -> None:
        self.engine = engine
        self._slots = asyncio.Semaphore(max_concurrency)

    @translate_stream_errors
    async def Preprocess(
        self,
        request_iterator: AsyncIterator[preprocess_pb2.PreprocessRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[preprocess_pb2.PreprocessResponse]:
        upload = await receive_upload(request_iterator, max_bytes=self.engine.settings.max_input_bytes)
        config = upload.config or preprocess_pb2.PreprocessConfig()
        target = config.target_lufs if config.HasField("target_lufs") else None
        encoding = encoding_from_pb(config.output_encoding)
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="escriba-preprocess-rpc-"))
        try:
            output = work / "canonical"
            async with self._slots:
                started = time.perf_counter()
                with metrics.IN_FLIGHT.labels(STAGE).track_inprogress():
                    info = await asyncio.to_thread(
                        self.engine.preprocess,
                        upload.data,
                        output,
                        filename=config.filename,
                        target_lufs=target,
                        encoding=encoding,
                        work_dir=work,
                    )
            del upload
            elapsed = time.perf_counter() - started
            metrics.STAGE_LATENCY.labels(STAGE).observe(elapsed)
            metrics.record_work(STAGE, audio_s=info.duration_s, elapsed_s=elapsed)
            yield preprocess_pb2.PreprocessResponse(info=audio_info_to_pb(info))
            with output.open("rb") as audio:
                while chunk := await asyncio.to_thread(audio.read, OUTPUT_CHUNK_BYTES):
                    yield preprocess_pb2.PreprocessResponse(chunk=chunk)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
