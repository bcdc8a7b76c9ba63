"""The engine end to end: edits replay to the result, segments and text agree, limits and options hold."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escriba.common.errors import InvalidInputError, LimitExceededError
from escriba.common.settings import SettingsError, load
from escriba.correction import (
    RULES_VERSION,
    CorrectionOptions,
    CorrectionSettings,
    Corrector,
    InvalidLanguageError,
    TextSegmentsMismatchError,
    TextTooLongError,
    TooManySegmentsError,
    spelling,
)
from escriba.correction.glossary import compile_glossary
from escriba.transcript import Edit, GlossaryEntry, Segment, Word
from tests.support.text import JFK_REFERENCE

GLOSSARY = (
    GlossaryEntry("ComfyUI", ("comfy ui", "comfy you eye")),
    GlossaryEntry("Kubernetes", ("cooper netties",)),
)
SPEECH = {"no_speech_prob": 0.02, "avg_logprob": -0.25}


def _words(text: str, start_s: float) -> tuple[Word, ...]:
    return tuple(
        Word(start_s + 0.5 * n, start_s + 0.5 * n + 0.4, " " + w, 0.9) for n, w in enumerate(text.split())
    )


def _segment(n: int, text: str, **scores: Any) -> Segment:
    return Segment(n, 3.0 * n, 3.0 * n + 3.0, text, _words(text, 3.0 * n), **scores)


def _jfk_like() -> list[Segment]:
    return [
        _segment(0, " and so my fellow  Americans ,", **SPEECH),
        _segment(1, " ask not what your country can do for you,", **SPEECH),
        _segment(2, " ask what you can do for your country.", **SPEECH),
        _segment(3, " ask what you can do for your country.", **SPEECH),
        _segment(
            4,
            " we run comfy you eye on cooper netties. i think it works works works works works.",
            **SPEECH,
            compression_ratio=2.6,  # the decoder's own score calls it a loop
        ),
        _segment(5, " Thank you.", no_speech_prob=0.9, avg_logprob=-0.3),
    ]


def replay(segments: Sequence[Segment], edits: Sequence[Edit]) -> dict[int, str]:
    """Re-apply the reported edits, rule by rule, to the stripped inputs (independently of the engine)."""
    texts = {s.id: s.text.strip() for s in segments}
    for (segment_id, _rule), group in itertools.groupby(edits, key=lambda e: (e.segment_id, e.rule)):
        text = texts[segment_id]
        for edit in sorted(group, key=lambda e: e.offset, reverse=True):
            assert text[edit.offset : edit.offset + len(edit.original)] == edit.original, edit
            text = text[: edit.offset] + edit.replacement + text[edit.offset + len(edit.original) :]
        texts[segment_id] = text
    return texts


def test_corrects_segments_and_reports_every_edit() -> None:
    segments = _jfk_like()
    result = Corrector().correct("", segments, CorrectionOptions(glossary=GLOSSARY))
    assert result.rules_version == RULES_VERSION
    assert result.text == f"{JFK_REFERENCE} We run ComfyUI on Kubernetes. I think it works."
    assert [s.id for s in result.segments] == [0, 1, 2, 4]
    rules = {(e.rule, e.segment_id) for e in result.edits}
    assert {("duplicate", 3), ("hallucination", 5), ("glossary", 4), ("repetition", 4)} <= rules
    assert {("spacing", 0), ("casing", 0), ("casing", 4)} <= rules


def test_repeated_words_the_decoder_did_not_loop_on_are_kept() -> None:
    """People say "word, word, word, word, word": with scores that show no loop (Whisper's compression
    ratio under 2.4) the repetition is speech, and only a looping decoder's is collapsed."""
    text = " here's some more word, word, word, word, word."
    spoken = _segment(0, text, **SPEECH, compression_ratio=1.6)
    looped = _segment(0, text, **SPEECH, compression_ratio=2.9)
    kept = Corrector().correct("", [spoken])
    assert kept.text == "Here's some more word, word, word, word, word."
    assert not [e for e in kept.edits if e.rule == "repetition"]
    collapsed = Corrector().correct("", [looped])
    assert collapsed.text == "Here's some more word."
    assert [e.rule for e in collapsed.edits if e.rule == "repetition"] == ["repetition"]
    # Plain text without scores is judged by the text alone, as before.
    assert Corrector().correct(text).text == "Here's some more word."


