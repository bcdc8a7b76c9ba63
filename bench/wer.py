"""Word error rate on the project's speech corpus, scored the same way for every side of a comparison.

The corpus (``tests/data/speech``, a copy of ``../shared/speech`` with its attribution) holds real
recordings with human transcripts. Both sides are normalized by Whisper's own English normalizer
(``whisper-normalizer``, a port of the one in openai/whisper) after bracketed non-lexical tokens of the
references (``[laughter]``, ``<VOCNOISE>``) are dropped; ``jiwer`` aligns and counts. Totals are
corpus-level (errors over reference words), so a long file weighs by its words, not as one file.

"Uncovered speech" is the other half of "no speech silently dropped": Silero VAD (the one inside
faster-whisper, no padding) finds the stretches of speech in the original recording, and the longest
stretch that no transcript segment overlaps is reported per file and side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import numpy.typing as npt
from whisper_normalizer.english import EnglishTextNormalizer

CORPUS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech"
_NON_LEXICAL = re.compile(r"\[[^\]]*\]|<[^>]*>")
SAMPLE_RATE_HZ = 16_000


@dataclass(frozen=True, slots=True)
class Recording:
    path: Path
    reference: str
    duration_s: float
    kind: str

    @property
    def name(self) -> str:
        return self.path.name


def corpus(directory: Path = CORPUS_DIR) -> list[Recording]:
    manifest = json.loads((directory / "manifest.json").read_text())
    return [
        Recording(directory / "audio" / e["file"], e["reference"], float(e["duration_s"]), e["kind"])
        for e in manifest
    ]


@cache
def _normalizer() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


_DIGIT = re.compile(r"(\d)")


def normalize(text: str) -> str:
    """Whisper's English normalization, then every digit a word of its own: the normalizer joins
    spoken digits into one number ("nine oh two" -> "902") but leaves "9 0 2" apart, so a digit string
    would otherwise count as one reference word and several inserted ones. It also keeps a lone "one"
    (and turns a lone "1" into it) so that is unified to the digit too. Both sides get the same."""
    normalized = _normalizer()(_NON_LEXICAL.sub(" ", text))
    words = _DIGIT.sub(r" \1 ", normalized).split()
    return " ".join("1" if w == "one" else w for w in words)


@dataclass(frozen=True, slots=True)
class Score:
    """Errors (substitutions + deletions + insertions) against ``words`` reference words."""

    errors: int
    words: int

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0

    def __add__(self, other: Score) -> Score:
        return Score(self.errors + other.errors, self.words + other.words)


def score(reference: str, hypothesis: str) -> Score:
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return Score(len(hyp.split()), 0)
    if not hyp:
        return Score(len(ref.split()), len(ref.split()))
    out = jiwer.process_words(ref, hyp)
    return Score(out.substitutions + out.deletions + out.insertions, len(ref.split()))


def total(scores: Iterable[Score]) -> Score:
    result = Score(0, 0)
    for s in scores:
        result = result + s
    return result


def speech_stretches(samples: npt.NDArray[np.float32]) -> list[tuple[float, float]]:
    """Seconds of speech Silero VAD finds (faster-whisper's defaults, no padding)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(samples, VadOptions(speech_pad_ms=0, min_silence_duration_ms=500))
    return [(c["start"] / SAMPLE_RATE_HZ, c["end"] / SAMPLE_RATE_HZ) for c in found]


def longest_uncovered(
    speech: Sequence[tuple[float, float]], segments: Sequence[tuple[float, float]]
) -> float:
    """The longest stretch of ``speech`` that no segment overlaps (seconds)."""
    covered = sorted((s, e) for s, e in segments if e > s)
    longest = 0.0
    for start, end in speech:
        cursor = start
        for seg_start, seg_end in covered:
            if seg_end <= cursor:
                continue
            if seg_start >= end:
                break
            longest = max(longest, min(seg_start, end) - cursor)
            cursor = max(cursor, seg_end)
            if cursor >= end:
                break
        longest = max(longest, end - cursor)
    return max(0.0, longest)


def as_json(value: Any) -> Any:
    """Rounded floats for the results file."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value
