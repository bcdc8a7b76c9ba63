"""The benchmark's recordings, built from the real speech in ``tests/data``.

Only about 20 s of real speech ship with the project, so a long recording is those recordings joined
in a shuffled order with natural pauses (0.3-1.5 s) between them: real speech the whole way, the way
VAD sees a meeting, never synthetic tones or silence padding. Recordings are 44.1 kHz stereo like the
JFK recording, so every side of a comparison decodes, downmixes and resamples, and are uploaded as
MP3 (128 kb/s), the most common format users send.
"""

from __future__ import annotations

import io
import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from escriba.audio.pcm import SAMPLE_RATE_HZ, encode_pcm, quantize

DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "data"
SPEECH_FILES = ("jfk.flac", "stereo_diarization.wav", "hotwords.mp3")
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


def speech_clips(rate: int = RATE_HZ, layout: str = "stereo") -> list[Samples]:
    return [_decode(DATA_DIR / name, rate, layout) for name in SPEECH_FILES]


def joined_speech(seconds: float, *, seed: int, rate: int = RATE_HZ, layout: str = "stereo") -> Samples:
    """At least ``seconds`` of the real recordings, shuffled per round, with pauses between them."""
    clips = speech_clips(rate, layout)
    rng = random.Random(seed)
    parts: list[Samples] = []
    total = 0
    while total < seconds * rate:
        order = list(range(len(clips)))
        rng.shuffle(order)
        for index in order:
            pause = np.zeros((clips[index].shape[0], int(rng.uniform(0.3, 1.5) * rate)), dtype=np.float32)
            parts += [clips[index], pause]
            total += clips[index].shape[1] + pause.shape[1]
    return np.concatenate(parts, axis=1)


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


def short_clips(count: int, *, seed: int, low_s: float = 2.0, high_s: float = 15.0) -> list[Samples]:
    """``count`` cuts of 2-15 s from the joined speech, as phone snippets and voice notes are."""
    source = joined_speech(120.0, seed=seed)
    rng = random.Random(seed)
    clips = []
    for _ in range(count):
        length = int(rng.uniform(low_s, high_s) * RATE_HZ)
        start = rng.randrange(0, source.shape[1] - length)
        clips.append(source[:, start : start + length])
    return clips


def canonical_flac(seconds: float, *, seed: int) -> bytes:
    """Joined speech as the transcription worker receives it: 16 kHz mono 16-bit FLAC."""
    mono = joined_speech(seconds, seed=seed, rate=SAMPLE_RATE_HZ, layout="mono")[0]
    mono = mono[: int(seconds * SAMPLE_RATE_HZ)]
    return encode_pcm(quantize(mono), "flac", sample_rate_hz=SAMPLE_RATE_HZ)


def duration_s(samples: Samples, rate: int = RATE_HZ) -> float:
    return float(samples.shape[1] / rate)
