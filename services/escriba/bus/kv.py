"""A small typed cache over a JetStream KV bucket whose TTL is the bucket's.

Cache keys are built from hashes, model names and option strings, which may hold characters a KV key
cannot (``[-/_=.a-zA-Z0-9]`` only). :func:`sanitize_key` escapes them reversibly, so two different keys
never share an entry: a wrong cache hit would hand one task another task's transcript.
"""

from __future__ import annotations

import hashlib
import logging
import re

import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from escriba.bus.errors import BusUnavailableError, TopologyError
from escriba.bus.refusals import is_full

log = logging.getLogger(__name__)

# Characters kept as they are; '=' is the escape character and '.' separates subject tokens, so both are
# escaped along with everything else.
_PLAIN = re.compile(r"[-/_a-zA-Z0-9]")
MAX_KEY_CHARS = 512


def sanitize_key(key: str) -> str:
    """A valid KV key for ``key``, distinct for distinct keys (``=XX`` escapes; long keys are hashed)."""
    if not key:
        raise ValueError("cache key must not be empty")
    out: list[str] = []
    for char in key:
        if _PLAIN.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"={byte:02X}" for byte in char.encode("utf-8"))
    safe = "".join(out)
    if len(safe) > MAX_KEY_CHARS:
        # '=H' never comes out of the escaping above (escapes are '=' and two hex digits), so a hashed
        # key cannot collide with an escaped one.
        safe = "=H" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return safe


class KvCache:
    """Get and put bytes by key; entries expire with the bucket's TTL."""

    def __init__(self, kv: KeyValue, bucket: str) -> None:
        self._kv = kv
        self.bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str) -> KvCache:
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError as exc:
            raise TopologyError(f"KV bucket {bucket} does not exist; run ensure_topology first") from exc
        except TimeoutError as exc:
            raise BusUnavailableError(f"JetStream did not answer opening KV bucket {bucket}") from exc
        return cls(kv, bucket)

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None on a miss (never stored, expired or deleted)."""
        try:
            entry = await self._kv.get(sanitize_key(key))
        except KeyNotFoundError:
            return None
        except TimeoutError as exc:
            raise BusUnavailableError(f"KV bucket {self.bucket} did not answer") from exc
        return entry.value

    async def put(self, key: str, value: bytes) -> bool:
        """Cache ``value``; False (and nothing cached) when it is larger than a NATS message may be, or
        the bucket is at its size cap: a full cache stops caching, it never fails the task."""
        try:
            await self._kv.put(sanitize_key(key), value)
        except nats.errors.MaxPayloadError:
            log.warning("not caching %d bytes in %s: over the NATS message limit", len(value), self.bucket)
            return False
        except APIError as exc:
            if not is_full(exc):
                raise BusUnavailableError(f"KV bucket {self.bucket} refused the entry: {exc}") from exc
            log.warning("not caching %d bytes in %s: the bucket is at its size cap", len(value), self.bucket)
            return False
        except TimeoutError as exc:
            raise BusUnavailableError(f"KV bucket {self.bucket} did not store the entry") from exc
        return True

    async def delete(self, key: str) -> None:
        try:
            await self._kv.delete(sanitize_key(key))
        except TimeoutError as exc:
            raise BusUnavailableError(f"KV bucket {self.bucket} did not delete the entry") from exc

    async def ttl_s(self) -> float | None:
        """The bucket's TTL in seconds (None = entries never expire)."""
        status = await self._kv.status()
        ttl = status.ttl
        return ttl if ttl else None
