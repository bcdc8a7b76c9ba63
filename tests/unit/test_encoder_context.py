"""How much of a window the encoder sees: the whole 30 s, or (adaptive) its speech plus a margin in
5 s steps, so batches of similar clips share one shape."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from escriba.transcription.whisper_adapter import (
    FULL_CONTEXT_FRAMES,
    NARROWBAND_HIGH_TO_MID_DB,
    Window,
    encoder_frames,
    high_to_mid_db,
    mel_centres_hz,
)

pytestmark = pytest.mark.timeout(30)


def window(duration_s: float) -> Window:
    return Window(np.zeros((80, 3000), dtype=np.float32), 0.0, duration_s)


def test_the_full_context_unless_asked() -> None:
    assert encoder_frames([window(2.0)], None) == FULL_CONTEXT_FRAMES


@pytest.mark.parametrize(
    ("durations", "margin", "frames"),
    [
        ([2.0], 15.0, 2000),  # 17 s -> 20 s
        ([4.9, 2.0], 15.0, 2000),  # the longest window decides
        ([5.1], 15.0, 2500),
        ([11.0], 5.0, 2000),
        ([29.0], 15.0, 3000),  # never more than the 30 s Whisper knows
        ([0.1], 1.0, 500),
    ],
)
def test_adaptive_context_rounds_up_to_steps(durations: list[float], margin: float, frames: int) -> None:
    assert encoder_frames([window(d) for d in durations], margin) == frames


def test_a_narrowband_window_keeps_the_full_context() -> None:
    short = window(2.0)
    phone = Window(np.zeros((80, 3000), dtype=np.float32), 0.0, 2.0, narrowband=True)
    assert encoder_frames([short], 5.0) == 1000
    assert encoder_frames([short, phone], 5.0) == FULL_CONTEXT_FRAMES  # one in a batch decides


def _features(samples: np.ndarray) -> np.ndarray:
    extractor = FeatureExtractor(feature_size=80)
    return np.asarray(extractor(samples.astype(np.float32))[..., :-1])


def test_telephone_band_audio_is_told_from_wideband() -> None:
    """Noise shaped like speech's spectrum, once whole and once cut at 3.4 kHz as a phone line does
    (then resampled to 16 kHz, as preprocess does): only the second measures narrowband."""
    rng = np.random.default_rng(7)
    rate = 16000
    noise = rng.standard_normal(rate * 5)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(noise.size, 1 / rate)
    speechlike = spectrum / np.maximum(freqs, 100.0) ** 0.5  # falls with frequency, as speech does
    wideband = np.fft.irfft(speechlike, n=noise.size)
    phone = np.fft.irfft(np.where(freqs < 3400.0, speechlike, 0.0), n=noise.size)
    centres = mel_centres_hz(FeatureExtractor(feature_size=80))
    wide_db = high_to_mid_db(_features(0.1 * wideband / np.abs(wideband).max()), centres)
    phone_db = high_to_mid_db(_features(0.1 * phone / np.abs(phone).max()), centres)
    assert wide_db > NARROWBAND_HIGH_TO_MID_DB + 10, wide_db
    assert phone_db < NARROWBAND_HIGH_TO_MID_DB, phone_db
