"""Word tokens and the comparison keys the rules share.

Rules compare words by a *key* (case folded, punctuation dropped, curly apostrophes straightened) so that
"Go," and "go." count as the same word when looking for loops and duplicates, while the text itself keeps
what the recognizer wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_TOKEN = re.compile(r"\S+")
_NOT_KEY = re.compile(r"[^\w']+")


@dataclass(frozen=True, slots=True)
class Token:
    start: int
    end: int
    text: str
    key: str


def word_key(word: str) -> str:
    """The comparison form of one word: "Don\u2019t," -> "don't"; pure punctuation keeps itself."""
    folded = word.replace("\u2019", "'").casefold()
    key = _NOT_KEY.sub("", folded).strip("'_")
    return key or folded


def tokens(text: str) -> Iterator[Token]:
    for match in _TOKEN.finditer(text):
        yield Token(match.start(), match.end(), match.group(), word_key(match.group()))


def phrase_key(text: str) -> str:
    """The comparison form of a whole phrase: word keys joined by single spaces, punctuation-only words
    dropped ("Thanks for watching!" and "thanks for watching" are the same phrase)."""
    keys = (word_key(t) for t in text.replace("-", " ").replace(".", " ").split())
    return " ".join(k for k in keys if any(ch.isalnum() for ch in k))
