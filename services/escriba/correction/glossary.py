"""The per-request glossary: phrases the model mishears, mapped to their right spelling.

Matching is whole-word (a phrase never matches inside a longer word: "comfy" leaves "comfyness" alone),
case-insensitive, and tolerant between the words of a phrase (any run of spaces or hyphens, so the alias
"comfy ui" also catches "Comfy-UI" and "comfy  ui"). The term itself is also matched, so its wrong casing
is fixed ("comfyui" -> "ComfyUI"). At one position the longest phrase wins ("comfy ui" before "comfy").

A phrase mapped to two different terms is refused rather than resolved by entry order, and the
compiled matcher is cached per glossary because the pipeline sends the same glossary for every segment
of a task and often for every task of a team.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from escriba.correction.edits import Change
from escriba.correction.errors import (
    EmptyGlossaryPhraseError,
    GlossaryConflictError,
    GlossaryPhraseTooLongError,
    GlossaryTooLargeError,
)
from escriba.transcript import GlossaryEntry

RULE = "glossary"

_SEPARATORS = re.compile(r"[\s\-]+")


@dataclass(frozen=True, slots=True)
class GlossaryLimits:
    max_entries: int
    max_aliases: int
    max_phrase_chars: int


@dataclass(frozen=True, slots=True)
class Glossary:
    """A validated glossary ready to match; an empty one matches nothing."""

    pattern: re.Pattern[str] | None
    replacements: dict[str, str]  # phrase key -> term
    #: Lower-cased words of every term: spelling never touches them.
    protected: frozenset[str] = frozenset()
    #: Words of terms spelled with a lower-case first letter ("iPhone"): casing never raises them.
    lowercase: frozenset[str] = frozenset()

    def changes(self, text: str) -> list[Change]:
        if self.pattern is None:
            return []
        out: list[Change] = []
        for m in self.pattern.finditer(text):
            term = self.replacements.get(_key(m.group()))
            if term is not None and m.group() != term:
                out.append(Change(m.start(), m.end(), term))
        return out


def _key(phrase: str) -> str:
    return " ".join(word.casefold() for word in _SEPARATORS.split(phrase.strip()) if word)


def normalize_entries(entries: Sequence[GlossaryEntry], limits: GlossaryLimits) -> tuple[GlossaryEntry, ...]:
    """Validate and canonicalise entries (stripped, inner whitespace collapsed, duplicate aliases dropped);
    raise a :class:`~escriba.correction.errors.GlossaryError` naming the offending entry."""
    if len(entries) > limits.max_entries:
        raise GlossaryTooLargeError(
            f"the glossary has {len(entries)} entries; at most {limits.max_entries} are allowed"
        )
    owner: dict[str, str] = {}
    out: list[GlossaryEntry] = []
    for number, entry in enumerate(entries, start=1):
        term = _clean(entry.term, f"glossary entry {number}: term", limits)
        if len(entry.aliases) > limits.max_aliases:
            raise GlossaryTooLargeError(
                f"glossary entry {number} ({term!r}) has {len(entry.aliases)} aliases; "
                f"at most {limits.max_aliases} are allowed"
            )
        aliases: list[str] = []
        seen = {_key(term)}
        for phrase in (term, *(_clean(a, f"glossary entry {number}: alias", limits) for a in entry.aliases)):
            key = _key(phrase)
            previous = owner.setdefault(key, term)
            if previous != term:
                raise GlossaryConflictError(
                    f"glossary entry {number}: {phrase!r} is mapped to both {previous!r} and {term!r}"
                )
            if key not in seen:
                seen.add(key)
                aliases.append(phrase)
        out.append(GlossaryEntry(term=term, aliases=tuple(aliases)))
    return tuple(out)


def _clean(phrase: str, what: str, limits: GlossaryLimits) -> str:
    cleaned = " ".join(phrase.split())
    if not any(ch.isalnum() for ch in cleaned):
        raise EmptyGlossaryPhraseError(f"{what} {phrase!r} is empty or has no letters or digits")
    if len(cleaned) > limits.max_phrase_chars:
        raise GlossaryPhraseTooLongError(
            f"{what} is {len(cleaned)} characters long; at most {limits.max_phrase_chars} are allowed"
        )
    return cleaned


def _phrase_regex(phrase: str) -> str:
    return r"[\s\-]+".join(re.escape(word) for word in _SEPARATORS.split(phrase) if word)


@functools.lru_cache(maxsize=256)
def compile_glossary(entries: tuple[GlossaryEntry, ...]) -> Glossary:
    """Build the matcher for entries already checked by :func:`normalize_entries`."""
    replacements: dict[str, str] = {}
    for entry in entries:
        for phrase in (entry.term, *entry.aliases):
            replacements[_key(phrase)] = entry.term
    if not replacements:
        return Glossary(None, {})
    # Longest first (in words, then characters), so the alternation prefers it at a position; the key
    # breaks ties so the pattern does not depend on the order entries came in.
    phrases = sorted(replacements, key=lambda k: (-len(k.split()), -len(k), k))
    alternation = "|".join(_phrase_regex(p) for p in phrases)
    pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)
    words = [word for entry in entries for word in _SEPARATORS.split(entry.term) if word]
    return Glossary(
        pattern,
        replacements,
        protected=frozenset(word.casefold() for word in words),
        lowercase=frozenset(word for word in words if word[0].islower()),
    )
