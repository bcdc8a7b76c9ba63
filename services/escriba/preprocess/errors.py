"""Errors of the preprocess stage.

The input errors live next to the decoder (:mod:`escriba.audio.errors`) and are re-exported here so
the servicer and the worker import one module; only a bad per-request option is specific to this
stage.
"""

from __future__ import annotations

from escriba.audio.errors import (
    AudioTooLongError,
    CorruptAudioError,
    EmptyInputError,
    InputTooLargeError,
    NoAudioStreamError,
    NotAudioError,
    UnsupportedCodecError,
    ZeroDurationError,
)
from escriba.common.errors import InvalidInputError


class InvalidOptionError(InvalidInputError):
    """A per-request option (target loudness, output encoding) is out of range or unknown."""

    reason = "invalid_option"


__all__ = [
    "AudioTooLongError",
    "CorruptAudioError",
    "EmptyInputError",
    "InputTooLargeError",
    "InvalidOptionError",
    "NoAudioStreamError",
    "NotAudioError",
    "UnsupportedCodecError",
    "ZeroDurationError",
]
