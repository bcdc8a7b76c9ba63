"""Repetition loops: Whisper's decoder can get stuck emitting the same word or phrase over and over.

A loop is a run of the same n-gram (1 to :data:`MAX_NGRAM` words, compared by word key so punctuation and
case do not hide it) repeated back to back at least :func:`min_repeats` times. It is collapsed to its
*last* occurrence, which carries the punctuation that joins the rest of the sentence.

The thresholds are set so ordinary speech survives: people say "no no no" or "very very" or "thank you,
thank you, thank you", so a single word needs 5 copies and a short phrase 4; a phrase of 5 or more
words said three times in a row inside one segment is, in practice, always a decoding loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from escriba.correction.edits import Change
from escriba.correction.tokens import Token, tokens

RULE = "repetition"

MAX_NGRAM = 12


def min_repeats(size: int) -> int:
    """Back-to-back copies of a ``size``-word n-gram that make a loop."""
    if size == 1:
        return 5
    if size < 5:
        return 4
    return 3


def _copies(keys: Sequence[str], start: int, size: int) -> int:
    gram = keys[start : start + size]
    count = 1
    position = start + size
    while keys[position : position + size] == gram:
        count += 1
        position += size
    return count


def _loop_at(keys: Sequence[str], start: int) -> tuple[int, int] | None:
    """The loop starting at ``start`` covering the most words (ties: the shortest n-gram)."""
    best: tuple[int, int] | None = None
    best_cover = 0
    for size in range(1, min(MAX_NGRAM, (len(keys) - start) // 2) + 1):
        if keys[start + size] != keys[start]:  # cheap test first: no second copy can start there
            continue
        count = _copies(keys, start, size)
        if count >= min_repeats(size) and count * size > best_cover:
            best, best_cover = (size, count), count * size
    return best


def repetition_changes(text: str) -> list[Change]:
    words: list[Token] = list(tokens(text))
    keys = [w.key for w in words]
    changes: list[Change] = []
    index = 0
    while index < len(words):
        loop = _loop_at(keys, index)
        if loop is None:
            index += 1
            continue
        size, count = loop
        kept = index + (count - 1) * size  # first word of the last copy
        changes.append(Change(words[index].start, words[kept].start, ""))
        index += count * size
    return changes
