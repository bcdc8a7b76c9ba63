"""Sentence-sized segments cut from word timings.

Whisper can split a window into segments itself, with timestamp tokens, but in batched decoding that
mode loses the text after a window's last closed segment (nothing re-seeks to decode it again; upstream
SYSTRAN/faster-whisper#1427, #1179). Decoding without timestamp tokens keeps every word, so segments
are cut here instead, from the word alignment: after a sentence ends, at a long pause, and, for a run
of speech with neither, at the best break (a clause mark, else the widest pause) before it grows past
:data:`MAX_SEGMENT_S`. Every word lands in exactly one segment, in order; nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: A pause this long between two words ends a segment (seconds).
PAUSE_BREAK_S: Final = 1.0
#: Segments longer than this are split at their best break (seconds); subtitles read well under it.
MAX_SEGMENT_S: Final = 8.0
#: A segment shorter than this is not closed by a sentence end alone (a "Yes." then the next
#: sentence), unless a pause follows (seconds).
MIN_SENTENCE_S: Final = 1.0
# With the CJK full-width forms (U+3002, U+FF1F, U+FF01; U+FF0C, U+3001).
_SENTENCE_END: Final = (".", "?", "!", "\u3002", "\uff1f", "\uff01")
_CLAUSE_END: Final = (",", ";", ":", "\uff0c", "\u3001")


@dataclass(frozen=True, slots=True)
class TimedWord:
    """A word as the alignment gives it (``text`` keeps Whisper's leading space)."""

    text: str
    start_s: float
    end_s: float
    probability: float = 0.0


def _ends(word: TimedWord, marks: tuple[str, ...]) -> bool:
    return word.text.rstrip().endswith(marks)


def _best_break(words: Sequence[TimedWord]) -> int:
    """Index after which ``words`` (at least two) is best split: the last clause or sentence mark
    past the first quarter, else the widest pause."""
    quarter = max(1, len(words) // 4)
    for index in range(len(words) - 2, quarter - 2, -1):
        if _ends(words[index], _SENTENCE_END + _CLAUSE_END):
            return index
    gaps = [words[i + 1].start_s - words[i].end_s for i in range(len(words) - 1)]
    return max(range(len(gaps)), key=lambda i: (gaps[i], i))


def split_words(words: Sequence[TimedWord]) -> list[list[TimedWord]]:
    """Consecutive groups of ``words`` (in order, none left out), each one segment."""
    groups: list[list[TimedWord]] = []
    current: list[TimedWord] = []
    for index, word in enumerate(words):
        current.append(word)
        following = words[index + 1] if index + 1 < len(words) else None
        if following is None:
            break
        pause = following.start_s - word.end_s
        length = word.end_s - current[0].start_s
        if pause >= PAUSE_BREAK_S or (_ends(word, _SENTENCE_END) and length >= MIN_SENTENCE_S):
            groups.append(current)
            current = []
            continue
        while len(current) > 1 and following.end_s - current[0].start_s > MAX_SEGMENT_S:
            cut = _best_break(current) + 1
            groups.append(current[:cut])
            current = current[cut:]
    if current:
        groups.append(current)
    return groups
