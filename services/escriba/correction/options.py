"""What a caller may ask of one correction, checked before any rule runs.

Options are resolved into a canonical form (spelling default filled in from the settings, language
lower-cased, glossary phrases cleaned) because that form is part of the correction cache key: two
requests that mean the same thing must share a cache entry, and two that differ must not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from escriba.correction.errors import InvalidLanguageError
from escriba.correction.glossary import GlossaryLimits, normalize_entries
from escriba.correction.settings import CorrectionSettings
from escriba.transcript import GlossaryEntry

_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})*")


@dataclass(frozen=True, slots=True)
class CorrectionOptions:
    glossary: tuple[GlossaryEntry, ...] = ()
    #: None: the server's default (``ESCRIBA_CORRECTION_SPELLING``).
    spelling: bool | None = None
    #: Repetition loops, duplicated segments and stock phrases over silence.
    remove_hallucinations: bool = True
    fix_casing: bool = True
    #: ISO 639-1 code (optionally with a region, "en-GB") of the text; "" when unknown.
    language: str = ""


def resolve_options(options: CorrectionOptions, settings: CorrectionSettings) -> CorrectionOptions:
    """Validate ``options`` and return their canonical form (``spelling`` is never None in it)."""
    language = options.language.strip().lower().replace("_", "-")
    if language and _LANGUAGE.fullmatch(language) is None:
        raise InvalidLanguageError(f"language {options.language!r} is not an ISO 639-1 code such as 'en'")
    limits = GlossaryLimits(
        max_entries=settings.max_glossary_entries,
        max_aliases=settings.max_glossary_aliases,
        max_phrase_chars=settings.max_glossary_phrase_chars,
        max_total_chars=settings.max_glossary_chars,
    )
    return CorrectionOptions(
        glossary=normalize_entries(options.glossary, limits),
        spelling=settings.spelling if options.spelling is None else options.spelling,
        remove_hallucinations=options.remove_hallucinations,
        fix_casing=options.fix_casing,
        language=language,
    )
