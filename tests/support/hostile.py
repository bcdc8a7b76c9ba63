"""Hostile and damaged uploads, made on demand from the test recordings, with what each must become.

``reason`` is the machine reason the services must answer with (a gRPC status for a synchronous call,
``error_reason`` for a task); ``None`` means the file is usable and must be transcribed: a cut
download keeps what is there, as a media player would.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tests.support import media

#: The duration limit the hostile suites configure, so the bomb's decode stops early.
MAX_DURATION_S = 600.0
#: Peak memory a bounded input may add to the process decoding it. A bomb decoded without the duration
#: limit would need 600 MB and more; within it, well under this.
MEMORY_BOUND_MB = 200.0


@dataclass(frozen=True)
class Hostile:
    name: str
    make: Callable[[], bytes]
    reason: str | None


def wav_claiming_rate(rate_hz: int) -> bytes:
    """A well-formed mono 16-bit WAV whose header claims ``rate_hz`` (0.25 s of silence at 16 kHz)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(np.zeros(4000, dtype="<i2").tobytes())
    return buf.getvalue()


def _jfk_mp3() -> bytes:
    samples, rate = media.speech()
    return media.to_mp3(samples, rate)


HOSTILE: tuple[Hostile, ...] = (
    Hostile("empty", lambda: b"", "empty_input"),
    Hostile("random bytes", media.random_bytes, "not_audio"),
    Hostile("mp3 cut in half", lambda: media.truncated(_jfk_mp3(), 0.5), None),
    Hostile("mp3 cut in its first frame", lambda: media.truncated(_jfk_mp3(), 0.003), "corrupt_audio"),
    Hostile("flac cut in half", lambda: media.truncated(media.JFK.read_bytes(), 0.5), None),
    Hostile(
        "flac cut after its header", lambda: media.truncated(media.JFK.read_bytes(), 0.01), "corrupt_audio"
    ),
    Hostile("video without audio", media.video_without_audio, "no_audio_stream"),
    Hostile("header claiming 2^31 Hz", lambda: wav_claiming_rate(2**31 - 1), "unsupported_audio_format"),
    Hostile("speech at 192 kHz", lambda: media.speech_at_rate(192_000), None),
    Hostile("speech at 4 kHz", lambda: media.speech_at_rate(4_000), None),
    Hostile("8 channels", lambda: media.speech_in_one_channel(8, 5), None),
    Hostile(
        "decompression bomb (3 h of silence)", lambda: media.decompression_bomb(hours=3.0), "audio_too_long"
    ),
)


def hostile_ids() -> list[str]:
    return [h.name for h in HOSTILE]


def readable(message: str) -> bool:
    """A message a person can act on: words, bounded, no traceback or object repr."""
    return (
        10 <= len(message) <= 2000
        and "Traceback" not in message
        and " object at 0x" not in message
        and any(c.isalpha() for c in message)
    )
