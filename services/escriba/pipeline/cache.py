"""A stage's content-addressed cache of protobuf results, counted under the stage's cache label.

The key says everything the result depends on (the input's hash, the model or rules and their
options, a version bumped when the output would change), so a hit is the result the stage would
compute again. Values are compressed: transcripts of long recordings are large and repetitive.
"""

from __future__ import annotations

import zlib
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from escriba.bus import KvCache
from escriba.common import metrics
from escriba.pipeline.codec import MAX_EXPANDED_BYTES, MalformedJobError, inflate
from escriba.stages import STAGES, Stage

M = TypeVar("M", bound=Message)

_COMPRESSION_LEVEL = 6


def count_lookup(stage: Stage, *, hit: bool) -> None:
    """Count one lookup of ``stage``'s cache (for caches that are not a :class:`MessageCache`)."""
    metrics.CACHE_REQUESTS.labels(STAGES[stage].cache, "hit" if hit else "miss").inc()


def count_shared(stage: Stage) -> None:
    """Count a lookup that missed but took the result of the same key's computation in flight."""
    metrics.CACHE_REQUESTS.labels(STAGES[stage].cache, "shared").inc()


class MessageCache(Generic[M]):
    def __init__(self, kv: KvCache, message_type: type[M], stage: Stage) -> None:
        self._kv = kv
        self._type = message_type
        self._stage = stage

    async def get(self, key: str) -> M | None:
        """The cached message, or None (a value that no longer decodes counts as a miss)."""
        stored = await self._kv.get(key)
        message: M | None = None
        if stored is not None:
            try:
                message = self._type.FromString(inflate(stored, MAX_EXPANDED_BYTES))
            except (zlib.error, DecodeError, MalformedJobError):
                message = None
        count_lookup(self._stage, hit=message is not None)
        return message

    async def put(self, key: str, message: M) -> None:
        await self._kv.put(key, zlib.compress(message.SerializeToString(), _COMPRESSION_LEVEL))
