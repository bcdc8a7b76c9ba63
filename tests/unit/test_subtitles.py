from __future__ import annotations

import itertools

from escriba.subtitles import cues, to_srt, to_vtt
from escriba.transcript import Segment, Word


def _segment(text: str, start: float, end: float, words: tuple[Word, ...] = ()) -> Segment:
    return Segment(id=0, start_s=start, end_s=end, text=text, words=words)


def test_srt_numbering_and_timestamps() -> None:
    srt = to_srt([_segment(" Hello there.", 0.0, 1.5), _segment(" General Kenobi.", 3661.25, 3662.0)])
    assert srt == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n01:01:01,250 --> 01:01:02,000\nGeneral Kenobi.\n"
    )


def test_vtt_header_and_dot_separator() -> None:
    vtt = to_vtt([_segment("Hi", 1.0, 2.0)])
    assert vtt.startswith("WEBVTT\n\n")
    assert "00:00:01.000 --> 00:00:02.000\nHi\n" in vtt


def test_long_segment_split_on_word_timings() -> None:
    tokens = [f"word{i}" for i in range(40)]
    words = tuple(Word(start_s=i * 0.5, end_s=i * 0.5 + 0.4, word=f" {t}") for i, t in enumerate(tokens))
    result = cues([_segment(" ".join(tokens), 0.0, 20.0, words)])
    assert len(result) > 1
    assert result[0].start_s == 0.0 and result[-1].end_s == words[-1].end_s
    assert all(len(line) <= 42 for c in result for line in c.text.split("\n"))
    assert all(len(c.text.split("\n")) <= 2 for c in result)
    assert " ".join(" ".join(c.text.split()) for c in result) == " ".join(tokens)


def test_long_segment_without_words_shares_time() -> None:
    text = " ".join(["lorem"] * 60)
    result = cues([_segment(text, 10.0, 40.0)])
    assert len(result) > 1
    assert result[0].start_s == 10.0 and result[-1].end_s == 40.0
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in itertools.pairwise(result))


def test_empty_segments_dropped() -> None:
    assert to_srt([_segment("   ", 0, 1)]) == ""
