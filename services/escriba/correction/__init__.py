"""Deterministic, versioned clean-up of transcripts (no transport code: see ``servicer.py``)."""

from escriba.correction.corrector import CorrectionResult, Corrector, join_segments
from escriba.correction.errors import (
    EmptyGlossaryPhraseError,
    GlossaryConflictError,
    GlossaryError,
    GlossaryPhraseTooLongError,
    GlossaryTooLargeError,
    InvalidLanguageError,
    SpellingUnavailableError,
    TextSegmentsMismatchError,
    TextTooLongError,
    TooManySegmentsError,
)
from escriba.correction.options import CorrectionOptions
from escriba.correction.rules import RULES_VERSION
from escriba.correction.settings import CorrectionSettings

__all__ = [
    "RULES_VERSION",
    "CorrectionOptions",
    "CorrectionResult",
    "CorrectionSettings",
    "Corrector",
    "EmptyGlossaryPhraseError",
    "GlossaryConflictError",
    "GlossaryError",
    "GlossaryPhraseTooLongError",
    "GlossaryTooLargeError",
    "InvalidLanguageError",
    "SpellingUnavailableError",
    "TextSegmentsMismatchError",
    "TextTooLongError",
    "TooManySegmentsError",
    "join_segments",
]