def test_edits_replay_to_the_result() -> None:
    segments = _jfk_like()
    result = Corrector().correct("", segments, CorrectionOptions(glossary=GLOSSARY))
    replayed = replay(segments, result.edits)
    kept = {s.id: s.text for s in result.segments}
    for segment in segments:
        assert replayed[segment.id] == kept.get(segment.id, "")


def test_text_only() -> None:
    text = "  so comfy ui   is great , really.   i agree agree agree agree agree "
    result = Corrector().correct(text, (), CorrectionOptions(glossary=GLOSSARY))
    assert result.text == "So ComfyUI is great, really. I agree"
    assert result.segments == ()
    assert {e.segment_id for e in result.edits} == {-1}
    assert replay([Segment(-1, 0, 0, text)], result.edits)[-1] == result.text


def test_text_only_never_drops_stock_phrases() -> None:
    assert Corrector().correct("Thank you.").text == "Thank you."


def test_segments_and_text_agree() -> None:
    result = Corrector().correct("", _jfk_like(), CorrectionOptions(glossary=GLOSSARY))
    assert result.text == " ".join(s.text for s in result.segments if s.text)
    for segment in result.segments:
        assert segment.text == segment.text.strip()
        assert "".join(w.word for w in segment.words).strip() == segment.text


def test_words_follow_the_corrections() -> None:
    segment = _segment(
        0, " we run comfy you eye today today today today today", **SPEECH, compression_ratio=2.6
    )
    (out,) = Corrector().correct("", [segment], CorrectionOptions(glossary=GLOSSARY)).segments
    assert [w.word for w in out.words] == [" We", " run", " ComfyUI", " today"]
    comfy = out.words[2]
    assert (comfy.start_s, comfy.end_s) == (segment.words[2].start_s, segment.words[4].end_s)
    # the timing comes from the loop's first copy: that one was spoken, the rest is the decoder looping
    assert out.words[3] == segment.words[5]
    unchanged = _segment(1, "Already fine.", **SPEECH)
    (same,) = Corrector().correct("", [unchanged]).segments
    assert same.words == unchanged.words


def test_casing_follows_sentences_across_segments() -> None:
    segments = [_segment(0, " ask not what", **SPEECH), _segment(1, " your country can do.", **SPEECH)]
    segments.append(_segment(2, " and then", **SPEECH))
    result = Corrector().correct("", segments)
    assert [s.text for s in result.segments] == ["Ask not what", "your country can do.", "And then"]


def test_switches_turn_rules_off() -> None:
    segments = _jfk_like()
    options = CorrectionOptions(remove_hallucinations=False, fix_casing=False)
    result = Corrector().correct("", segments, options)
    assert [s.id for s in result.segments] == [0, 1, 2, 3, 4, 5]
    assert {e.rule for e in result.edits} == {"spacing"}


def test_matching_text_is_accepted_and_a_different_one_refused() -> None:
    segments = _jfk_like()
    joined = "".join(s.text for s in segments)
    assert Corrector().correct(joined, segments).text == Corrector().correct("", segments).text
    with pytest.raises(TextSegmentsMismatchError) as caught:
        Corrector().correct("something else entirely", segments)
    assert isinstance(caught.value, InvalidInputError)


def test_empty_input() -> None:
    result = Corrector().correct("")
    assert (result.text, result.segments, result.edits) == ("", (), ())


@pytest.mark.timeout(60)
def test_deterministic_and_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    # Start with no dictionary loaded so the threads race to load it.
    monkeypatch.setattr(spelling, "_checker", None)
    spelling.suggestion.cache_clear()
    compile_glossary.cache_clear()
    corrector = Corrector()
    options = CorrectionOptions(glossary=GLOSSARY, spelling=True)
    inputs = [
        _jfk_like(),
        [_segment(0, " we recieve comfy ui")],
        [_segment(0, " the the the the the the end")],
    ]

    def run(index: int) -> tuple[str, tuple[Edit, ...]]:
        result = corrector.correct("", inputs[index % len(inputs)], options)
        return result.text, result.edits

    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(run, range(48)))
    serial = [run(i) for i in range(48)]
    assert parallel == serial


def test_limits() -> None:
    small = Corrector(CorrectionSettings(max_text_chars=20, max_segments=2))
    with pytest.raises(TextTooLongError) as too_long:
        small.correct("x" * 21)
    assert isinstance(too_long.value, LimitExceededError)
    assert "ESCRIBA_CORRECTION_MAX_TEXT_CHARS" in str(too_long.value)
    with pytest.raises(TextTooLongError):
        small.correct("", [_segment(0, "x" * 15), _segment(1, "y" * 15)])
    with pytest.raises(TooManySegmentsError):
        small.correct("", [_segment(n, "x") for n in range(3)])
    assert small.correct("x" * 20).text == "X" + "x" * 19


