"""Sentence casing: raises letters at sentence starts and the English pronoun, never lowers any."""

from __future__ import annotations

import pytest

from escriba.correction.casing import casing_changes, ends_sentence
from escriba.correction.edits import apply_changes


def _case(text: str, *, starts: bool = True, language: str = "en", keep: frozenset[str] = frozenset()) -> str:
    return apply_changes(text, casing_changes(text, starts_sentence=starts, language=language, keep=keep))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world. how are you? fine! ok", "Hello world. How are you? Fine! Ok"),
        ("i think i'm right and i've said so", "I think I'm right and I've said so"),
        ("so i. and i, then", "So I. And I, then"),
        ('he said. "yes, fine."', 'He said. "Yes, fine."'),
        ("¿qué? bien", "¿Qué? Bien"),
        ("ask mr. smith and dr. jones", "Ask mr. smith and dr. jones"),
        ("e.g. this and i.e. that", "E.g. this and i.e. that"),
        ("in the U.S. today", "In the U.S. today"),
        ("at 10 a.m. we met", "At 10 a.m. we met"),
        ("wait... then", "Wait... Then"),
        ("NASA and iPhone. macOS", "NASA and iPhone. MacOS"),
        ("ok. 42 is the answer", "Ok. 42 is the answer"),
        ("pi is irrational", "Pi is irrational"),
        ("", ""),
    ],
)
def test_sentence_casing(text: str, expected: str) -> None:
    assert _case(text) == expected


def test_a_segment_continuing_a_sentence_keeps_its_first_letter() -> None:
    assert _case("ask what you can do", starts=False) == "ask what you can do"
    assert _case("ask what you can do", starts=True) == "Ask what you can do"


def test_pronoun_only_in_english() -> None:
    assert _case("dann i und so", language="de") == "Dann i und so"
    assert _case("and i said", language="en-GB") == "And I said"
    assert _case("and i said", language="") == "And I said"


def test_glossary_words_with_a_lower_case_first_letter_are_kept() -> None:
    keep = frozenset({"iPhone", "kubectl"})
    assert _case("iPhone sales. kubectl works. fine", keep=keep) == "iPhone sales. kubectl works. Fine"


@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("the end.", True),
        ("really?", True),
        ('he said "stop!"', True),
        ("ask not what your country can do for you,", False),
        ("said mr.", False),
        ("in the U.S.", False),
        ("", False),
    ],
)
def test_ends_sentence(text: str, ends: bool) -> None:
    assert ends_sentence(text) is ends
