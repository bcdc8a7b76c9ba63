"""Validate a CreateTask request stream and store its audio without holding it in memory.

The spec (first message) is validated before any byte is stored, so a malformed request costs nothing;
chunks stream into the object store (spooled to disk past a few MB), hashed and counted on the way, and
an upload over the limit is refused as soon as it crosses it.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import Message

from escriba.common.errors import InvalidInputError
from escriba.common.outbound import InvalidUrlError, check_url
from escriba.common.upload import (
    DRAIN_LIMIT_BYTES,
    DRAIN_TIMEOUT_S,
    MalformedUploadError,
    UploadTooLargeError,
    drain,
)
from escriba.correction.convert import correction_options_from_pb
from escriba.correction.corrector import Corrector
from escriba.correction.settings import CorrectionSettings
from escriba.transcription.convert import transcription_options_from_pb
from escriba.transcription.options import TranscriptionOptions
from escriba.v1 import tasks_pb2

MAX_FILENAME_CHARS = 255
#: Longest name accepted as sent (a full path included): longer is not a file name but a misuse.
MAX_RAW_FILENAME_CHARS = 4096
_FORMATS = {tasks_pb2.OUTPUT_FORMAT_SRT: "srt", tasks_pb2.OUTPUT_FORMAT_VTT: "vtt"}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


class EmptyUploadError(InvalidInputError):
    reason = "empty_input"


def clean_filename(name: str) -> str:
    """A display name only: the last path component, no control characters, bounded length."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/")
    name = os.path.basename(name.rstrip("/"))
    name = _UNSAFE.sub("", name).strip()
    if name in (".", ".."):
        name = ""
    return name[:MAX_FILENAME_CHARS]


def output_formats(spec: tasks_pb2.TaskSpec) -> list[str]:
    out: list[str] = []
    for value in spec.output_formats:
        if value not in _FORMATS:
            raise InvalidInputError(f"unknown output format {value}", reason="invalid_option")
        if _FORMATS[value] not in out:
            out.append(_FORMATS[value])
    return out


#: As the database column allows.
MAX_IDEMPOTENCY_KEY_CHARS = 128


#: More output formats than exist is a client bug, not a request.
MAX_OUTPUT_FORMATS = len(_FORMATS)
MAX_MODEL_NAME_CHARS = 64


def _strings(message: Message, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in ``message`` and its sub-messages, with where it is."""
    for descriptor, value in message.ListFields():
        where = f"{path}{descriptor.name}"
        repeated = descriptor.is_repeated
        for index, item in enumerate(value if repeated else [value]):
            named = f"{where}[{index}]" if repeated else where
            if isinstance(item, str):
                yield named, item
            elif isinstance(item, Message):
                yield from _strings(item, f"{named}.")


def validate_spec(spec: tasks_pb2.TaskSpec) -> tasks_pb2.TaskSpec:
    """Raise InvalidInputError for options no stage would accept; return the spec with a clean filename."""
    for where, text in _strings(spec):
        # The filename is a display name, cleaned of control characters below rather than refused.
        if where != "filename" and "\x00" in text:
            raise InvalidInputError(f"{where} contains a NUL character", reason="invalid_option")
    if len(spec.output_formats) > MAX_OUTPUT_FORMATS:
        raise InvalidInputError(
            f"{len(spec.output_formats)} output formats; at most {MAX_OUTPUT_FORMATS} exist",
            reason="invalid_option",
        )
    model = spec.transcription.model
    if len(model) > MAX_MODEL_NAME_CHARS or not model.isprintable():
        raise InvalidInputError(
            f"the model name must be at most {MAX_MODEL_NAME_CHARS} printable characters",
            reason="invalid_option",
        )
    if len(spec.filename) > MAX_RAW_FILENAME_CHARS:
        raise InvalidInputError(
            f"the filename is {len(spec.filename)} characters long; "
            f"at most {MAX_RAW_FILENAME_CHARS} are allowed",
            reason="invalid_filename",
        )
    transcription_options_from_pb(spec.transcription, TranscriptionOptions())
    Corrector(CorrectionSettings()).resolve(correction_options_from_pb(spec.correction))
    output_formats(spec)
    key = spec.idempotency_key
    if key and (len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isascii() or not key.isprintable()):
        raise InvalidInputError(
            f"the idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
            reason="invalid_idempotency_key",
        )
    if spec.webhook_url:
        check_url(spec.webhook_url, what="webhook_url")
    if spec.audio_url:
        parts = check_url(spec.audio_url, what="audio_url", schemes=("https", "http", "s3"))
        if parts.scheme == "s3" and not parts.path.strip("/"):
            raise InvalidUrlError("audio_url s3://BUCKET/KEY has no key")
    cleaned = tasks_pb2.TaskSpec()
    cleaned.CopyFrom(spec)
    cleaned.filename = clean_filename(spec.filename)
    return cleaned


@dataclass
class UploadStream:
    """Chunks of a CreateTask stream after its spec, hashed and bounded while they are consumed."""

    requests: AsyncIterator[tasks_pb2.CreateTaskRequest]
    max_bytes: int
    size: int = 0
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    async def chunks(self) -> AsyncIterator[bytes]:
        async for request in self.requests:
            if request.WhichOneof("payload") != "chunk":
                raise MalformedUploadError("the spec must come once, before the audio chunks")
            self.size += len(request.chunk)
            if self.size > self.max_bytes:
                raise UploadTooLargeError(f"upload exceeds the limit of {self.max_bytes} bytes")
            self._digest.update(request.chunk)
            yield request.chunk

    async def drain(self, limit: int = DRAIN_LIMIT_BYTES, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Read what the client still sends (see escriba.common.upload for why)."""
        await drain(self.requests, limit, timeout_s)


async def read_spec(requests: AsyncIterator[tasks_pb2.CreateTaskRequest]) -> tasks_pb2.TaskSpec:
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        raise EmptyUploadError("the request stream was empty: send a TaskSpec and the audio") from None
    if first.WhichOneof("payload") != "spec":
        raise MalformedUploadError("the first message must be the TaskSpec")
    return validate_spec(first.spec)
