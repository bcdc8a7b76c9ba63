"""Repetition loops collapse to their last copy; ordinary repetition in speech is kept."""

from __future__ import annotations

import pytest

from escriba.correction.edits import apply_changes
from escriba.correction.repetition import min_repeats, repetition_changes


def _collapse(text: str) -> str:
    return apply_changes(text, repetition_changes(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the the the the the the the end", "the end"),
        ("I said no, no, no, no, no.", "I said no."),
        (
            "I'm going to go. I'm going to go. I'm going to go. I'm going to go. Bye",
            "I'm going to go. Bye",
        ),
        ("thank you thank you thank you thank you so much", "thank you so much"),
        (
            "we will meet at the station tomorrow we will meet at the station tomorrow "
            "we will meet at the station tomorrow",
            "we will meet at the station tomorrow",
        ),
        ("Ha ha ha ha ha ha ha ha ha ha!", "ha!"),
        (
            "one loop loop loop loop loop and another word word word word word end",
            "one loop and another word end",
        ),
    ],
)
def test_loops_collapse(text: str, expected: str) -> None:
    assert _collapse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "no no no, that's wrong",
        "it was very very very good",
        "thank you, thank you, thank you all",
        "I think I think I think so",
        "that that is is that that is not is not",
        "bye bye",
        "a b a b c",
        "",
    ],
)
def test_ordinary_repetition_is_speech(text: str) -> None:
    assert repetition_changes(text) == []


def test_thresholds_shrink_with_phrase_length() -> None:
    assert min_repeats(1) > min_repeats(2) >= min_repeats(5)


def test_loop_edit_is_the_removed_prefix() -> None:
    text = "go go go go go go now"
    (change,) = repetition_changes(text)
    assert text[change.start : change.end] == "go go go go go "
    assert change.replacement == ""
