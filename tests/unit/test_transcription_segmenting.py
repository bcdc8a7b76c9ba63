"""Segments cut from word timings: sentence-sized, in order, and never a word lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from escriba.transcription.segmenting import MAX_SEGMENT_S, PAUSE_BREAK_S, TimedWord, split_words


def timed(
    text: str, *, start_s: float = 0.0, step_s: float = 0.4, pauses: dict[int, float] | None = None
) -> list[TimedWord]:
    words, at = [], start_s
    for index, token in enumerate(text.split()):
        at += (pauses or {}).get(index, 0.0)
        words.append(TimedWord(" " + token, at, at + step_s - 0.05))
        at += step_s
    return words


def texts(groups: list[list[TimedWord]]) -> list[str]:
    return ["".join(w.text for w in g).strip() for g in groups]


def test_sentences_end_segments() -> None:
    words = timed(
        "And so my fellow Americans. Ask not what your country can do for you. Ask what you can do."
    )
    assert texts(split_words(words)) == [
        "And so my fellow Americans.",
        "Ask not what your country can do for you.",
        "Ask what you can do.",
    ]


def test_a_short_sentence_joins_the_next_unless_a_pause_follows() -> None:
    assert texts(split_words(timed("Yes. I think so."))) == ["Yes. I think so."]
    assert texts(split_words(timed("Yes. I think so.", pauses={1: PAUSE_BREAK_S}))) == ["Yes.", "I think so."]


def test_a_long_pause_ends_a_segment_mid_sentence() -> None:
    words = timed("the forms of printed letters should be beautiful", pauses={4: 1.5})
    assert texts(split_words(words)) == ["the forms of printed", "letters should be beautiful"]


def test_a_long_run_without_sentence_ends_is_split_at_a_clause() -> None:
    run = "one two three four five six seven eight nine ten, eleven twelve thirteen fourteen fifteen " * 3
    groups = split_words(timed(run.strip()))
    assert len(groups) > 1
    assert all(g[-1].end_s - g[0].start_s <= MAX_SEGMENT_S for g in groups)
    assert texts(groups)[0].endswith("ten,")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["word", "word.", "word,", "word?"]), st.floats(0.0, 3.0), st.floats(0.05, 2.0)
        ),
        max_size=80,
    )
)
def test_every_word_lands_in_one_segment_in_order(spec: list[tuple[str, float, float]]) -> None:
    words, at = [], 0.0
    for text, gap, length in spec:
        at += gap
        words.append(TimedWord(" " + text, at, at + length))
        at += length
    groups = split_words(words)
    assert [w for g in groups for w in g] == words
    assert all(groups)
    for group in groups:
        if len(group) > 1:
            assert group[-1].end_s - group[0].start_s <= MAX_SEGMENT_S
