"""Stock phrases over silence and duplicated segments: removed on evidence, real speech kept."""

from __future__ import annotations

import pytest

from escriba.correction.silence import DUPLICATE, HALLUCINATION, is_stock_phrase, segment_verdicts
from escriba.transcript import Segment

SPEECH = {"no_speech_prob": 0.02, "avg_logprob": -0.25}
SILENCE = {"no_speech_prob": 0.85, "avg_logprob": -0.4}
GUESSING = {"no_speech_prob": 0.1, "avg_logprob": -1.3}
WEAK = {"no_speech_prob": 0.4, "avg_logprob": -0.5}


def _segments(*items: tuple[str, dict[str, float]]) -> list[Segment]:
    return [
        Segment(id=n, start_s=2.0 * n, end_s=2.0 * n + 2.0, text=text, **scores)  # type: ignore[arg-type]
        for n, (text, scores) in enumerate(items)
    ]


@pytest.mark.parametrize(
    ("text", "stock"),
    [
        (" Thank you.", True),
        ("Thanks for watching!", True),
        ("Subtitles by the Amara.org community", True),
        ("Sous-titres réalisés para la communauté d'Amara.org", True),
        (" you", True),
        ("Thank you. Please subscribe.", True),
        ("...", True),
        ("ご視聴ありがとうございました", True),
        ("Thank you for coming today.", False),
        ("Thank you. Now let's start.", False),
        ("you know what I mean", False),
        ("", False),
    ],
)
def test_stock_phrases(text: str, stock: bool) -> None:
    assert is_stock_phrase(text) is stock


@pytest.mark.parametrize(
    ("scores", "verdict"),
    [(SILENCE, HALLUCINATION), (GUESSING, HALLUCINATION), (SPEECH, None), ({}, None)],
)
def test_stock_phrase_mid_recording_needs_strong_evidence(
    scores: dict[str, float], verdict: str | None
) -> None:
    segments = _segments(("We start now.", SPEECH), (" Thank you.", scores), ("And we go on.", SPEECH))
    assert segment_verdicts(segments) == [None, verdict, None]


@pytest.mark.parametrize(("scores", "verdict"), [(WEAK, HALLUCINATION), (SPEECH, None), ({}, None)])
def test_trailing_stock_phrase_needs_weaker_evidence(scores: dict[str, float], verdict: str | None) -> None:
    segments = _segments(("That is all for today.", SPEECH), (" Thank you.", scores))
    assert segment_verdicts(segments) == [None, verdict]
    # the same weak evidence mid-recording is not enough
    middle = _segments(("That is all.", SPEECH), (" Thank you.", scores), ("Questions?", SPEECH))
    assert segment_verdicts(middle)[1] is None


def test_every_trailing_stock_phrase_counts_as_trailing() -> None:
    segments = _segments(
        ("The end of the talk.", SPEECH), (" Thank you.", WEAK), (" Thanks for watching!", WEAK)
    )
    assert segment_verdicts(segments) == [None, HALLUCINATION, HALLUCINATION]


def test_real_speech_over_low_confidence_is_kept() -> None:
    segments = _segments(("The quarterly numbers look fine.", SILENCE))
    assert segment_verdicts(segments) == [None]


def test_duplicated_segments_are_dropped() -> None:
    line = " Ask what you can do for your country."
    segments = _segments(
        ("And so my fellow Americans,", SPEECH), (line, SPEECH), (line, SPEECH), (line.upper(), SPEECH)
    )
    assert segment_verdicts(segments) == [None, None, DUPLICATE, DUPLICATE]


def test_short_repeats_are_speech_unless_silent() -> None:
    segments = _segments(("No.", SPEECH), ("No.", SPEECH), ("Stop it.", SPEECH), ("Stop it.", SILENCE))
    assert segment_verdicts(segments) == [None, None, None, DUPLICATE]


def test_duplicates_compare_with_the_last_kept_segment() -> None:
    line = "We will meet again tomorrow."
    segments = _segments((line, SPEECH), (" Thank you.", SILENCE), (line, SPEECH), ("", {}), (line, SPEECH))
    assert segment_verdicts(segments) == [None, HALLUCINATION, DUPLICATE, None, DUPLICATE]


def test_repeats_far_apart_are_kept() -> None:
    line = "Let me say that again."
    segments = _segments((line, SPEECH), ("Something else here.", SPEECH), (line, SPEECH))
    assert segment_verdicts(segments) == [None, None, None]
