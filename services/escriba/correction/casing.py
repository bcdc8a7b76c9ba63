"""Sentence casing: capitalise the first letter of each sentence, and the pronoun "I" in English.

It only ever raises a letter, never lowers one, so names and acronyms the model got right are safe. A
sentence starts at the beginning of a segment that follows a finished sentence (the caller says so:
Whisper often splits one sentence over several segments) and after ``. ! ?``, except after abbreviations
(``Mr.``, ``e.g.``, ``U.S.``, ``a.m.``, an initial like ``J.``) where lowering the risk of a wrong capital
matters more than catching every sentence. Words the glossary spells with a lower-case first letter
(``iPhone``, ``kubectl``) are never capitalised.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from escriba.correction.edits import Change
from escriba.correction.tokens import tokens

RULE = "casing"

_CLOSERS = "\"')]}\u00bb\u201d\u2019"
_OPENERS = "\"'([{\u00ab\u201c\u2018\u00bf\u00a1"
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "jr.", "sr.", "etc.", "approx.", "cf.", "fig."}
)
_DOTTED = re.compile(r"(?:[^\W\d_]\.){2,}|[A-Z]\.")
_PRONOUN_I = re.compile(r"(?<![\w'\u2019.\-])i(?=['\u2019](?:m|ve|ll|d)\b|[\s,!?;:\"')\]]|\.(?!\w)|$)")


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends with a finished sentence (so what follows starts a new one)."""
    last = text.rstrip().rsplit(None, 1)[-1] if text.strip() else ""
    return _is_sentence_end(last)


def _is_sentence_end(token: str) -> bool:
    bare = token.rstrip(_CLOSERS)
    if not bare or bare[-1] not in ".!?":
        return False
    if bare.endswith(("!", "?", "...")):
        return True
    word = bare.lstrip(_OPENERS)
    return word.casefold() not in _ABBREVIATIONS and _DOTTED.fullmatch(word) is None


def _capital(text: str, start: int, end: int, keep: Collection[str]) -> Change | None:
    position = start
    while position < end and text[position] in _OPENERS:
        position += 1
    if position == end or not text[position].islower():
        return None
    word = text[position:end].rstrip(_CLOSERS + ",.!?;:")
    if word in keep:
        return None
    upper = text[position].upper()
    if len(upper) != 1:  # e.g. "ß" -> "SS": leave it
        return None
    return Change(position, position + 1, upper)


def casing_changes(
    text: str, *, starts_sentence: bool, language: str, keep: Collection[str] = ()
) -> list[Change]:
    """``keep``: words never to capitalise (the glossary's lower-case terms)."""
    found: dict[int, Change] = {}
    previous_ends = starts_sentence
    for token in tokens(text):
        if previous_ends:
            change = _capital(text, token.start, token.end, keep)
            if change is not None:
                found[change.start] = change
        previous_ends = _is_sentence_end(token.text)
    if language in ("", "en") or language.startswith("en-"):
        for m in _PRONOUN_I.finditer(text):
            found.setdefault(m.start(), Change(m.start(), m.end(), "I"))
    return [found[k] for k in sorted(found)]
