"""BS.1770 measurement, the peak limiter and loudness normalization."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest

from escriba.audio.loudness import (
    db_to_linear,
    integrated_loudness,
    limit_peaks,
    normalize_loudness,
)
from tests.support import media

RATE = 16000
TARGET = -16.0
CEILING_DBFS = -1.5
CEILING = db_to_linear(CEILING_DBFS)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A minute of real speech at 16 kHz mono: the three tests/data recordings over and over. Not the
    corpus (``media.long_speech``): its quiet recordings have blocks near the -70 LUFS absolute gate,
    which a gain moves across it, so loudness would not shift by exactly the gain (as BS.1770 says)."""
    pieces = []
    for name in ("jfk.flac", "stereo_diarization.wav", "hotwords.mp3"):
        samples, rate = media.speech(name)
        pieces.append(media.resample(samples.mean(axis=0, keepdims=True), rate, RATE)[0])
    one_round = np.concatenate(pieces)
    return np.tile(one_round, int(np.ceil(60 * RATE / one_round.size)))[: 60 * RATE].astype(np.float32)


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    samples, rate = media.speech("jfk.flac")
    return media.resample(samples.mean(axis=0, keepdims=True), rate, RATE).reshape(-1)


def peak_dbfs(x: np.ndarray) -> float:
    return 20 * math.log10(float(np.max(np.abs(x))))


# Measurement ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_full_scale_1khz_sine_reads_minus_3_lufs(rate):
    # BS.1770's calibration: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS.
    sine = media.tone(997, 5.0, rate=rate, amplitude=1.0)[0]
    assert integrated_loudness(sine, rate) == pytest.approx(-3.01, abs=0.05)


def test_matches_pyloudnorm_with_the_same_filter(speech):
    reference = pyloudnorm.Meter(RATE, filter_class="DeMan").integrated_loudness(speech.astype(np.float64))
    assert integrated_loudness(speech, RATE) == pytest.approx(reference, abs=0.01)


def test_close_to_pyloudnorm_default_filter(speech):
    # pyloudnorm's default K-weighting uses rounded filter parameters; the two agree within 0.2 LU.
    reference = pyloudnorm.Meter(RATE).integrated_loudness(speech.astype(np.float64))
    assert integrated_loudness(speech, RATE) == pytest.approx(reference, abs=0.2)


@pytest.mark.parametrize("gain_db", [-12.0, -6.0, 0.0, 6.0])
def test_gain_shifts_loudness_by_the_same_amount(speech, gain_db):
    # (Much quieter, the -70 LUFS absolute gate starts dropping the pauses, as BS.1770 intends.)
    base = integrated_loudness(speech, RATE)
    assert integrated_loudness(media.with_gain(speech, gain_db), RATE) == pytest.approx(
        base + gain_db, abs=0.01
    )


def test_gating_ignores_silence_between_speech(jfk):
    padded = np.concatenate(
        [np.zeros(RATE * 20, dtype=np.float32), jfk, np.zeros(RATE * 20, dtype=np.float32)]
    )
    assert integrated_loudness(padded, RATE) == pytest.approx(integrated_loudness(jfk, RATE), abs=0.1)


def test_silence_and_near_silence_have_no_loudness():
    assert integrated_loudness(np.zeros(RATE * 3, dtype=np.float32), RATE) == -math.inf
    hiss = (np.random.default_rng(1).standard_normal(RATE * 3) * 1e-5).astype(np.float32)  # about -97 LUFS
    assert integrated_loudness(hiss, RATE) == -math.inf
    assert integrated_loudness(np.zeros(0, dtype=np.float32), RATE) == -math.inf


def test_a_clip_shorter_than_one_block_is_measured_whole():
    short = media.tone(997, 0.2, amplitude=1.0)[0]
    assert integrated_loudness(short, RATE) == pytest.approx(-3.0, abs=0.3)


# Limiter ----------------------------------------------------------------------------------------


def test_limiter_leaves_audio_under_the_ceiling_alone(jfk):
    quiet = jfk * np.float32(0.5 / np.max(np.abs(jfk)))
    limited, reduction = limit_peaks(quiet, CEILING, RATE)
    assert reduction == 0.0
    assert limited is quiet


@pytest.mark.parametrize("overshoot_db", [1.0, 6.0, 20.0])
def test_limiter_holds_the_ceiling_exactly(jfk, overshoot_db):
    loud = jfk * np.float32(db_to_linear(overshoot_db) / np.max(np.abs(jfk)))
    limited, reduction = limit_peaks(loud, CEILING, RATE)
    assert np.max(np.abs(limited)) <= CEILING
    assert reduction == pytest.approx(overshoot_db - CEILING_DBFS, abs=0.01)


