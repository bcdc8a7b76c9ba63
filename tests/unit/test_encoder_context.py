"""How much of a window the encoder sees: the whole 30 s, or (adaptive) its speech plus a margin in
5 s steps, so batches of similar clips share one shape."""

from __future__ import annotations

import numpy as np
import pytest

from escriba.transcription.whisper_adapter import FULL_CONTEXT_FRAMES, Window, encoder_frames

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
