"""Optional offline spelling correction: off by default, English only, never touching names or terms."""

from __future__ import annotations

import pytest

from escriba.correction import CorrectionOptions, CorrectionSettings, Corrector
from escriba.correction.edits import apply_changes
from escriba.correction.spelling import spelling_changes, suggestion, supports
from escriba.transcript import GlossaryEntry

pytest.importorskip("spellchecker")

TEXT = "we recieve a wierd sentense"


def _spell(text: str, protected: frozenset[str] = frozenset()) -> str:
    return apply_changes(text, spelling_changes(text, protected))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("we recieve a wierd sentense", "we receive a weird sentence"),
        ("see you tomorow", "see you tomorrow"),
        ("the teh", "the the"),
        ("hte", "the"),
        # untouched: known words, short words, capitalised words (names), numbers, contractions, compounds
        ("a perfectly fine sentence", "a perfectly fine sentence"),
        ("xa qz", "xa qz"),
        ("Recieve Wierd", "Recieve Wierd"),
        ("route 66b and 3rd", "route 66b and 3rd"),
        ("it doesn't matter", "it doesn't matter"),
        ("a well-knwn fact", "a well-knwn fact"),
        ("zxqvwk", "zxqvwk"),  # nothing close: left alone
    ],
)
def test_spelling(text: str, expected: str) -> None:
    assert _spell(text) == expected


def test_protected_words_are_never_changed() -> None:
    assert _spell("run kubectl and recieve", frozenset({"kubectl", "recieve"})) == "run kubectl and recieve"


def test_suggestions_are_stable() -> None:
    assert suggestion("recieve") == suggestion("recieve") == "receive"
    assert suggestion("receive") is None


def test_only_american_english() -> None:
    assert supports("en") and supports("en-us") and supports("")
    assert not supports("fr") and not supports("en-gb")


def test_off_by_default() -> None:
    result = Corrector().correct(TEXT)
    assert "recieve" in result.text
    assert all(e.rule != "spelling" for e in result.edits)


def test_on_by_request_or_by_setting() -> None:
    by_request = Corrector().correct(TEXT, options=CorrectionOptions(spelling=True))
    by_setting = Corrector(CorrectionSettings(spelling=True)).correct(TEXT)
    assert by_request.text == by_setting.text == "We receive a weird sentence"
    assert [e.original for e in by_request.edits if e.rule == "spelling"] == ["recieve", "wierd", "sentense"]
    refused = Corrector(CorrectionSettings(spelling=True)).correct(
        TEXT, options=CorrectionOptions(spelling=False)
    )
    assert "recieve" in refused.text


def test_skipped_for_other_languages() -> None:
    result = Corrector().correct(
        "nous avons recieve", options=CorrectionOptions(spelling=True, language="fr")
    )
    assert result.text == "Nous avons recieve"


def test_glossary_terms_are_protected() -> None:
    options = CorrectionOptions(spelling=True, glossary=(GlossaryEntry("kubectl", ("cube control",)),))
    result = Corrector().correct("use cube control and kubectl to recieve", options=options)
    assert result.text == "Use kubectl and kubectl to receive"
