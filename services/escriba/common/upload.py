"""Receive a client-streamed upload: an optional config message, then audio chunks.

Streams are read chunk by chunk with the byte limit checked as they arrive, so an oversized upload is
refused as soon as it crosses the limit instead of after it has been buffered whole. The sha256 is computed
on the way in.

A refused upload is still read to its end (discarding the bytes, up to ``drain_limit_bytes``) before
the error is returned: grpc's asyncio client replaces a status that arrives while it is still writing
with a generic INTERNAL error (grpc/grpc#36066), so ending the RPC early would hide the real reason
from well-behaved clients. The drain bound keeps a hostile client from holding the stream forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from escriba.common.errors import InvalidInputError, LimitExceededError

C = TypeVar("C")


class UploadTooLargeError(LimitExceededError):
    reason = "input_too_large"


class MalformedUploadError(InvalidInputError):
    reason = "malformed_request"


@dataclass
class Upload(Generic[C]):
    config: C | None
    data: bytes
    sha256: str


DRAIN_LIMIT_BYTES = 256 * 1024 * 1024
#: Longest a refused upload is read for; an honest client sends a refused upload faster than this.
DRAIN_TIMEOUT_S = 30.0


async def receive_upload(
    requests: AsyncIterable[Any],
    *,
    max_bytes: int,
    config_field: str = "config",
    chunk_field: str = "chunk",
    drain_limit_bytes: int = DRAIN_LIMIT_BYTES,
) -> Upload[Any]:
    """Collect requests whose ``payload`` oneof is the config (first, optional) or a chunk."""
    iterator = aiter(requests)
    try:
        return await _collect(iterator, max_bytes, config_field, chunk_field)
    except (UploadTooLargeError, MalformedUploadError):
        await drain(iterator, drain_limit_bytes)
        raise


async def drain(
    requests: AsyncIterator[Any], limit: int = DRAIN_LIMIT_BYTES, timeout_s: float = DRAIN_TIMEOUT_S
) -> None:
    """Read and discard what the client still sends, up to ``limit`` bytes of messages and for at
    most ``timeout_s``: a refused caller that keeps the stream open, or trickles, is not waited for."""
    drained = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            async for request in requests:
                drained += request.ByteSize()
                if drained > limit:
                    return


async def _collect(
    requests: AsyncIterator[Any], max_bytes: int, config_field: str, chunk_field: str
) -> Upload[Any]:
    config: Any = None
    parts: list[bytes] = []
    digest = hashlib.sha256()
    size = 0
    async for request in requests:
        which = request.WhichOneof("payload")
        if which == config_field:
            if config is not None or parts:
                raise MalformedUploadError("the config message must come once, before any audio chunk")
            config = getattr(request, config_field)
        elif which == chunk_field:
            chunk: bytes = getattr(request, chunk_field)
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLargeError(f"upload exceeds the limit of {max_bytes} bytes")
            digest.update(chunk)
            parts.append(chunk)
        else:
            raise MalformedUploadError("each message must carry either a config or an audio chunk")
    return Upload(config=config, data=b"".join(parts), sha256=digest.hexdigest())
