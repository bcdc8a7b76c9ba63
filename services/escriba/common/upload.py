"""Receive a client-streamed upload: an optional config message, then audio chunks.

Streams are read chunk by chunk with the byte limit checked as they arrive, so an oversized upload is
refused as soon as it crosses the limit instead of after it has been buffered whole. The sha256 is computed
on the way in.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable
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


async def receive_upload(
    requests: AsyncIterable[Any],
    *,
    max_bytes: int,
    config_field: str = "config",
    chunk_field: str = "chunk",
) -> Upload[Any]:
    """Collect requests whose ``payload`` oneof is the config (first, optional) or a chunk."""
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
