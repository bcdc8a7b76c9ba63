"""Why a correction request is refused.

Each class carries its own ``reason`` so a caller (and the task's ``error`` column) can tell an empty
glossary term from an oversized one without parsing messages; the servicer maps the base classes to gRPC
codes (InvalidInputError: INVALID_ARGUMENT, LimitExceededError: RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

from escriba.common.errors import InvalidInputError, LimitExceededError, PermanentError


class GlossaryError(InvalidInputError):
    """The request's glossary cannot be applied as written."""

    reason = "invalid_glossary"


class EmptyGlossaryPhraseError(GlossaryError):
    """A term or alias is empty or holds no letters or digits (it would match everywhere or nowhere)."""

    reason = "glossary_empty_phrase"


class GlossaryPhraseTooLongError(GlossaryError):
    reason = "glossary_phrase_too_long"


class GlossaryTooLargeError(GlossaryError):
    """Too many entries, aliases in one entry, or characters in all (what compiling the matcher costs)."""

    reason = "glossary_too_large"


class GlossaryConflictError(GlossaryError):
    """One phrase is mapped to two different terms, so the result would depend on entry order."""

    reason = "glossary_conflict"


class InvalidLanguageError(InvalidInputError):
    reason = "invalid_language"


class TextSegmentsMismatchError(InvalidInputError):
    """Both a text and segments were sent and they say different things: which one to correct is unclear."""

    reason = "text_segments_mismatch"


class TextTooLongError(LimitExceededError):
    reason = "text_too_long"


class TooManySegmentsError(LimitExceededError):
    reason = "too_many_segments"


class SpellingUnavailableError(PermanentError):
    """Spelling was asked for but the offline dictionary (the ``spell`` extra) is not installed."""

    reason = "spelling_unavailable"
