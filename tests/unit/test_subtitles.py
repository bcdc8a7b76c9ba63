"""SRT and WebVTT cues: readable lengths and timings, breaks where the speech breaks, no word lost."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escriba.subtitles import LONG_PAUSE_S, MAX_LINE_CHARS, MAX_LINES, MIN_CUE_S, Cue, cues, to_srt, to_vtt
from escriba.transcript import Segment, Word


def _segment(text: str, start: float, end: float, words: tuple[Word, ...] = ()) -> Segment:
    return Segment(id=0, start_s=start, end_s=end, text=text, words=words)


def _spoken(
    text: str, *, start_s: float = 0.0, step_s: float = 0.3, pauses: dict[int, float] | None = None
) -> Segment:
    """A segment of ``text`` with a word every ``step_s``; ``pauses[i]`` adds silence before word i."""
    words, at = [], start_s
    for index, token in enumerate(text.split()):
        at += (pauses or {}).get(index, 0.0)
        words.append(Word(at, at + step_s - 0.05, " " + token))
        at += step_s
    return _segment(" " + text, words[0].start_s, words[-1].end_s, tuple(words))


def _texts(result: list[Cue]) -> list[str]:
    return [" ".join(c.text.split()) for c in result]


def _assert_readable(result: list[Cue]) -> None:
    for cue in result:
        lines = cue.text.split("\n")
        assert 1 <= len(lines) <= MAX_LINES, cue
        assert all(line and (len(line) <= MAX_LINE_CHARS or " " not in line) for line in lines), cue


# --- SRT and VTT formatting ---------------------------------------------------------------------------

_SRT_BLOCK = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n((?:[^\n]+\n){1,2})")
_VTT_BLOCK = re.compile(r"(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n((?:[^\n]+\n){1,2})")


def _seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def test_srt_numbering_and_timestamps() -> None:
    srt = to_srt([_segment(" Hello there.", 0.0, 1.5), _segment(" General Kenobi.", 3661.25, 3662.0)])
    # The second cue is shown MIN_CUE_S although it was said in 0.75 s.
    assert srt == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n01:01:01,250 --> 01:01:02,250\nGeneral Kenobi.\n"
    )


def test_vtt_header_and_dot_separator() -> None:
    vtt = to_vtt([_segment("Hi", 1.0, 2.0)])
    assert vtt.startswith("WEBVTT\n\n")
    assert "00:00:01.000 --> 00:00:02.000\nHi\n" in vtt


def test_srt_and_vtt_of_a_long_transcript_parse_block_by_block() -> None:
    segments = [
        _spoken("So this is where it all began, a long time ago in a small town by the sea."),
        _spoken("Nobody thought much of it at first, but word spread fast.", start_s=6.0),
        _segment(" Without any word timings at all this segment shares its time by length alone.", 9.0, 14.0),
        _segment(" " + " ".join(["lorem ipsum dolor sit amet."] * 8), 15.0, 35.0),
    ]
    expected = cues(segments)
    assert len(expected) > 5

    srt = to_srt(segments)
    blocks = srt.split("\n\n")
    assert len(blocks) == len(expected)
    previous_end = 0.0
    for number, (block, cue) in enumerate(zip(blocks, expected, strict=True), start=1):
        match = _SRT_BLOCK.fullmatch(block if block.endswith("\n") else block + "\n")
        assert match, block
        assert int(match[1]) == number
        start, end = _seconds(match[2]), _seconds(match[3])
        assert previous_end <= start < end
        assert match[4] == cue.text + "\n"
        previous_end = end

    vtt = to_vtt(segments)
    assert vtt.startswith("WEBVTT\n\n")
    vtt_blocks = vtt.removeprefix("WEBVTT\n\n").split("\n\n")
    assert len(vtt_blocks) == len(expected)
    for block, cue in zip(vtt_blocks, expected, strict=True):
        match = _VTT_BLOCK.fullmatch(block if block.endswith("\n") else block + "\n")
        assert match, block
        assert abs(_seconds(match[1]) - cue.start_s) < 0.001 and abs(_seconds(match[2]) - cue.end_s) < 0.001
        assert match[3] == cue.text + "\n"


def test_empty_segments_dropped() -> None:
    assert to_srt([_segment("   ", 0, 1)]) == ""
    assert to_vtt([_segment("", 0, 1)]) == "WEBVTT\n\n"


# --- Lengths ------------------------------------------------------------------------------------------


def test_long_segment_split_on_word_timings() -> None:
    tokens = [f"word{i}" for i in range(40)]
    words = tuple(Word(start_s=i * 0.5, end_s=i * 0.5 + 0.4, word=f" {t}") for i, t in enumerate(tokens))
    result = cues([_segment(" ".join(tokens), 0.0, 20.0, words)])
    assert len(result) > 1
    assert result[0].start_s == 0.0 and result[-1].end_s == words[-1].end_s
    _assert_readable(result)
    assert " ".join(_texts(result)) == " ".join(tokens)
    # Each cue is timed by its own words.
    first_count = len(result[0].text.split())
    assert result[0].end_s == words[first_count - 1].end_s
    assert result[1].start_s == words[first_count].start_s


def test_long_segment_without_words_shares_time() -> None:
    text = " ".join(["lorem"] * 60)
    result = cues([_segment(text, 10.0, 40.0)])
    assert len(result) > 1
    assert result[0].start_s == 10.0 and result[-1].end_s == 40.0
    _assert_readable(result)
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in itertools.pairwise(result))
    # By length: a cue's share of the time is its share of the characters.
    for cue in result:
        assert abs((cue.end_s - cue.start_s) / 30.0 - len(" ".join(cue.text.split())) / len(text)) < 0.01


def test_lines_are_at_most_42_characters_and_cues_two_lines() -> None:
    text = (
        "Typography is the art and technique of arranging type to make written language legible, "
        "readable and appealing when displayed, and the arrangement of type involves selecting typefaces, "
        "point sizes, line lengths, line spacing and letter spacing"
    )
    result = cues([_spoken(text)])
    _assert_readable(result)
    assert max(len(line) for c in result for line in c.text.split("\n")) <= 42
    assert any(c.text.count("\n") == 1 for c in result)


def test_a_word_longer_than_a_line_gets_a_line_of_its_own() -> None:
    url = "https://example.com/a/very/long/path/that/does/not/fit/on/one/line"
    result = cues([_spoken(f"Go to {url} for the details.")])
    _assert_readable(result)
    assert url in [line for c in result for line in c.text.split("\n")]
    assert " ".join(_texts(result)) == f"Go to {url} for the details."


def test_line_break_balances_the_two_lines() -> None:
    # 61 characters: a greedy wrap would give 42 + 18.
    result = cues([_spoken("the quick brown fox jumps over the lazy dog and runs far away")])
    assert len(result) == 1
    top, bottom = result[0].text.split("\n")
    assert abs(len(top) - len(bottom)) <= 6


def test_line_break_prefers_punctuation() -> None:
    result = cues([_spoken("When the rain finally stopped, we all went outside to play")])
    assert result[0].text.split("\n") == ["When the rain finally stopped,", "we all went outside to play"]
    # Lines of 22 and 33 after the comma beat the 29 and 26 of "back, please / bring ...".
    result = cues([_spoken("If you ever come back, please bring the old map with you")])
    assert result[0].text.split("\n") == ["If you ever come back,", "please bring the old map with you"]


def test_text_fitting_one_line_stays_on_one_line() -> None:
    assert cues([_spoken("Short and sweet.")])[0].text == "Short and sweet."


# --- Timing -------------------------------------------------------------------------------------------


def test_short_cue_is_shown_at_least_the_minimum() -> None:
    result = cues([_segment(" Hi.", 0.0, 0.3), _segment(" Welcome back.", 5.0, 6.5)])
    assert result[0].end_s == MIN_CUE_S
    assert result[1].start_s == 5.0


def test_short_cue_is_not_extended_past_the_next_cue() -> None:
    result = cues([_segment(" Hi.", 0.0, 0.3), _segment(" Welcome back.", 0.6, 2.0)])
    assert result[0].end_s == 0.6
    assert result[1].start_s == 0.6


def test_last_cue_is_extended_too() -> None:
    assert cues([_segment(" Yes.", 4.0, 4.2)])[0].end_s == 4.0 + MIN_CUE_S


def test_cues_do_not_overlap_even_when_segments_do() -> None:
    result = cues(
        [
            _segment(" First one.", 0.0, 2.0),
            _segment(" Second one.", 1.5, 3.0),
            _segment(" Out of order.", 1.0, 1.2),
        ]
    )
    assert _texts(result) == ["First one.", "Second one.", "Out of order."]
    assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(result))
    assert all(c.start_s <= c.end_s for c in result)
    assert result[0].end_s == 1.5  # ends when the next is spoken rather than hiding it


def test_a_long_silence_always_ends_a_cue() -> None:
    # Short enough for one cue, but nobody speaks for 2 s in the middle.
    segment = _spoken("I was thinking about it and then I decided", pauses={5: 2.0})
    result = cues([segment])
    assert _texts(result) == ["I was thinking about it", "and then I decided"]
    assert result[0].end_s <= segment.words[5].start_s


def test_a_pause_under_the_limit_keeps_a_short_cue_whole() -> None:
    assert len(cues([_spoken("Well I suppose that is fine", pauses={2: 1.0})])) == 1


# --- Breaks -------------------------------------------------------------------------------------------


def test_break_after_sentence_end_preferred() -> None:
    text = "This is the first sentence here. And this is the second one which is longer than the first."
    assert len(text) > 2 * MAX_LINE_CHARS
    result = cues([_spoken(text)])
    assert _texts(result) == [
        "This is the first sentence here.",
        "And this is the second one which is longer than the first.",
    ]


def test_break_after_sentence_end_preferred_without_word_timings() -> None:
    text = "This is the first sentence here. And this is the second one which is longer than the first."
    result = cues([_segment(text, 0.0, 6.0)])
    assert _texts(result)[0] == "This is the first sentence here."


def test_break_after_sentence_end_beats_a_comma() -> None:
    text = "Right, so we left at dawn. The road was long and dusty and the car was old and slow."
    assert _texts(cues([_spoken(text)]))[0] == "Right, so we left at dawn."


def test_break_after_clause_preferred_over_length() -> None:
    text = "We went down to the river and looked at the boats for a while, then we walked home slowly."
    result = cues([_spoken(text)])
    assert _texts(result) == [
        "We went down to the river and looked at the boats for a while,",
        "then we walked home slowly.",
    ]


def test_break_at_the_longest_pause_without_punctuation() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    assert len(text) > 2 * MAX_LINE_CHARS
    # Two pauses, both under LONG_PAUSE_S: the longer wins.
    result = cues([_spoken(text, pauses={4: 0.6, 9: 0.9})])
    assert _texts(result) == [
        "one two three four five six seven eight nine",
        "ten eleven twelve thirteen fourteen fifteen",
    ]
    result = cues([_spoken(text, pauses={4: 0.9, 9: 0.6})])
    assert _texts(result)[0] == "one two three four"


def test_a_strong_pause_beats_length() -> None:
    text = "aa bb cc dd ee ff gg hh ii jj kk ll mm nn oo pp qq rr ss tt uu vv ww xx yy zz ab cd ef gh ij"
    assert len(text) > 2 * MAX_LINE_CHARS
    result = cues([_spoken(text, pauses={7: 0.7})])
    assert _texts(result)[0] == "aa bb cc dd ee ff gg"


@pytest.mark.parametrize("pause", [0.0, 1.0], ids=["even", "pause-before-last-word"])
def test_no_orphan_word_at_a_sentence_end(pause: float) -> None:
    # 83 characters then "end.": filling cues greedily leaves the last word of the sentence alone, and
    # so does breaking at the pause before it; a word is pulled back to keep it company instead.
    text = " ".join(["abcde"] * 14) + " end."
    result = cues([_spoken(text, pauses={14: pause})])
    _assert_readable(result)
    assert " ".join(_texts(result)) == text
    assert all(len(c.text.split()) >= 2 for c in result), _texts(result)


def test_orphan_stays_with_its_sentence_when_it_fits() -> None:
    # A comma and a 1.2 s pause before the last word, yet the sentence fits one cue: "too." stays.
    text = "and the people who came from far away were all glad to be there, too."
    result = cues([_spoken(text, pauses={14: 1.2})])
    assert _texts(result) == [text]
    assert result[0].text.count("\n") == 1


def test_orphan_at_sentence_end_pulls_a_word_back() -> None:
    # Three full cues' worth then one word: some cue gives a word to the last.
    text = " ".join(["abcde"] * 42) + " end."
    result = cues([_spoken(text, step_s=0.15)])
    _assert_readable(result)
    assert " ".join(_texts(result)) == text
    assert len(result[-1].text.split()) >= 2


def test_a_one_word_sentence_is_its_own_segment_and_cue() -> None:
    result = cues([_spoken("Yes."), _spoken("I think that is right.", start_s=3.0)])
    assert _texts(result) == ["Yes.", "I think that is right."]


def test_words_that_do_not_match_the_text_are_not_used() -> None:
    words = (Word(0.0, 0.5, " Helo"), Word(3.0, 3.5, " wrld"))
    result = cues([_segment(" Hello world.", 0.0, 4.0, words)])
    assert _texts(result) == ["Hello world."]
    assert (result[0].start_s, result[0].end_s) == (0.0, 4.0)


# --- Nothing lost -------------------------------------------------------------------------------------

_token = st.one_of(
    st.text("abcdefghij", min_size=1, max_size=12).flatmap(
        lambda w: st.sampled_from([w, w + ".", w + ",", w + "?", w + ";", w + '."'])
    ),
    st.text("xyz", min_size=40, max_size=60),  # longer than a line
)
_word = st.tuples(_token, st.floats(0.0, 2.5), st.floats(0.0, 1.2))  # (text, pause before, duration)
_segment_spec = st.tuples(
    st.lists(_word, min_size=1, max_size=60),
    st.floats(-1.0, 3.0),  # offset from the previous segment's end (negative: overlap)
    st.sampled_from(["words", "none", "mismatch"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_segment_spec, max_size=6))
def test_every_word_lands_in_exactly_one_cue_in_order(
    specs: list[tuple[list[tuple[str, float, float]], float, str]],
) -> None:
    segments: list[Segment] = []
    # Per token: its segment, and its (start, end) where the cues are timed by the words.
    tokens: list[tuple[int, tuple[float, float] | None]] = []
    at = 0.0
    for index, (spec, offset, kind) in enumerate(specs):
        at = max(0.0, at + offset)
        words = []
        for text, pause, duration in spec:
            at += pause
            words.append(Word(at, at + duration, " " + text))
            at += duration
        text = "".join(w.word for w in words)
        if kind == "words":
            segments.append(Segment(index, words[0].start_s, words[-1].end_s, text, tuple(words)))
            tokens.extend((index, (w.start_s, w.end_s)) for w in words)
        else:
            extra = (Word(0.0, 0.1, " extra"),) if kind == "mismatch" else ()
            segments.append(Segment(index, words[0].start_s, at, text, tuple(words[1:]) + extra))
            tokens.extend((index, None) for _ in words)

    result = cues(segments)

    expected = [t for s in segments for t in s.text.split()]
    assert [t for c in result for t in c.text.split()] == expected
    _assert_readable(result)
    for cue in result:
        assert cue.start_s <= cue.end_s
    for a, b in itertools.pairwise(result):
        assert a.end_s <= b.start_s
        assert a.end_s - a.start_s >= min(MIN_CUE_S, b.start_s - a.start_s) - 1e-9
    if result:
        assert result[-1].end_s - result[-1].start_s >= MIN_CUE_S - 1e-9
    # No cue holds words of two segments, nor a long silence.
    position = 0
    for cue in result:
        count = len(cue.text.split())
        held = tokens[position : position + count]
        position += count
        assert len({segment for segment, _ in held}) == 1
        times = [span for _, span in held if span is not None]
        for (_, end), (start, _) in itertools.pairwise(times):
            assert start - end < LONG_PAUSE_S
