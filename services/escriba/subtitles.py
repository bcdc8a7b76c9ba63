"""SRT and WebVTT renderings of a transcript's segments.

Pure functions over :class:`escriba.transcript.Segment`; the gateway stores the rendered text with the task
so clients download subtitles without re-deriving them.

Cues follow the conventions of professional subtitling (Netflix's timed-text style guide, for one), because
a reader sees a cue for a second or two and cannot scroll back:

* at most :data:`MAX_LINE_CHARS` characters a line and :data:`MAX_LINES` lines a cue, so the text fits the
  bottom of a phone screen at a readable size;
* a cue ends where the speech does: after a sentence, else after a clause, else at the widest pause, and
  only as a last resort wherever the length runs out; a silence of :data:`LONG_PAUSE_S` always ends it, so
  text does not linger through a silence;
* no sentence ends in a cue holding its last word alone (an orphan flashes by and reads as a stray);
* a cue stays up :data:`MIN_CUE_S` unless the next one must start sooner, and cues never overlap, because
  players drop or stack overlapping cues;
* the two lines of a cue are balanced and broken at punctuation, so the eye takes them in as one.

Word timestamps time each cue to the words it shows; a segment without them (or whose words no longer
match its corrected text) shares its time among its words by length. Every word of every segment lands
in exactly one cue, in order: nothing is dropped or repeated. A cue never straddles two segments, since
the segmenter already ends segments at sentence ends and long pauses, and a cue then maps to one segment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Final

from escriba.transcript import Segment, Word

MAX_LINE_CHARS = 42
MAX_LINES = 2
#: A cue is shown at least this long (seconds), if the next cue leaves room: the time to read a few words.
MIN_CUE_S: Final = 1.0
#: A cue longer than this costs more the longer it is, so a long one is cut at a good break even if its
#: text would fit: a cue held over many seconds of slow speech reads as stuck (seconds).
MAX_CUE_S: Final = 7.0
#: A pause between words longer than this is a strong break (seconds).
STRONG_PAUSE_S: Final = 0.5
#: A pause between words this long always ends the cue (seconds).
LONG_PAUSE_S: Final = 1.5

# With the CJK full-width forms, as escriba.transcription.segmenting reads them.
_SENTENCE_END: Final = (".", "!", "?", "\u2026", "\u3002", "\uff1f", "\uff01")
_CLAUSE_END: Final = (",", ";", ":", "\uff0c", "\u3001", "\uff1b", "\uff1a")
# Closing quotes and brackets after the mark ('word."') do not hide it.
_CLOSERS: Final = "\"')]}\u00bb\u201d\u2019"

# Costs the cue splitter minimizes (see _split). The break costs are ordered: a break after a sentence
# beats one after a clause, which beats a strong pause, which beats a shorter pause, which beats a break
# by length alone; the other terms are small next to those steps, so they choose among breaks of a kind.
_COST_CUE: Final = 5.0  # each cue: fewer, fuller cues read better than many flashes
_COST_FILL: Final = 6.0  # times the squared empty share of a cue: evens out the cues of a run
_COST_CLAUSE: Final = 3.0
_COST_PAUSE: Final = 7.0  # a strong pause, down to 4 as it nears LONG_PAUSE_S
_COST_PLAIN: Final = 14.0  # no mark, no strong pause: down to 8 as the pause nears STRONG_PAUSE_S
_COST_ONE_WORD: Final = 15.0  # any other one-word cue (a one-word sentence, a word between pauses)
_COST_ORPHAN: Final = 1000.0  # the last word of a sentence alone: only when nothing else is possible
_COST_SHORT: Final = 4.0  # per second of speech under MIN_CUE_S
_COST_LONG: Final = 3.0  # per second over MAX_CUE_S
_COST_LINES: Final = 0.1  # times the line-break cost of the cue's best wrap (_wrap)

# Costs of a line break inside a cue: the length difference of the lines in characters, plus these.
_LINE_CLAUSE: Final = 8
_LINE_PLAIN: Final = 20


@dataclass(frozen=True, slots=True)
class Cue:
    start_s: float
    end_s: float
    text: str  # its lines, joined by "\n"


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    start_s: float
    end_s: float


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _ends(text: str, marks: tuple[str, ...]) -> bool:
    return text.rstrip(_CLOSERS).endswith(marks)


def _by_length(texts: Sequence[str], start_s: float, end_s: float) -> list[_Token]:
    """Tokens timed as if every character took as long to say: without word timings this is the best
    guess, and it keeps the cues' timing monotone and inside the segment."""
    total = len(" ".join(texts))
    span = max(0.0, end_s - start_s)
    tokens: list[_Token] = []
    offset = 0
    for text in texts:
        tokens.append(
            _Token(text, start_s + span * offset / total, start_s + span * (offset + len(text)) / total)
        )
        offset += len(text) + 1
    tokens[-1] = replace(tokens[-1], end_s=max(start_s, end_s))
    return tokens


