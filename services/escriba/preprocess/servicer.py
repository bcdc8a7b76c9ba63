"""gRPC transport of the preprocess engine.

The upload is received with its byte limit enforced while streaming, the engine runs in a worker thread
(PyAV and numpy release the GIL), and the canonical audio streams back in chunks so no single message
approaches the gRPC size limit. Both ends go through files in a temporary directory of the call's own
(the upload as it arrives, the canonical audio as it is encoded), so a call holds a chunk at a time,
not the upload nor the recording, however many calls wait for a slot.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import grpc

from escriba.common import metrics
from escriba.common.grpc_status import translate_stream_errors
from escriba.common.upload import MalformedUploadError, UploadTooLargeError, drain
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
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="escriba-preprocess-rpc-"))
        try:
            upload = work / "upload"
            config = await _receive_to_file(
                request_iterator, upload, max_bytes=self.engine.settings.max_input_bytes
            )
            target = config.target_lufs if config.HasField("target_lufs") else None
            encoding = encoding_from_pb(config.output_encoding)
            output = work / "canonical"
            async with self._slots:
                started = time.perf_counter()
                with metrics.IN_FLIGHT.labels(STAGE).track_inprogress():
                    info = await asyncio.to_thread(
                        self.engine.preprocess,
                        upload,
                        output,
                        filename=config.filename,
                        target_lufs=target,
                        encoding=encoding,
                        work_dir=work,
                    )
            elapsed = time.perf_counter() - started
            metrics.STAGE_LATENCY.labels(STAGE).observe(elapsed)
            metrics.record_work(STAGE, audio_s=info.duration_s, elapsed_s=elapsed)
            yield preprocess_pb2.PreprocessResponse(info=audio_info_to_pb(info))
            with output.open("rb") as audio:
                while chunk := await asyncio.to_thread(audio.read, OUTPUT_CHUNK_BYTES):
                    yield preprocess_pb2.PreprocessResponse(chunk=chunk)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)


async def _receive_to_file(
    requests: AsyncIterator[preprocess_pb2.PreprocessRequest], path: Path, *, max_bytes: int
) -> preprocess_pb2.PreprocessConfig:
    """The config (first, optional) and the audio chunks, written to ``path`` as they arrive; as
    :func:`escriba.common.upload.receive_upload` does in memory, a refused upload is drained first."""
    # Opened and closed in the event loop's thread (both are quick): an await in ``finally`` can be cut
    # short by a cancelled call, which left the file open until the garbage collector found it.
    sink: IO[bytes] = path.open("wb")
    try:
        return await _collect(requests, sink, max_bytes)
    except (UploadTooLargeError, MalformedUploadError):
        await drain(requests)
        raise
    finally:
        sink.close()


async def _collect(
    requests: AsyncIterator[preprocess_pb2.PreprocessRequest], sink: IO[bytes], max_bytes: int
) -> preprocess_pb2.PreprocessConfig:
    config: preprocess_pb2.PreprocessConfig | None = None
    size = chunks = 0
    async for request in requests:
        which = request.WhichOneof("payload")
        if which == "config":
            if config is not None or chunks:
                raise MalformedUploadError("the config message must come once, before any audio chunk")
            config = request.config
        elif which == "chunk":
            chunks += 1
            size += len(request.chunk)
            if size > max_bytes:
                raise UploadTooLargeError(f"upload exceeds the limit of {max_bytes} bytes")
            await asyncio.to_thread(sink.write, request.chunk)
        else:
            raise MalformedUploadError("each message must carry either a config or an audio chunk")
    return config or preprocess_pb2.PreprocessConfig()
