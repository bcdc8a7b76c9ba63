"""Audio in the JetStream object store, moved in chunks so a two-hour recording never sits in one message.

The object store splits an object into chunk messages and records its SHA-256; these helpers add the
error mapping (a missing object is a permanent failure of the task, a timeout is transient), streaming to
and from files, and :meth:`AudioStore.put_chunks` for uploads that arrive as a stream of pieces.
"""

from __future__ import annotations

import asyncio
import base64
import io
import tempfile
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import nats.errors
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, DigestMismatchError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from escriba.bus.errors import BusUnavailableError, ObjectMissingError, ObjectReadError, TopologyError

DEFAULT_CHUNK_BYTES = 256 * 1024
#: Longest one object read may take (a 1 GiB upload at a slow 10 MB/s is under two minutes).
READ_TIMEOUT_S = 600.0
# Uploads up to this size are spooled in memory, larger ones in a temporary file.
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """An object's name, size and content hash."""

    bucket: str
    name: str
    size: int
    sha256_hex: str
    headers: Mapping[str, str]


class AudioStore:
    """Put and get audio objects by name in one object store bucket."""

    def __init__(self, store: ObjectStore, bucket: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if not 1024 <= chunk_bytes <= 1024 * 1024 - 4096:
            raise ValueError(f"chunk_bytes must be between 1 KiB and 1 MiB - 4 KiB, got {chunk_bytes}")
        self._store = store
        self.bucket = bucket
        self._chunk_bytes = chunk_bytes

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> AudioStore:
        try:
            store = await js.object_store(bucket)
        except BucketNotFoundError as exc:
            raise TopologyError(f"object store {bucket} does not exist; run ensure_topology first") from exc
        except TimeoutError as exc:
            raise BusUnavailableError(f"JetStream did not answer opening object store {bucket}") from exc
        return cls(store, bucket, chunk_bytes=chunk_bytes)

    # Writing ------------------------------------------------------------------------------------

    async def put_bytes(
        self, name: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> StoredObject:
        return await self._put(name, io.BytesIO(data), headers)

    async def put_file(
        self, name: str, path: str | Path, *, headers: Mapping[str, str] | None = None
    ) -> StoredObject:
        """Store a file without reading it into memory (reads run in a thread)."""
        reader = await asyncio.to_thread(open, path, "rb")
        with reader:
            return await self._put(name, reader, headers)

    async def put_chunks(
        self, name: str, chunks: AsyncIterable[bytes], *, headers: Mapping[str, str] | None = None
    ) -> StoredObject:
        """Store a streamed upload: spooled (memory, then disk) as it arrives, then stored in chunks."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
            async for chunk in chunks:
                # Past SPOOL_MEMORY_BYTES this is a disk write: keep it off the event loop.
                await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            return await self._put(name, spool, headers)

    async def _put(self, name: str, reader: IO[bytes], headers: Mapping[str, str] | None) -> StoredObject:
        if not name:
            raise ValueError("object name is required")
        meta = api.ObjectMeta(
            name=name,
            headers=dict(headers) if headers else None,
            options=api.ObjectMetaOptions(max_chunk_size=self._chunk_bytes),
        )
        try:
            info = await self._store.put(name, reader, meta=meta)  # type: ignore[arg-type]
        except (TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BusUnavailableError(f"JetStream did not store object {name} in {self.bucket}") from exc
        return self._stored(info)

    # Reading ------------------------------------------------------------------------------------

    async def get_bytes(self, name: str) -> bytes:
        buffer = io.BytesIO()
        await self._get(name, buffer)
        return buffer.getvalue()

    async def get_to_file(self, name: str, path: str | Path) -> StoredObject:
        """Write the object to ``path`` chunk by chunk (writes run in a thread); its hash is verified."""
        writer = await asyncio.to_thread(open, path, "wb")
        with writer:
            return await self._get(name, writer)

    async def _get(self, name: str, sink: IO[bytes]) -> StoredObject:
        try:
            # nats-py waits for an object's chunks without a deadline: an object whose chunks are gone
            # would hang its job forever (kept alive by heartbeats). Bound it; a timeout is retried.
            async with asyncio.timeout(READ_TIMEOUT_S):
                result = await self._store.get(name, writeinto=sink)  # type: ignore[arg-type]
        except ObjectNotFoundError as exc:
            raise ObjectMissingError(
                f"object {name} is not in {self.bucket} (expired or never stored)"
            ) from exc
        except DigestMismatchError as exc:
            raise ObjectReadError(f"object {name} in {self.bucket} changed while it was read") from exc
        except (TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BusUnavailableError(f"JetStream did not return object {name} from {self.bucket}") from exc
        return self._stored(result.info)

    async def info(self, name: str) -> StoredObject | None:
        """The object's size and hash, or None when it is not stored."""
        try:
            info = await self._store.get_info(name)
        except ObjectNotFoundError:
            return None
        except TimeoutError as exc:
            raise BusUnavailableError(f"JetStream did not describe object {name} in {self.bucket}") from exc
        return self._stored(info)

    async def exists(self, name: str) -> bool:
        return await self.info(name) is not None

    async def delete(self, name: str) -> None:
        """Remove the object; removing a missing one is not an error."""
        try:
            await self._store.delete(name)
        except ObjectNotFoundError:
            return

    def _stored(self, info: api.ObjectInfo) -> StoredObject:
        return StoredObject(
            bucket=self.bucket,
            name=info.name,
            size=info.size or 0,
            sha256_hex=_digest_hex(info.digest),
            headers=dict(info.headers or {}),
        )


def _digest_hex(digest: str | None) -> str:
    """The object store's ``SHA-256=<base64url>`` digest in hex, the form the rest of Escriba uses."""
    if not digest:
        return ""
    _, _, encoded = digest.partition("=")
    return base64.urlsafe_b64decode(encoded).hex()
