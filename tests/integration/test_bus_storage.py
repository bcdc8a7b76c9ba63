"""Audio round-trips through the object store in chunks; caches keep bytes by key with the bucket TTL."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from escriba.bus import AudioStore, KvCache, ObjectMissingError, TopologyError
from escriba.local.nats import EmbeddedNats
from tests.support.nats_fixtures import Bus, close_bus, open_bus
from tests.support.waiting import eventually

FEW_MB = 3 * 1024 * 1024 + 12345  # not a multiple of the chunk size


@pytest.mark.timeout(60)
async def test_a_few_megabytes_round_trip_with_their_hash(bus: Bus) -> None:
    store = await AudioStore.open(bus.js, bus.names.audio_bucket)
    data = os.urandom(FEW_MB)
    stored = await store.put_bytes("upload-1", data, headers={"Content-Type": "audio/flac"})
    assert stored.size == len(data)
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    assert await store.get_bytes("upload-1") == data
    info = await store.info("upload-1")
    assert info is not None and info.headers == {"Content-Type": "audio/flac"} and info.size == len(data)


@pytest.mark.timeout(60)
async def test_files_and_streamed_uploads_round_trip(bus: Bus, tmp_path: Path, data_dir: Path) -> None:
    store = await AudioStore.open(bus.js, bus.names.normalized_bucket, chunk_bytes=64 * 1024)
    source = data_dir / "jfk.flac"
    stored = await store.put_file("jfk", source)
    assert stored.sha256_hex == hashlib.sha256(source.read_bytes()).hexdigest()
    copy = tmp_path / "copy.flac"
    fetched = await store.get_to_file("jfk", copy)
    assert copy.read_bytes() == source.read_bytes() and fetched.size == source.stat().st_size

    data = os.urandom(FEW_MB)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    streamed = await store.put_chunks("streamed", pieces())
    assert streamed.sha256_hex == hashlib.sha256(data).hexdigest()
    assert await store.get_bytes("streamed") == data


async def test_a_missing_object_is_a_permanent_error(bus: Bus) -> None:
    store = await AudioStore.open(bus.js, bus.names.audio_bucket)
    assert await store.info("nope") is None and not await store.exists("nope")
    with pytest.raises(ObjectMissingError, match="nope"):
        await store.get_bytes("nope")
    await store.put_bytes("gone", b"x")
    await store.delete("gone")
    await store.delete("gone")  # twice is fine
    assert not await store.exists("gone")


@pytest.mark.timeout(60)
async def test_many_concurrent_reads_finish_without_a_consumer(bus: Bus) -> None:
    """Reads are bounded direct gets: no push consumer that could miss a chunk and wait forever (a
    task once stayed in ``transcribing`` that way), and nothing left on the stream afterwards."""
    store = await AudioStore.open(bus.js, bus.names.normalized_bucket, chunk_bytes=16 * 1024)
    blobs = {f"obj-{i}": os.urandom(50_000 + 7_919 * i) for i in range(12)}
    for name, data in blobs.items():
        await store.put_bytes(name, data)
    names = [name for name in blobs for _ in range(3)]
    got = await asyncio.gather(*(store.get_bytes(n) for n in names))
    assert all(data == blobs[n] for n, data in zip(names, got, strict=True))
    info = await bus.js.stream_info(f"OBJ_{bus.names.normalized_bucket}")
    assert info.state.consumer_count == 0


@pytest.mark.timeout(60)
async def test_chunks_lost_under_their_metadata_fail_fast(bus: Bus) -> None:
    """Metadata still there, chunks gone (purged or expired mid-read): a permanent error, not a hang."""
    store = await AudioStore.open(bus.js, bus.names.audio_bucket, chunk_bytes=16 * 1024)
    await store.put_bytes("half", os.urandom(100_000))
    raw = await store._store.get_info("half")
    stream = f"OBJ_{bus.names.audio_bucket}"
    await bus.js.purge_stream(stream, subject=f"$O.{bus.names.audio_bucket}.C.{raw.nuid}")
    with pytest.raises(ObjectMissingError, match="lost its data"):
        await store.get_bytes("half")


async def test_an_empty_object_round_trips(bus: Bus) -> None:
    store = await AudioStore.open(bus.js, bus.names.audio_bucket)
    await store.put_bytes("empty", b"")
    assert await store.get_bytes("empty") == b""


async def test_opening_a_bucket_that_does_not_exist_names_it(bus: Bus) -> None:
    with pytest.raises(TopologyError, match="no-such-bucket"):
        await AudioStore.open(bus.js, "no-such-bucket")
    with pytest.raises(TopologyError, match="no-such-bucket"):
        await KvCache.open(bus.js, "no-such-bucket")


async def test_the_cache_stores_bytes_by_any_key(bus: Bus) -> None:
    cache = await KvCache.open(bus.js, bus.names.transcripts_bucket)
    key = "sha256:abc|model=tiny.en|beam=5 lang=en"
    other = "sha256:abc|model=tiny.en|beam=5 lang=fr"
    assert await cache.get(key) is None
    assert await cache.put(key, b'{"text": "ask not"}')
    assert await cache.put(other, b"other")
    assert await cache.get(key) == b'{"text": "ask not"}'
    assert await cache.get(other) == b"other"
    await cache.delete(key)
    assert await cache.get(key) is None


async def test_each_cache_has_its_ttl(bus: Bus) -> None:
    transcripts = await KvCache.open(bus.js, bus.names.transcripts_bucket)
    corrections = await KvCache.open(bus.js, bus.names.corrections_bucket)
    assert await transcripts.ttl_s() == bus.settings.transcripts_ttl_s == 7 * 86400
    assert await corrections.ttl_s() == bus.settings.corrections_ttl_s == 30 * 86400


@pytest.mark.timeout(30)
async def test_an_entry_expires_with_the_bucket_ttl(nats_server: EmbeddedNats) -> None:
    short = await open_bus(nats_server, transcripts_ttl_s=1.0)
    try:
        cache = await KvCache.open(short.js, short.names.transcripts_bucket)
        await cache.put("k", b"v")
        assert await cache.get("k") == b"v"

        async def expired() -> bool:
            return await cache.get("k") is None

        await eventually(expired, timeout_s=15, what="the entry to expire")
    finally:
        await close_bus(short)


async def test_a_value_over_the_message_limit_is_not_cached(bus: Bus) -> None:
    cache = await KvCache.open(bus.js, bus.names.corrections_bucket)
    assert not await cache.put("huge", b"x" * (bus.nc.max_payload + 1))
    assert await cache.get("huge") is None
