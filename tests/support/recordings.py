"""Recordings built from the real speech in ``tests/data``, with the sentence each part says.

A multi-window recording is real clips of the speech corpus (several speakers, rates and formats) joined
with short pauses: the VAD sees one long stretch of speech cut into several 30 s windows, where a
transcriber can lose text at a window's end. Every part is a clip plain faster-whisper gets right, so a
test can ask that each sentence shows up, not merely that the WER is low overall.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jiwer
import numpy as np
import numpy.typing as npt
from faster_whisper import decode_audio

from tests.support.text import JFK_REFERENCE, normalize

DATA = Path(__file__).resolve().parents[1] / "data"
SPEECH = DATA / "speech"
RATE_HZ = 16_000
#: Clips of the corpus that tiny.en transcribes (almost) word for word alone.
MULTI_WINDOW_PARTS = (
    "ljspeech_LJ001-0004.mp3",
    "vctk_p238_165.wav",
    "ljspeech_LJ001-0006.flac",
    "vctk_p255_367.wav",
    "ljspeech_LJ001-0007.wav",
    "vctk_p301_102.wav",
    "jfk.flac",
    "vctk_p314_272.wav",
    "ljspeech_LJ001-0028.wav",
    "vctk_p335_367.wav",
    "praatio_mary.wav",
)


@dataclass(frozen=True)
class Built:
    samples: npt.NDArray[np.float32]  # 16 kHz mono
    sentences: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return float(self.samples.shape[0] / RATE_HZ)


@cache
def _references() -> dict[str, str]:
    manifest = json.loads((SPEECH / "manifest.json").read_text())
    return {e["file"]: e["reference"] for e in manifest} | {"jfk.flac": JFK_REFERENCE}


def _path(name: str) -> Path:
    return DATA / name if (DATA / name).exists() else SPEECH / "audio" / name


#: A continuous read passage (LJ Speech LJ001-0009..0017, 69 s): speech runs across window ends.
PASSAGE = "joined_ljspeech_LJ001-0009_to_0017.wav"


def _sentences(reference: str) -> list[str]:
    """A passage's reference cut at sentence and clause ends, keeping parts of four words or more."""
    return [s.strip() for s in re.split(r"(?<=[.;?!])\s+", reference) if len(s.split()) >= 4]


def _load(name: str) -> npt.NDArray[np.float32]:
    return np.asarray(decode_audio(str(_path(name))), dtype=np.float32)


@cache
def multi_window(seed: int = 7) -> Built:
    """About 140 s in five or more windows: the read passage, then 11 clips of other speakers with
    pauses of 0.4-0.9 s between them."""
    rng = random.Random(seed)
    parts: list[npt.NDArray[np.float32]] = [_load(PASSAGE)]
    sentences = _sentences(_references()[PASSAGE])
    for name in MULTI_WINDOW_PARTS:
        parts.append(np.zeros(int(rng.uniform(0.4, 0.9) * RATE_HZ), dtype=np.float32))
        parts.append(_load(name))
        sentences.append(_references()[name])
    return Built(np.concatenate(parts), tuple(sentences))


def sentence_error(sentence: str, transcript: str) -> float:
    """The lowest WER of ``sentence`` against any stretch of ``transcript`` of about its length: how
    well the sentence shows up somewhere in it (0.0: word for word)."""
    ref = normalize(sentence).split()
    hyp = normalize(transcript).split()
    if not ref:
        return 0.0
    best = 1.0
    for size in range(max(1, len(ref) - 2), len(ref) + 3):
        for start in range(0, max(1, len(hyp) - size + 1)):
            window = hyp[start : start + size]
            if window:
                best = min(best, float(jiwer.wer(" ".join(ref), " ".join(window))))
    return best


def missing_sentences(sentences: tuple[str, ...], transcript: str, *, max_error: float = 0.35) -> list[str]:
    """The sentences that do not show up in ``transcript`` (fuzzily: a few words may differ)."""
    return [s for s in sentences if sentence_error(s, transcript) > max_error]
