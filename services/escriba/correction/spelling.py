"""Optional offline spelling correction (English), from ``pyspellchecker``'s bundled dictionary.

Deliberately timid, because Whisper rarely misspells and a spelling fixer that "corrects" a real word is
worse than none: only lower-case, purely alphabetic words of 3 letters or more that are not in the
dictionary are considered (capitalised words are names, digits and apostrophes are numbers and
contractions), glossary words are never touched, and only candidates one edit away are accepted. It
still only knows its dictionary: jargon it lacks ("nats") can be "corrected" to a real word ("eats"),
which is why it is off by default and why a glossary entry for a team's jargon also shields it. Among
equally frequent candidates the alphabetically first wins, so the result never depends on set order
(``SpellChecker.correction`` picks by set iteration, which varies with hash randomisation).

The dictionary takes a fraction of a second and some memory to load, so it is loaded once per process,
on first use, under a lock.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Collection
from importlib import metadata
from typing import Any

from escriba.correction.edits import Change
from escriba.correction.errors import SpellingUnavailableError

RULE = "spelling"

MIN_LETTERS = 3
#: The bundled dictionary is American English: British, Australian... text would be "corrected" to it.
LANGUAGES = ("", "en", "en-us")

_WORD = re.compile(r"(?<![\w'\u2019\-])[a-z]+(?![\w'\u2019\-])")

_lock = threading.Lock()
_checker: Any = None


def supports(language: str) -> bool:
    """American or unspecified English (the bundled model is English-only); other languages are skipped."""
    return language in LANGUAGES


def dictionary_version() -> str:
    """Part of the correction cache key when spelling is on: a new dictionary can change results."""
    try:
        return metadata.version("pyspellchecker")
    except metadata.PackageNotFoundError:
        return "absent"


def _load() -> Any:
    global _checker
    if _checker is None:
        with _lock:
            if _checker is None:
                try:
                    from spellchecker import SpellChecker
                except ImportError as exc:
                    raise SpellingUnavailableError(
                        "spelling correction needs the 'spell' extra (pyspellchecker), which is not installed"
                    ) from exc
                _checker = SpellChecker(language="en", distance=1)
    return _checker


@functools.lru_cache(maxsize=65_536)
def suggestion(word: str) -> str | None:
    """The correction of one lower-case word, or None when it is known or nothing is close."""
    checker = _load()
    if checker.known([word]):
        return None
    candidates = checker.candidates(word) or ()
    ranked = sorted(c for c in candidates if c != word and c.replace("'", "").isalpha())
    if not ranked:
        return None
    best: str = max(ranked, key=lambda c: checker[c])
    return best if checker[best] > 0 else None


def spelling_changes(text: str, protected: Collection[str] = ()) -> list[Change]:
    """``protected``: lower-cased words never to change (the glossary's)."""
    changes: list[Change] = []
    for m in _WORD.finditer(text):
        word = m.group()
        if len(word) < MIN_LETTERS or word in protected:
            continue
        fixed = suggestion(word)
        if fixed is not None:
            changes.append(Change(m.start(), m.end(), fixed))
    return changes


def preload() -> None:
    """Load the dictionary now (at service start) rather than on the first request that wants it."""
    _load()
