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
from typing import Any

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
    #: All terms and aliases together. What compiling costs grows with this sum, not with the entry
    #: count: the trie holds a node per character and the regex renders each once (measured on 2 CPU
    #: cores: 50,000 characters compile in about 1 s with a 16 MiB peak; 500,000 in 12 s and 160 MiB).
    #: The per-entry limits alone allowed 1,000 x 51 x 100 = 5.1 million characters, minutes of one
    #: correction worker's CPU and gigabytes for a single request.
    max_total_chars: int = 50_000


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
    return " ".join(word.lower() for word in _SEPARATORS.split(phrase.strip()) if word)


def normalize_entries(entries: Sequence[GlossaryEntry], limits: GlossaryLimits) -> tuple[GlossaryEntry, ...]:
    """Validate and canonicalise entries (stripped, inner whitespace collapsed, duplicate aliases dropped);
    raise a :class:`~escriba.correction.errors.GlossaryError` naming the offending entry."""
    if len(entries) > limits.max_entries:
        raise GlossaryTooLargeError(
            f"the glossary has {len(entries)} entries; at most {limits.max_entries} are allowed"
        )
    owner: dict[str, str] = {}
    out: list[GlossaryEntry] = []
    total_chars = 0
    for number, entry in enumerate(entries, start=1):
        term = _clean(entry.term, f"glossary entry {number}: term", limits)
        if len(entry.aliases) > limits.max_aliases:
            raise GlossaryTooLargeError(
                f"glossary entry {number} ({term!r}) has {len(entry.aliases)} aliases; "
                f"at most {limits.max_aliases} are allowed"
            )
        total_chars += len(term) + sum(len(alias) for alias in entry.aliases)
        if total_chars > limits.max_total_chars:
            raise GlossaryTooLargeError(
                f"the glossary's terms and aliases exceed {limits.max_total_chars} characters in all "
                f"(at entry {number})"
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


_SEPARATOR = " "  # a trie unit: any run of spaces or hyphens between two words of a phrase
_END = ""  # a trie unit: a phrase may end here


def _render(node: dict[str, Any]) -> str:
    """Regex for a trie node: branches share their prefixes, so matching costs one walk down the trie per
    position rather than one attempt per phrase; "end here" is the last branch, so at any position the
    longest phrase is tried first and a shorter one only when the longer one does not end on a word edge."""
    parts: list[str] = []
    while len(node) == 1 and _END not in node:
        ((unit, node),) = node.items()
        parts.append(_unit(unit))
    branches = [_unit(unit) + _render(child) for unit, child in sorted(node.items()) if unit != _END]
    if _END in node:
        branches.append("")
    if len(branches) > 1:
        parts.append("(?:" + "|".join(branches) + ")")
    elif branches:
        parts.append(branches[0])
    return "".join(parts)


def _unit(unit: str) -> str:
    return r"[\s\-]+" if unit == _SEPARATOR else re.escape(unit)


@functools.lru_cache(maxsize=256)
def compile_glossary(entries: tuple[GlossaryEntry, ...]) -> Glossary:
    """Build the matcher for entries already checked by :func:`normalize_entries`."""
    replacements: dict[str, str] = {}
    for entry in entries:
        for phrase in (entry.term, *entry.aliases):
            replacements[_key(phrase)] = entry.term
    if not replacements:
        return Glossary(None, {})
    trie: dict[str, Any] = {}
    for entry in entries:
        for phrase in (entry.term, *entry.aliases):
            node = trie
            for unit in _SEPARATOR.join(w for w in _SEPARATORS.split(phrase.lower()) if w):
                node = node.setdefault(unit, {})
            node[_END] = {}
    pattern = re.compile(rf"(?<!\w){_render(trie)}(?!\w)", re.IGNORECASE)
    words = [word for entry in entries for word in _SEPARATORS.split(entry.term) if word]
    return Glossary(
        pattern,
        replacements,
        protected=frozenset(word.lower() for word in words),
        lowercase=frozenset(word for word in words if word[0].islower()),
    )