def test_limiter_only_touches_the_neighbourhood_of_peaks():
    signal = media.tone(200, 2.0, amplitude=0.3)[0]
    signal[RATE] = 1.0  # one click in the middle
    limited, _ = limit_peaks(signal, CEILING, RATE)
    changed = np.flatnonzero(limited != signal)
    # The gain starts falling 10 ms ahead of the click (look-ahead), holds 40 ms after it and is back
    # to 1 within 10 ms more: nothing else moves.
    assert RATE - int(0.011 * RATE) <= changed.min() < RATE
    assert RATE + int(0.040 * RATE) < changed.max() <= RATE + int(0.051 * RATE)


def test_limiter_gain_ramps_instead_of_jumping():
    signal = media.tone(200, 2.0, amplitude=0.3)[0]
    signal[RATE : RATE + 400] *= 4.0  # a 25 ms burst 6 dB over full scale
    limited, reduction = limit_peaks(signal, CEILING, RATE)
    assert reduction > 3.0
    valid = np.abs(signal) > 0.05  # where the gain limited / signal is well defined
    steps = np.diff(limited / np.where(valid, signal, 1.0))[valid[:-1] & valid[1:]]
    # A hard clip would change the gain by about 0.3 from one sample to the next at the burst's edges;
    # the ramps spread that over 10 ms.
    assert np.max(np.abs(steps)) < 0.01


# Normalization ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gain_db", [-40.0, -20.0, -6.0, 0.0, 6.0, 12.0])
def test_speech_lands_on_target_with_peaks_under_the_ceiling(speech, gain_db):
    result = normalize_loudness(
        media.with_gain(speech, gain_db), RATE, target_lufs=TARGET, ceiling_dbfs=CEILING_DBFS
    )
    assert result.output_lufs == pytest.approx(TARGET, abs=0.5)
    assert integrated_loudness(result.samples, RATE) == pytest.approx(result.output_lufs, abs=1e-6)
    assert np.max(np.abs(result.samples)) <= CEILING
    assert not result.silent


@pytest.mark.parametrize("target", [-30.0, -23.0, -16.0, -12.0])
def test_other_targets(jfk, target):
    result = normalize_loudness(jfk, RATE, target_lufs=target, ceiling_dbfs=CEILING_DBFS)
    assert result.output_lufs == pytest.approx(target, abs=0.5)
    assert np.max(np.abs(result.samples)) <= CEILING


def test_peaky_speech_is_limited_rather_than_turned_down(jfk):
    peaky = media.with_gain(jfk, -20.0)
    peaky[:: RATE // 2] = 1.0  # clicks twice a second, 20 dB above the speech's own peaks
    result = normalize_loudness(peaky, RATE, target_lufs=TARGET, ceiling_dbfs=CEILING_DBFS)
    assert result.limiter_reduction_db > 3.0
    assert result.output_lufs == pytest.approx(TARGET, abs=0.5)
    assert np.max(np.abs(result.samples)) <= CEILING


def test_loud_clipped_input_is_turned_down_under_the_ceiling(jfk):
    clipped = np.clip(jfk * np.float32(20.0), -1.0, 1.0)
    result = normalize_loudness(clipped, RATE, target_lufs=TARGET, ceiling_dbfs=CEILING_DBFS)
    assert result.gain_db < 0
    assert result.output_lufs == pytest.approx(TARGET, abs=0.5)
    assert np.max(np.abs(result.samples)) <= CEILING


def test_silence_gets_no_gain_and_is_reported():
    silence = np.zeros(RATE * 5, dtype=np.float32)
    result = normalize_loudness(silence, RATE, target_lufs=TARGET, ceiling_dbfs=CEILING_DBFS)
    assert result.silent
    assert result.gain_db == 0.0
    assert result.input_lufs == -math.inf and result.output_lufs == -math.inf
    assert np.array_equal(result.samples, silence)


def test_clicks_in_digital_silence_are_kept_under_the_ceiling():
    clicks = np.zeros(RATE * 5, dtype=np.float32)
    clicks[RATE::RATE] = 1.0
    result = normalize_loudness(clicks, RATE, target_lufs=TARGET, ceiling_dbfs=CEILING_DBFS)
    assert np.max(np.abs(result.samples)) <= CEILING
    assert result.gain_db > 0 and math.isfinite(result.output_lufs)


def test_normalizing_twice_changes_nothing_more(speech):
    once = normalize_loudness(speech, RATE, target_lufs=TARGET, ceiling_dbfs=CEILING_DBFS)
    twice = normalize_loudness(once.samples, RATE, target_lufs=TARGET, ceiling_dbfs=CEILING_DBFS)
    assert abs(twice.gain_db) < 0.5
    assert twice.output_lufs == pytest.approx(TARGET, abs=0.5)
