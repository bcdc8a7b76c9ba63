"""Errors of the transcription engine.

They sit in the shared hierarchy so the servicer maps them to gRPC codes and the worker decides retries
from ``transient`` without knowing anything about Whisper: a bad request fails its task at once, a
model that is still loading or an inference that failed (a CUDA out-of-memory under load, say) is
retried with backoff.
"""

from __future__ import annotations

from escriba.common.errors import (
    InvalidInputError,
    LimitExceededError,
    NotReadyError,
    PermanentError,
    TransientError,
)


class InvalidOptionError(InvalidInputError):
    """A decoding option is out of range; ``field`` names it so a client can fix its request."""

    reason = "invalid_option"

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {message}", reason=reason)
        self.field = field


class UnsupportedLanguageError(InvalidOptionError):
    """The language code is unknown to Whisper, or the loaded model cannot transcribe it."""

    reason = "unsupported_language"

    def __init__(self, message: str) -> None:
        super().__init__("language", message)


class InvalidAudioError(InvalidInputError):
    """The samples are not 16 kHz mono float audio the engine can use (wrong shape, NaN, ...)."""

    reason = "invalid_audio"


class AudioTooLongError(LimitExceededError):
    """The audio is longer than ``ESCRIBA_TRANSCRIPTION_MAX_DURATION_S``."""

    reason = "audio_too_long"


class ModelLoadError(PermanentError):
    """The configured model cannot be loaded; the process should stop rather than serve nothing."""

    reason = "model_load_failed"


class ModelNotFoundError(ModelLoadError):
    """The configured model directory does not exist (nothing is downloaded at run time)."""

    reason = "model_not_found"


class EngineNotReadyError(NotReadyError):
    """A request arrived before :meth:`WhisperEngine.load` finished."""

    reason = "model_loading"


class InferenceError(TransientError):
    """CTranslate2 failed while decoding (often out of device memory): retry later."""

    reason = "inference_failed"