@pytest.mark.parametrize("language", ["english", "e", "en_us!", "12"])
def test_bad_language_is_refused(language: str) -> None:
    with pytest.raises(InvalidLanguageError):
        Corrector().correct("hello", options=CorrectionOptions(language=language))


def test_options_resolve_to_a_canonical_form() -> None:
    corrector = Corrector(CorrectionSettings(spelling=True))
    resolved = corrector.resolve(
        CorrectionOptions(language=" EN_us ", glossary=(GlossaryEntry(" Comfy  UI ", ("comfy you eye",)),))
    )
    assert resolved.spelling is True
    assert resolved.language == "en-us"
    assert resolved.glossary == (GlossaryEntry("Comfy UI", ("comfy you eye",)),)


def test_cache_key() -> None:
    corrector = Corrector()
    segments = _jfk_like()
    key = corrector.cache_key("", segments, CorrectionOptions())
    assert key == Corrector().cache_key("", list(segments), None)
    assert key == corrector.cache_key("", segments, CorrectionOptions(spelling=False, language=""))
    assert key != corrector.cache_key("", segments, CorrectionOptions(spelling=True))
    assert key != corrector.cache_key("", segments[:-1], CorrectionOptions())
    assert key != corrector.cache_key("", segments, CorrectionOptions(glossary=GLOSSARY))
    assert key != Corrector(CorrectionSettings(spelling=True)).cache_key("", segments)


def test_settings_from_environment() -> None:
    assert load(CorrectionSettings, {}) == CorrectionSettings()
    assert CorrectionSettings().spelling is False
    loaded = load(
        CorrectionSettings,
        {"ESCRIBA_CORRECTION_SPELLING": "true", "ESCRIBA_CORRECTION_MAX_GLOSSARY_ENTRIES": "7"},
    )
    assert (loaded.spelling, loaded.max_glossary_entries) == (True, 7)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ESCRIBA_CORRECTION_SPELLING", "maybe"),
        ("ESCRIBA_CORRECTION_MAX_TEXT_CHARS", "0"),
        ("ESCRIBA_CORRECTION_MAX_SEGMENTS", "many"),
        ("ESCRIBA_CORRECTION_MAX_GLOSSARY_ENTRIES", "-1"),
        ("ESCRIBA_CORRECTION_MAX_GLOSSARY_ALIASES", "0"),
        ("ESCRIBA_CORRECTION_MAX_GLOSSARY_PHRASE_CHARS", "5000"),
    ],
)
def test_bad_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(CorrectionSettings, {variable: value})
    assert caught.value.variable == variable


_VOCABULARY = ["the", "comfy", "ui", "you", "eye", "i", "think", "cooper", "netties", "go", "Thank", "end"]
_GLUE = [" ", "  ", " , ", ",", ". ", " ? ", "! ", "\t", " ... ", "-"]


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from(_VOCABULARY), st.sampled_from(_GLUE)), max_size=25),
        min_size=1,
        max_size=5,
    )
)
def test_edits_always_replay(parts: list[list[tuple[str, str]]]) -> None:
    segments = [
        _segment(n, "".join(word + glue for word, glue in pieces), **SPEECH) for n, pieces in enumerate(parts)
    ]
    corrector = Corrector()
    result = corrector.correct("", segments, CorrectionOptions(glossary=GLOSSARY))
    replayed = replay(segments, result.edits)
    kept = {s.id: s.text for s in result.segments}
    assert {i: t for i, t in replayed.items() if i in kept} == kept
    assert all(replayed[s.id] == "" for s in segments if s.id not in kept)
    assert result.text == " ".join(t for t in kept.values() if t)
    assert corrector.correct("", segments, CorrectionOptions(glossary=GLOSSARY)) == result


def test_english_only_rules_say_so_on_other_languages() -> None:
    corrector = Corrector()
    english = corrector.correct("hello there. i think so.", (), CorrectionOptions(spelling=True))
    assert english.notes == ()
    japanese = corrector.correct("こんにちは", (), CorrectionOptions(spelling=True, language="ja"))
    assert [note.split(":")[0] for note in japanese.notes] == ["spelling", "casing"]
    assert all("'ja'" in note for note in japanese.notes)
