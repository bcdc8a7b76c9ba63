"""The streamed audio steps give what the whole-array ones give, whatever the chunking.

Preprocessing runs in chunks so its memory does not grow with the recording (issue 15); the canonical
audio, the loudness figures and the limiter's work must not change for it. Each streamed step is
compared with its whole-array counterpart on the same samples, fed in uneven chunks.
"""

from __future__ import annotations

import numpy as np
import pytest

from escriba.audio.decode import decode_audio
from escriba.audio.loudness import (
    LoudnessMeter,
    integrated_loudness,
    limit_peaks,
    limit_window,
    limiter_context,
    normalize_loudness,
    peak_ceiling,
)
from escriba.audio.pcm import PcmWriter, encode_pcm
from escriba.audio.spool import SampleSpool
from escriba.common.settings import load
from escriba.preprocess import Preprocessor, PreprocessSettings
from tests.support import media

RATE = 16000


def uneven_chunks(samples: np.ndarray, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, samples.size, 40))
    return np.split(samples, cuts)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples: np.ndarray = media.long_speech(95.0)[0]
    return samples


def test_the_meter_in_chunks_measures_what_the_whole_array_does(speech: np.ndarray) -> None:
    meter = LoudnessMeter(RATE)
    for chunk in uneven_chunks(speech):
        meter.add(chunk)
    assert meter.loudness() == pytest.approx(integrated_loudness(speech, RATE), abs=1e-9)
    assert meter.samples == speech.size


def test_the_meter_measures_a_clip_shorter_than_one_block_whole() -> None:
    clip = media.speech("jfk.flac")[0][0, 8000:11000]
    meter = LoudnessMeter(RATE)
    for chunk in np.array_split(clip, 7):
        meter.add(chunk)
    assert meter.loudness() == integrated_loudness(clip, RATE)
    assert LoudnessMeter(RATE).loudness() == -np.inf


@pytest.mark.parametrize("encoding", ["flac", "wav"])
def test_the_writer_in_chunks_writes_the_same_bytes(tmp_path, speech: np.ndarray, encoding: str) -> None:
    path = tmp_path / f"out.{encoding}"
    with PcmWriter(path, encoding) as writer:
        for chunk in uneven_chunks(speech):
            writer.write(chunk)
    assert path.read_bytes() == encode_pcm(speech, encoding)


def test_limiting_window_by_window_is_limiting_the_whole(tmp_path, speech: np.ndarray) -> None:
    loud = (speech * np.float32(8.0)).astype(np.float32)  # peaks far over the ceiling, in clusters
    ceiling = peak_ceiling(-1.5)
    whole, whole_cut = limit_peaks(loud, ceiling, RATE)
    with SampleSpool(tmp_path / "spool.f32") as spool:
        for chunk in uneven_chunks(loud):
            spool.append(chunk)
        parts, cuts = [], []
        for window, lead, length in spool.windows(limiter_context(RATE), length=RATE * 7):
            part, cut = limit_window(np.asarray(window), ceiling, RATE, lead=lead, length=length)
            parts.append(part)
            cuts.append(cut)
    streamed = np.concatenate(parts)
    assert streamed.size == loud.size and max(cuts) == pytest.approx(whole_cut, abs=1e-12)
    assert np.max(np.abs(streamed - whole)) <= 1e-6
    assert np.max(np.abs(streamed)) <= ceiling


def test_a_streamed_normalization_is_the_whole_array_normalization(tmp_path) -> None:
    # A quiet recording with loud clicks: the gain search needs more than one limiting pass.
    speech = media.long_speech(70.0)[0] * np.float32(0.05)
    speech[RATE * 10 :: RATE * 9] = 0.9
    data = media.to_flac(speech[None, :], RATE)
    settings = load(PreprocessSettings, {})
    decoded = decode_audio(data, max_duration_s=settings.max_duration_s)
    expected = normalize_loudness(decoded.samples, RATE, target_lufs=-14.0, ceiling_dbfs=-1.5)
    assert expected.limiter_reduction_db > 0
    output = tmp_path / "canonical.flac"
    info = Preprocessor(settings).preprocess(data, output, target_lufs=-14.0, work_dir=tmp_path)
    assert output.read_bytes() == encode_pcm(expected.samples)
    assert info.input_loudness_lufs == pytest.approx(expected.input_lufs, abs=1e-9)
    assert info.output_loudness_lufs == pytest.approx(expected.output_lufs, abs=1e-6)
    assert info.gain_db == pytest.approx(expected.gain_db, abs=1e-9)
    assert info.limiter_reduction_db == pytest.approx(expected.limiter_reduction_db, abs=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == ["canonical.flac"]  # the spool is gone
