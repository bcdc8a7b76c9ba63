"""Audio in the JetStream object store, moved in chunks so a two-hour recording never sits in one message.

The object store splits an object into chunk messages and records its SHA-256; these helpers add the
error mapping (a missing object is a permanent failure of the task, a timeout is transient), streaming to
and from files, and :meth:`AudioStore.put_chunks` for uploads that arrive as a stream of pieces.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import tempfile
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import nats.errors
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE, ObjectStore

from escriba.bus.errors import BusUnavailableError, ObjectMissingError, ObjectReadError, TopologyError
from escriba.bus.refusals import refusal

DEFAULT_CHUNK_BYTES = 256 * 1024
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

    def __init__(
        self,
        js: JetStreamContext,
        store: ObjectStore,
        bucket: str,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if not 1024 <= chunk_bytes <= 1024 * 1024 - 4096:
            raise ValueError(f"chunk_bytes must be between 1 KiB and 1 MiB - 4 KiB, got {chunk_bytes}")
        self._store = store
        self._js = js
        self._stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
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
        return cls(js, store, bucket, chunk_bytes=chunk_bytes)

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
        except APIError as exc:
            # nats-py has already purged the chunks it stored before the refusal.
            raise refusal(exc, f"object store {self.bucket}") from exc
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
        """Read the object's chunks one direct get at a time and verify its size and hash.

        nats-py's ``ObjectStore.get`` streams chunks through a push ordered consumer and waits for them
        without a deadline; under load it was seen to miss the last chunk and wait forever, keeping its
        job alive through in-progress heartbeats (a task stuck in ``transcribing``). Each direct get here
        is one bounded request (``next_by_subj`` from the last sequence read), so a read either finishes,
        fails as missing, or fails as transient: never hangs. No server-side consumer is created either.
        """
        info = await self._info_or_missing(name)
        size = info.size or 0
        if size == 0:
            return self._stored(info)
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=info.nuid)
        digest = hashlib.sha256()
        received = 0
        next_seq = 1
        write = sink.write
        spill = not isinstance(sink, io.BytesIO)  # files are written off the event loop
        try:
            while received < size:
                raw = await self._js.get_msg(
                    self._stream, seq=next_seq, subject=subject, next=True, direct=True
                )
                chunk = raw.data or b""
                if raw.seq is None or not chunk:
                    raise ObjectReadError(f"object {name} in {self.bucket} returned an empty chunk")
                if spill:
                    await asyncio.to_thread(write, chunk)
                else:
                    write(chunk)
                digest.update(chunk)
                received += len(chunk)
                next_seq = raw.seq + 1
        except NotFoundError as exc:
            # The metadata is there but chunks are gone: it expired or was deleted while being read.
            raise ObjectMissingError(
                f"object {name} in {self.bucket} lost its data after {received} of {size} bytes"
            ) from exc
        except (TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError) as exc:
            raise BusUnavailableError(f"JetStream did not return object {name} from {self.bucket}") from exc
        stored = self._stored(info)
        if received != size or digest.hexdigest() != stored.sha256_hex:
            raise ObjectReadError(
                f"object {name} in {self.bucket} read back {received} of {size} bytes or a different hash"
            )
        return stored

    async def _info_or_missing(self, name: str) -> api.ObjectInfo:
        try:
            info = await self._store.get_info(name)
        except ObjectNotFoundError as exc:
            raise ObjectMissingError(
                f"object {name} is not in {self.bucket} (expired or never stored)"
            ) from exc
        except (TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BusUnavailableError(f"JetStream did not describe object {name} in {self.bucket}") from exc
        if not info.nuid:
            raise ObjectReadError(f"object {name} in {self.bucket} has no chunk id in its metadata")
        return info

    async def info(self, name: str) -> StoredObject | None:
        """The object's size and hash, or None when it is not stored."""
        try:
            return self._stored(await self._info_or_missing(name))
        except ObjectMissingError:
            return None

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
