"""Why an upload cannot become canonical audio.

Each class is a distinct ``reason`` (a metric label and the prefix of a failed task's ``error``) and
every message names the limit and the value found, so the person who uploaded the file can fix it
without reading logs. Bad content is :class:`InvalidInputError` (the caller must send something
else); content over a configured limit is :class:`LimitExceededError` (an operator may raise the
limit). None of them is transient: retrying the same bytes gives the same answer.
"""

from __future__ import annotations

from escriba.common.errors import InvalidInputError, LimitExceededError


class EmptyInputError(InvalidInputError):
    """Zero bytes were uploaded."""

    reason = "empty_input"


class NotAudioError(InvalidInputError):
    """The bytes are not a media file FFmpeg recognises (a document, an image, random data)."""

    reason = "not_audio"


class NoAudioStreamError(InvalidInputError):
    """A valid media file without any audio track (e.g. a screen recording without sound)."""

    reason = "no_audio_stream"


class UnsupportedCodecError(InvalidInputError):
    """The audio track uses a codec this build of FFmpeg cannot decode."""

    reason = "unsupported_codec"


class UnsupportedFormatError(InvalidInputError):
    """The audio's sample rate or channel layout cannot be converted (e.g. a header claiming 2 GHz)."""

    reason = "unsupported_audio_format"


class CorruptAudioError(InvalidInputError):
    """A media file whose header or audio data cannot be read: truncated or damaged."""

    reason = "corrupt_audio"


class ZeroDurationError(InvalidInputError):
    """A well-formed file that holds no samples at all (e.g. a WAV header with an empty data chunk)."""

    reason = "zero_duration"


class AudioTooLongError(LimitExceededError):
    """The decoded audio is longer than the configured maximum.

    Raised while decoding, as soon as the limit is passed, so ``decoded_s`` is only slightly above
    ``limit_s`` even for a file that would decode to days of audio.
    """

    reason = "audio_too_long"

    def __init__(self, message: str, *, limit_s: float, decoded_s: float) -> None:
        super().__init__(message)
        self.limit_s = limit_s
        self.decoded_s = decoded_s


class InputTooLargeError(LimitExceededError):
    """The upload is bigger than the configured maximum number of bytes (checked before decoding)."""

    reason = "input_too_large"

    def __init__(self, message: str, *, limit_bytes: int, actual_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes
        self.actual_bytes = actual_bytes
