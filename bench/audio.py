"""The benchmark's recordings, built from the real speech in ``tests/data`` (with its transcripts).

A long recording is the speech corpus's recordings (``tests/data/speech``: 29 recordings, 451 s, many
speakers) joined in a shuffled order with natural pauses (0.3-1.5 s) between them: real speech the whole
way, the way VAD sees a meeting, never synthetic tones or silence padding, and with a reference
transcript (the parts' references in order), so every speed figure comes with the WER of both sides.
Short clips are the corpus's recordings of 2-15 s, each at a slightly different level (so no two
uploads are the same bytes and no cache answers for the model). Recordings are 44.1 kHz stereo, so
every side of a comparison decodes, downmixes and resamples, and are uploaded as MP3 (128 kb/s), the
most common format users send.
"""

from __future__ import annotations

import io
import random
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from bench import wer
from escriba.audio.pcm import SAMPLE_RATE_HZ, encode_pcm, quantize

DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "data"
RATE_HZ = 44_100
Samples = npt.NDArray[np.float32]


def _decode(path: Path, rate: int, layout: str) -> Samples:
    """``(channels, n)`` float32 at ``rate`` in ``layout`` (FFmpeg's resampler)."""
    channels = 2 if layout == "stereo" else 1
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    parts: list[npt.NDArray[Any]] = []
    with av.open(str(path), mode="r") as container:
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray() for f in resampler.resample(frame))
        parts.extend(f.to_ndarray() for f in resampler.resample(None))
    return np.concatenate(parts, axis=1).astype(np.float32).reshape(channels, -1)


@cache
def _clip(path: Path, rate: int, layout: str) -> Samples:
    return _decode(path, rate, layout)


def speech_clips(rate: int = RATE_HZ, layout: str = "stereo") -> list[tuple[Samples, str]]:
    """Every recording of the corpus with its reference transcript."""
    return [(_clip(r.path, rate, layout).copy(), r.reference) for r in wer.corpus()]


def joined_speech_with_text(
    seconds: float, *, seed: int, rate: int = RATE_HZ, layout: str = "stereo"
) -> tuple[Samples, str]:
    """At least ``seconds`` of the real recordings, shuffled per round, with pauses between them, and
    what is said in them."""
    clips = speech_clips(rate, layout)
    rng = random.Random(seed)
    parts: list[Samples] = []
    said: list[str] = []
    total = 0
    while total < seconds * rate:
        order = list(range(len(clips)))
        rng.shuffle(order)
        for index in order:
            samples, reference = clips[index]
            pause = np.zeros((samples.shape[0], int(rng.uniform(0.3, 1.5) * rate)), dtype=np.float32)
            parts += [samples, pause]
            said.append(reference)
            total += samples.shape[1] + pause.shape[1]
            if total >= seconds * rate:
                break
    return np.concatenate(parts, axis=1), " ".join(said)


def joined_speech(seconds: float, *, seed: int, rate: int = RATE_HZ, layout: str = "stereo") -> Samples:
    return joined_speech_with_text(seconds, seed=seed, rate=rate, layout=layout)[0]


def encode_mp3(samples: Samples, rate: int = RATE_HZ, bit_rate: int = 128_000) -> bytes:
    """``(channels, n)`` float32 as an MP3 file (LAME through PyAV)."""
    channels = samples.shape[0]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate)
        stream.codec_context.layout = "stereo" if channels == 2 else "mono"
        stream.codec_context.bit_rate = bit_rate
        step = 1152 * 8
        for start in range(0, samples.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + step]),
                format="fltp",
                layout=stream.codec_context.layout.name,
            )
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def short_clips(
    count: int, *, seed: int, low_s: float = 2.0, high_s: float = 15.0
) -> list[tuple[Samples, str]]:
    """``count`` recordings of 2-15 s from the corpus (as phone snippets and voice notes are), cycled in
    a shuffled order, each at its own level (-3 to 0 dB) so that no two are the same upload."""
    rng = random.Random(seed)
    pool = [(s, text) for s, text in speech_clips() if low_s <= s.shape[1] / RATE_HZ <= high_s]
    clips: list[tuple[Samples, str]] = []
    while len(clips) < count:
        rng.shuffle(pool)
        for samples, text in pool[: count - len(clips)]:
            gain = np.float32(10 ** (rng.uniform(-3.0, 0.0) / 20))
            clips.append(((samples * gain).astype(np.float32), text))
    return clips


def canonical_flac(seconds: float, *, seed: int) -> bytes:
    """Joined speech as the transcription worker receives it: 16 kHz mono 16-bit FLAC."""
    mono = joined_speech(seconds, seed=seed, rate=SAMPLE_RATE_HZ, layout="mono")[0]
    mono = mono[: int(seconds * SAMPLE_RATE_HZ)]
    return encode_pcm(quantize(mono), "flac", sample_rate_hz=SAMPLE_RATE_HZ)


def duration_s(samples: Samples, rate: int = RATE_HZ) -> float:
    return float(samples.shape[1] / rate)
