"""Per-request decoding options, validated where they are built.

The transport maps its request (protobuf, a job message) onto these dataclasses, starting from the
server defaults (:meth:`TranscriptionSettings.default_options`) and replacing what the caller set.
Validation runs in ``__post_init__``, so an instance that exists is valid: a bad value fails the request
up front with an :class:`InvalidOptionError` naming the field, instead of surfacing as an obscure
CTranslate2 error (or a silently truncated prompt) deep inside inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from faster_whisper.tokenizer import _LANGUAGE_CODES

from escriba.transcription.errors import InvalidOptionError, UnsupportedLanguageError

#: Whisper's language codes (ISO 639-1, plus ``haw`` and ``yue``).
LANGUAGE_CODES: frozenset[str] = frozenset(_LANGUAGE_CODES)

BEAM_SIZE_RANGE = (1, 20)
#: Whisper keeps at most 223 prompt tokens (half its 448-token context) and drops the rest silently;
#: 1000 characters is past that for any language, so longer text is a client mistake worth reporting.
MAX_PROMPT_CHARS = 1000
#: The batched pipeline cuts speech into windows of at most 30 s (Whisper's input length).
MAX_SPEECH_WINDOW_S = 30.0
MAX_VAD_MS = 60_000
TASKS = ("transcribe", "translate")
CHANNEL_MODES = ("mix", "separate")


def normalize_language(code: str) -> str:
    """Lower-case, and the primary subtag of a BCP 47 tag (``pt-BR`` -> ``pt``): Whisper knows
    languages, not regional variants."""
    return code.strip().lower().replace("_", "-").split("-", 1)[0]


def check_language(code: str) -> str | None:
    """What is wrong with a language code (``""`` means detect), or ``None``."""
    if not code.strip() or normalize_language(code) in LANGUAGE_CODES:
        return None
    return f"unknown language code {code!r}; expected an ISO 639-1 code such as 'en' or 'de'"


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidOptionError(name, f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise InvalidOptionError(name, f"must be between {low} and {high}, got {value}")


def _check_text(name: str, value: str | None) -> None:
    if value is None:
        return
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidOptionError(name, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidOptionError(name, "must not contain NUL characters")


@dataclass(frozen=True, slots=True)
class VadParameters:
    """Silero voice activity detection, run before decoding to skip silence (and what Whisper tends to
    hallucinate over it)."""

    enabled: bool = True
    threshold: float = 0.5  # speech probability above which a 32 ms frame counts as speech
    min_speech_duration_ms: int = 0  # speech chunks shorter than this are dropped
    min_silence_duration_ms: int = 160  # silence needed to end a speech chunk
    speech_pad_ms: int = 400  # padding kept on each side of a speech chunk
    max_speech_duration_s: float = MAX_SPEECH_WINDOW_S  # longer speech is split (at a pause if any)

    def __post_init__(self) -> None:
        _check_range("vad.threshold", self.threshold, 0.0, 1.0)
        _check_range("vad.min_speech_duration_ms", self.min_speech_duration_ms, 0, MAX_VAD_MS)
        _check_range("vad.min_silence_duration_ms", self.min_silence_duration_ms, 0, MAX_VAD_MS)
        _check_range("vad.speech_pad_ms", self.speech_pad_ms, 0, MAX_VAD_MS)
        _check_range("vad.max_speech_duration_s", self.max_speech_duration_s, 1.0, MAX_SPEECH_WINDOW_S)


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    """How one request is decoded. ``language=None`` detects it (English-only models report ``en``)."""

    language: str | None = None
    beam_size: int = 5
    word_timestamps: bool = True
    initial_prompt: str | None = None  # text that precedes the audio: style, names, context
    hotwords: str | None = None  # words or phrases to bias decoding towards, e.g. product names
    vad: VadParameters = field(default_factory=VadParameters)
    temperature: float = 0.0  # 0: beam search; above: sampling at that temperature
    # A window that fails the quality thresholds is decoded again at the next temperature (+0.2).
    temperature_fallback: bool = True
    # Feed each window's text to the next one. The batched pipeline decodes windows independently, so
    # asking for this switches the request to sequential decoding (slower, more consistent wording).
    condition_on_previous_text: bool = False
    # Cut each 30 s window into sentence-sized segments (subtitles) from the word alignment.
    segment_timestamps: bool = True
    #: "transcribe" writes what is said; "translate" writes it in English (multilingual models).
    task: str = "transcribe"
    #: "mix": one transcript of all channels; "separate": one per distinct channel, merged by time.
    channels: str = "mix"

    def __post_init__(self) -> None:
        if self.language is not None:
            code = normalize_language(self.language)
            if not self.language.strip() or code == "auto":
                object.__setattr__(self, "language", None)
            else:
                problem = check_language(self.language)
                if problem:
                    raise UnsupportedLanguageError(problem)
                object.__setattr__(self, "language", code)
        if self.channels not in CHANNEL_MODES:
            raise InvalidOptionError(
                "channels", f"must be one of {', '.join(CHANNEL_MODES)}, got {self.channels!r}"
            )
        if self.task not in TASKS:
            raise InvalidOptionError("task", f"must be one of {', '.join(TASKS)}, got {self.task!r}")
        if isinstance(self.beam_size, bool) or not isinstance(self.beam_size, int):
            raise InvalidOptionError("beam_size", f"must be an integer, got {self.beam_size!r}")
        _check_range("beam_size", self.beam_size, *BEAM_SIZE_RANGE)
        _check_range("temperature", self.temperature, 0.0, 1.0)
        for name in ("initial_prompt", "hotwords"):
            value = getattr(self, name)
            _check_text(name, value)
            if value is not None and not value.strip():
                object.__setattr__(self, name, None)
        if not isinstance(self.vad, VadParameters):
            raise InvalidOptionError("vad", f"must be VadParameters, got {type(self.vad).__name__}")

    def with_changes(self, **changes: Any) -> TranscriptionOptions:
        """A copy with ``changes`` applied (and validated); ``None`` values mean "keep the default",
        the way unset optional protobuf fields do."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def with_vad_changes(self, **changes: Any) -> TranscriptionOptions:
        """A copy whose VAD parameters have ``changes`` applied; ``None`` values keep the default."""
        return replace(self, vad=replace(self.vad, **{k: v for k, v in changes.items() if v is not None}))
