"""Client-side helpers for Escriba's client-streaming uploads.

When a server refuses an upload part-way (over the size limit, bad config), it ends the RPC with a
status while the client is still writing; the failed write then hides the real status behind a generic
INTERNAL error. Writing explicitly and, on a failed write, reading the call's own status gives callers
the code and message the server actually sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

UPLOAD_CHUNK_BYTES = 256 * 1024


def file_chunks(path: Path, chunk_bytes: int = UPLOAD_CHUNK_BYTES) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            yield chunk


def byte_chunks(data: bytes, chunk_bytes: int = UPLOAD_CHUNK_BYTES) -> Iterator[bytes]:
    for offset in range(0, len(data), chunk_bytes):
        yield data[offset : offset + chunk_bytes]


async def write_all(call: Any, requests: Iterable[Any]) -> None:
    """Write ``requests`` to a client-streaming ``call``; stop quietly if the server already ended it."""
    try:
        for request in requests:
            await call.write(request)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
        # The server ended the RPC: its status is what the caller must see, via ``await call``.
        return
