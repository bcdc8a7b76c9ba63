"""The ordered text rules, and the version that names their combined behaviour.

Bump :data:`RULES_VERSION` whenever any rule's output can change (a threshold, a stock phrase, a regex):
the correction cache is keyed by it, so a forgotten bump serves results of the old rules.
``tests/unit/test_correction_version.py`` pins a digest of the rules' output on a fixed corpus to the
version, so a behaviour change without a bump fails the build.

Order matters and is part of the behaviour: spacing first (later rules see single spaces and split
words), loops before the glossary (a loop of a misheard word collapses before it is fixed), spelling after
the glossary (glossary terms are protected from it), casing last (it sees the final words).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from escriba.correction import casing, glossary, repetition, spacing, spelling
from escriba.correction.edits import Change
from escriba.correction.glossary import Glossary

RULES_VERSION = "escriba-correction-3"  # 2: loops collapsed only where the decoder looped;
# 3: segments keep their channel and speaker, the text is one line per speaker turn, and rules
# that only know English say so on other languages (notes)


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule may know besides the text: the resolved options and where the text sits."""

    language: str
    glossary: Glossary
    spelling: bool
    remove_hallucinations: bool
    fix_casing: bool
    #: The text begins a sentence (first segment, or the previous one ended with . ! ?).
    starts_sentence: bool = True
    #: What the decoder's scores say of a loop in this text: True (too repetitive by Whisper's own
    #: compression-ratio threshold), False (scored and not repetitive: people do say "word word word
    #: word word", and that is speech to keep), None (plain text, no scores: judged by the text alone).
    decoder_looped: bool | None = None


@dataclass(frozen=True, slots=True)
class TextRule:
    name: str
    applies: Callable[[RuleContext], bool]
    changes: Callable[[str, RuleContext], list[Change]]


TEXT_RULES: tuple[TextRule, ...] = (
    TextRule(spacing.RULE, lambda c: True, lambda t, c: spacing.spacing_changes(t, c.language)),
    TextRule(
        repetition.RULE,
        lambda c: c.remove_hallucinations and c.decoder_looped is not False,
        lambda t, c: repetition.repetition_changes(t),
    ),
    TextRule(glossary.RULE, lambda c: c.glossary.pattern is not None, lambda t, c: c.glossary.changes(t)),
    TextRule(
        spelling.RULE,
        lambda c: c.spelling and spelling.supports(c.language),
        lambda t, c: spelling.spelling_changes(t, c.glossary.protected),
    ),
    TextRule(
        casing.RULE,
        lambda c: c.fix_casing,
        lambda t, c: casing.casing_changes(
            t, starts_sentence=c.starts_sentence, language=c.language, keep=c.glossary.lowercase
        ),
    ),
)
