"""Clients of the stage services' client-streaming RPCs, as the integration tests call them.

Requests are written with :func:`escriba.common.client.write_all`, so a refused upload surfaces the
server's own status (see grpc/grpc#36066) as the call's ``AioRpcError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc

from escriba.common.client import byte_chunks, write_all
from escriba.v1 import (
    common_pb2,
    preprocess_pb2,
    preprocess_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)


async def preprocess(
    channel: grpc.aio.Channel, data: bytes, config: preprocess_pb2.PreprocessConfig | None = None
) -> tuple[common_pb2.AudioInfo, bytes]:
    """The canonical audio's info and bytes."""
    stub = preprocess_pb2_grpc.PreprocessServiceStub(channel)

    def requests() -> Iterator[preprocess_pb2.PreprocessRequest]:
        yield preprocess_pb2.PreprocessRequest(config=config or preprocess_pb2.PreprocessConfig())
        for chunk in byte_chunks(data):
            yield preprocess_pb2.PreprocessRequest(chunk=chunk)

    call = stub.Preprocess()
    writer = asyncio.create_task(write_all(call, requests()))
    info: common_pb2.AudioInfo | None = None
    audio = bytearray()
    try:
        async for response in call:
            if response.WhichOneof("payload") == "info":
                info = response.info
            else:
                audio += response.chunk
    finally:
        await writer
    assert info is not None, "the server sent no AudioInfo"
    return info, bytes(audio)


async def transcribe(
    channel: grpc.aio.Channel, data: bytes, options: common_pb2.TranscriptionOptions | None = None
) -> transcription_pb2.Transcript:
    stub = transcription_pb2_grpc.TranscriptionServiceStub(channel)

    def requests() -> Iterator[transcription_pb2.TranscribeRequest]:
        config = transcription_pb2.TranscribeConfig(options=options or common_pb2.TranscriptionOptions())
        yield transcription_pb2.TranscribeRequest(config=config)
        for chunk in byte_chunks(data):
            yield transcription_pb2.TranscribeRequest(chunk=chunk)

    call = stub.Transcribe()
    writer = asyncio.create_task(write_all(call, requests()))
    try:
        response: transcription_pb2.TranscribeResponse = await call
    finally:
        await writer
    return response.transcript
