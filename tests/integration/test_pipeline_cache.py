"""A stage's message cache on a real JetStream key-value bucket: typed values, counted lookups."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from escriba.bus import KvCache
from escriba.pipeline.cache import MessageCache
from escriba.stages import Stage
from escriba.v1 import transcription_pb2
from tests.support.nats_fixtures import Bus

pytestmark = pytest.mark.timeout(30)


def _lookups(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "escriba_cache_requests_total", {"cache": "transcript", "result": result}
    )
    return value or 0.0


async def test_a_cached_message_comes_back_as_stored_and_lookups_are_counted(bus: Bus) -> None:
    kv = await KvCache.open(bus.js, bus.names.transcripts_bucket)
    cache = MessageCache(kv, transcription_pb2.Transcript, Stage.TRANSCRIPTION)
    hits, misses = _lookups("hit"), _lookups("miss")
    assert await cache.get("sha.k") is None
    stored = transcription_pb2.Transcript(text="ask not what your country " * 50, model="tiny.en")
    await cache.put("sha.k", stored)
    assert await cache.get("sha.k") == stored
    assert (_lookups("hit") - hits, _lookups("miss") - misses) == (1, 1)
    assert len(await kv.get("sha.k") or b"") < stored.ByteSize()  # compressed


async def test_a_value_that_no_longer_decodes_is_a_miss_not_an_error(bus: Bus) -> None:
    kv = await KvCache.open(bus.js, bus.names.transcripts_bucket)
    await kv.put("sha.bad", b"not zlib")
    cache = MessageCache(kv, transcription_pb2.Transcript, Stage.TRANSCRIPTION)
    assert await cache.get("sha.bad") is None
