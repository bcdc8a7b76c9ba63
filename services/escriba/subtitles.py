"""SRT and WebVTT renderings of a transcript's segments.

Pure functions over :class:`escriba.transcript.Segment`; the gateway stores the rendered text with the task
so clients download subtitles without re-deriving them. Long segments are split into cues of at most
``max_line_chars`` characters per line and two lines per cue, using word timestamps when present so each
cue's timing follows the words it shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from escriba.transcript import Segment, Word

MAX_LINE_CHARS = 42
MAX_LINES = 2


@dataclass(frozen=True, slots=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _wrap(words: Sequence[str], max_chars: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}".strip()
        if current and len(candidate) > max_chars:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _cues_for_segment(segment: Segment, max_chars: int) -> list[Cue]:
    text = " ".join(segment.text.split())
    if not text:
        return []
    if len(text) <= max_chars * MAX_LINES:
        return [Cue(segment.start_s, segment.end_s, "\n".join(_wrap(text.split(), max_chars)))]
    words: Sequence[Word] = segment.words
    if not words or " ".join(w.word.strip() for w in words) != text:
        # No word timings that match the (possibly corrected) text: share the segment's time by length.
        tokens = text.split()
        total = len(text)
        cues: list[Cue] = []
        start = segment.start_s
        chunk: list[str] = []
        for token in tokens:
            if chunk and len(" ".join([*chunk, token])) > max_chars * MAX_LINES:
                share = (segment.end_s - segment.start_s) * len(" ".join(chunk)) / total
                cues.append(Cue(start, start + share, "\n".join(_wrap(chunk, max_chars))))
                start += share
                chunk = []
            chunk.append(token)
        if chunk:
            cues.append(Cue(start, segment.end_s, "\n".join(_wrap(chunk, max_chars))))
        return cues
    cues = []
    group: list[Word] = []
    for word in words:
        joined = " ".join(w.word.strip() for w in [*group, word])
        if group and len(joined) > max_chars * MAX_LINES:
            cues.append(_cue_from_words(group, max_chars))
            group = []
        group.append(word)
    if group:
        cues.append(_cue_from_words(group, max_chars))
    return cues


def _cue_from_words(words: Sequence[Word], max_chars: int) -> Cue:
    tokens = [w.word.strip() for w in words]
    return Cue(words[0].start_s, words[-1].end_s, "\n".join(_wrap(tokens, max_chars)))


def cues(segments: Iterable[Segment], max_chars: int = MAX_LINE_CHARS) -> list[Cue]:
    out: list[Cue] = []
    for segment in segments:
        out.extend(_cues_for_segment(segment, max_chars))
    return out


def to_srt(segments: Iterable[Segment]) -> str:
    blocks = [
        f"{i}\n{_timestamp(c.start_s, ',')} --> {_timestamp(c.end_s, ',')}\n{c.text}\n"
        for i, c in enumerate(cues(segments), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Iterable[Segment]) -> str:
    blocks = [
        f"{_timestamp(c.start_s, '.')} --> {_timestamp(c.end_s, '.')}\n{c.text}\n" for c in cues(segments)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)
