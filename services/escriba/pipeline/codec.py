"""Job payload encoding: protobuf, compressed with zlib when large.

A transcript with word timings of a multi-hour recording can pass NATS's default 1 MB message limit;
word-level protobuf compresses several-fold, so large payloads are deflated and flagged in a header.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from escriba.common.errors import PermanentError

ENCODING_HEADER = "Escriba-Encoding"
COMPRESS_ABOVE_BYTES = 64 * 1024
#: Largest payload a compressed job may expand to: far above a 4-hour transcript with words, far
#: below what would take a worker's memory (a few KB of deflate can claim gigabytes).
MAX_EXPANDED_BYTES = 256 * 1024 * 1024

M = TypeVar("M", bound=Message)


class MalformedJobError(PermanentError):
    reason = "malformed_job"


def encode(message: Message) -> tuple[bytes, dict[str, str]]:
    raw = message.SerializeToString()
    if len(raw) > COMPRESS_ABOVE_BYTES:
        return zlib.compress(raw, 6), {ENCODING_HEADER: "zlib"}
    return raw, {}


def decode(cls: type[M], data: bytes, headers: Mapping[str, str]) -> M:
    try:
        if headers.get(ENCODING_HEADER) == "zlib":
            data = inflate(data, MAX_EXPANDED_BYTES)
        return cls.FromString(data)
    except (DecodeError, zlib.error) as exc:
        raise MalformedJobError(f"cannot decode {cls.__name__}: {exc}") from exc


def inflate(data: bytes, limit: int) -> bytes:
    """``zlib.decompress`` that stops at ``limit`` bytes of output (a zlib bomb is a malformed job)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:
        raise MalformedJobError(f"the payload expands past {limit} bytes")
    if not inflater.eof:
        raise MalformedJobError("the compressed payload is truncated")
    return out
