"""Spacing and punctuation: table-driven, plus the invariants every rule's changes must keep."""

from __future__ import annotations

import pytest

from escriba.correction.edits import Change, apply_changes
from escriba.correction.spacing import spacing_changes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello   world", "hello world"),
        ("  hello world  ", "hello world"),
        ("hello\t\nworld", "hello world"),
        ("hello , world", "hello, world"),
        ("hello ,world", "hello, world"),
        ("yes,sir", "yes, sir"),
        ("one;two", "one; two"),
        ("really ?", "really?"),
        ("stop !", "stop!"),
        ("the end .", "the end."),
        ("wait ... what", "wait... what"),
        ("note : this", "note: this"),
        ("end.The next", "end. The next"),
        ("first,,second", "first, second"),
        ("said ,, then", "said, then"),
        ('he said "no" .', 'he said "no".'),
        # left alone: numbers, abbreviations, addresses, terms that start with punctuation
        ("1,000 people", "1,000 people"),
        ("version 3.5 now", "version 3.5 now"),
        ("at 10:30 today", "at 10:30 today"),
        ("the U.S. Army", "the U.S. Army"),
        ("visit example.com today", "visit example.com today"),
        ("we use .NET daily", "we use .NET daily"),
        ("about .5 percent", "about .5 percent"),
        ("already clean, fine.", "already clean, fine."),
        ("", ""),
    ],
)
def test_spacing(text: str, expected: str) -> None:
    assert apply_changes(text, spacing_changes(text, "en")) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Vraiment ?", "Vraiment ?"),
        ("Attention : ceci", "Attention : ceci"),
        ("Bonjour , monde .", "Bonjour, monde."),
    ],
)
def test_french_keeps_its_space_before_high_punctuation(text: str, expected: str) -> None:
    assert apply_changes(text, spacing_changes(text, "fr")) == expected


def test_changes_are_sorted_disjoint_and_real() -> None:
    text = "  a  , b,,c ;d .  e  "
    changes = spacing_changes(text, "en")
    ends = [0]
    for change in changes:
        assert change.start >= ends[-1]
        assert text[change.start : change.end] != change.replacement
        ends.append(change.end)


def test_apply_changes_refuses_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        apply_changes("abcdef", [Change(0, 3, "x"), Change(2, 4, "y")])