def _from_words(words: Sequence[Word]) -> list[_Token]:
    """Tokens timed by Whisper's words, made monotone: the alignment can step back a few milliseconds,
    and a cue must not end before it starts. A "word" holding a space is shared by length."""
    tokens: list[_Token] = []
    floor = -math.inf
    for word in words:
        pieces = word.word.split()
        if not pieces:
            continue
        start = max(word.start_s, floor)
        end = max(word.end_s, start)
        tokens.extend(_by_length(pieces, start, end) if len(pieces) > 1 else [_Token(pieces[0], start, end)])
        floor = start
    return tokens


def _tokens(segment: Segment) -> list[_Token]:
    texts = segment.text.split()
    if not texts:
        return []
    timed = _from_words(segment.words)
    if [t.text for t in timed] != texts:
        # No word timings, or they belong to another text (edited without realigning): share the time.
        timed = _by_length(texts, segment.start_s, segment.end_s)
    if segment.speaker:
        # The speaker's label leads the segment's first cue, joined to its first word so that no
        # break can leave the label alone at the end of a cue.
        first = timed[0]
        timed[0] = _Token(f"{segment.speaker}: {first.text}", first.start_s, first.end_s)
    return timed


def _wrap(tokens: Sequence[str], max_chars: int) -> tuple[list[str], float] | None:
    """The lines of a cue and the cost of its line break; ``None`` if it needs more than two lines.

    One line if it fits, as a reader takes one line in at a glance; else the break that keeps the lines
    closest in length, preferring one after punctuation, so neither line is a stub and each reads as a
    phrase. Between equals the top line is the shorter one, which leaves less of the picture covered.
    A word longer than a line (a URL) gets a line of its own rather than being cut or dropped.
    """
    count = len(tokens)
    ends = list(accumulate(len(t) + 1 for t in tokens))  # ends[k - 1] - 1: chars of tokens[:k] as a line
    total = ends[-1] - 1
    if count == 1 or total <= max_chars:
        return [" ".join(tokens)], 0.0
    best: tuple[float, bool, int] | None = None
    for k in range(1, count):
        top = ends[k - 1] - 1
        bottom = total - top - 1
        if (top > max_chars and k > 1) or (bottom > max_chars and k < count - 1):
            continue
        if _ends(tokens[k - 1], _SENTENCE_END):
            mark = 0
        elif _ends(tokens[k - 1], _CLAUSE_END):
            mark = _LINE_CLAUSE
        else:
            mark = _LINE_PLAIN
        key = (float(abs(top - bottom) + mark), top > bottom, k)
        if best is None or key < best:
            best = key
    if best is None:
        return None
    k = best[2]
    return [" ".join(tokens[:k]), " ".join(tokens[k:])], best[0]


def _break_cost(token: _Token, following: _Token) -> float:
    """What ending a cue after ``token`` costs: sentence, clause, strong pause, short pause, in that order;
    a longer pause is always the better break, as that is where the speaker paused for breath."""
    gap = following.start_s - token.end_s
    if _ends(token.text, _SENTENCE_END):
        return 0.0
    if _ends(token.text, _CLAUSE_END):
        return _COST_CLAUSE - min(max(gap, 0.0) / LONG_PAUSE_S, 1.0)
    if gap > STRONG_PAUSE_S:
        return _COST_PAUSE - 3.0 * min((gap - STRONG_PAUSE_S) / (LONG_PAUSE_S - STRONG_PAUSE_S), 1.0)
    return _COST_PLAIN - 6.0 * max(gap, 0.0) / STRONG_PAUSE_S


def _split(tokens: Sequence[_Token], max_chars: int) -> list[tuple[int, int, list[str]]]:
    """The cues of one segment as ``(first, stop, lines)`` token ranges.

    A shortest path over the breaks between words (as Knuth and Plass break paragraphs) rather than a
    greedy fill: a greedy fill cannot see that its last cue will hold one word, nor that a full stop
    three words back was the better place to end. Every cue is a run of consecutive tokens and the runs
    tile the segment, so no word is dropped or repeated whatever the costs.
    """
    n = len(tokens)
    cap = max_chars * MAX_LINES
    best = [math.inf] * (n + 1)
    back: list[tuple[int, list[str]]] = [(0, [])] * (n + 1)
    best[0] = 0.0
    for stop in range(1, n + 1):
        ends_sentence = stop == n or _ends(tokens[stop - 1].text, _SENTENCE_END)
        tail = 0.0 if stop == n else _break_cost(tokens[stop - 1], tokens[stop])
        for first in range(stop - 1, -1, -1):
            if first < stop - 1 and tokens[first + 1].start_s - tokens[first].end_s >= LONG_PAUSE_S:
                break  # a long silence inside; every longer cue holds it too
            wrapped = _wrap([t.text for t in tokens[first:stop]], max_chars)
            if wrapped is None:
                break  # does not fit; adding words cannot make it fit
            lines, line_cost = wrapped
            if len(lines) == 1:
                line_cost = _LINE_PLAIN  # neutral: one line is no better than two well-broken ones
            chars = sum(len(line) for line in lines) + len(lines) - 1
            speech = tokens[stop - 1].end_s - tokens[first].start_s
            cost = (
                best[first]
                + tail
                + _COST_CUE
                + _COST_FILL * (max(0, cap - chars) / cap) ** 2
                + _COST_LINES * line_cost
                + _COST_SHORT * max(0.0, MIN_CUE_S - speech)
                + _COST_LONG * max(0.0, speech - MAX_CUE_S)
            )
            if stop - first == 1 and n > 1:
                # An orphan: the end of a sentence begun in the cue before. A one-word sentence is not.
                orphan = ends_sentence and first > 0 and not _ends(tokens[first - 1].text, _SENTENCE_END)
                cost += _COST_ORPHAN if orphan else _COST_ONE_WORD
            if cost < best[stop]:
                best[stop] = cost
                back[stop] = (first, lines)
    out: list[tuple[int, int, list[str]]] = []
    stop = n
    while stop > 0:
        first, lines = back[stop]
        out.append((first, stop, lines))
        stop = first
    out.reverse()
    return out


def _cues_for_segment(segment: Segment, max_chars: int) -> list[Cue]:
    tokens = _tokens(segment)
    if not tokens:
        return []
    return [
        Cue(tokens[first].start_s, tokens[stop - 1].end_s, "\n".join(lines))
        for first, stop, lines in _split(tokens, max_chars)
    ]


def _settle(raw: Sequence[Cue]) -> list[Cue]:
    """Cues in time order without overlaps, each shown :data:`MIN_CUE_S` where the next leaves room.

    Segments can overlap by a few milliseconds (or more, from an external decoder); where a cue starts
    inside the previous one the previous ends early, so each cue appears when its words are spoken. Only
    if it starts before the previous one even began (out of order) is it pushed after it instead, as the
    text order must be kept. Only the end of a short cue moves: showing words before they are said
    spoils the scene, showing them a little after does not.
    """
    out: list[Cue] = []
    for cue in raw:
        if out and cue.start_s < out[-1].end_s:
            previous = out[-1]
            if cue.start_s > previous.start_s:
                out[-1] = replace(previous, end_s=cue.start_s)
            else:
                cue = replace(cue, start_s=previous.end_s, end_s=max(cue.end_s, previous.end_s))
        out.append(cue)
    for index, cue in enumerate(out):
        if cue.end_s - cue.start_s < MIN_CUE_S:
            limit = out[index + 1].start_s if index + 1 < len(out) else math.inf
            out[index] = replace(cue, end_s=max(cue.end_s, min(cue.start_s + MIN_CUE_S, limit)))
    return out


def cues(segments: Iterable[Segment], max_chars: int = MAX_LINE_CHARS) -> list[Cue]:
    """The cues of ``segments``, in order; their words joined are the segments' words joined."""
    raw: list[Cue] = []
    for segment in segments:
        raw.extend(_cues_for_segment(segment, max_chars))
    return _settle(raw)


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
