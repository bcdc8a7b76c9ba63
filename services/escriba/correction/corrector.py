"""The correction engine: runs the rules over segments (or a bare text) and records every edit.

Rules run per segment and the full text is re-joined from the corrected segments, so the two can never
disagree; segment ids are kept as they came (a dropped segment leaves a gap) so every edit points at the
segment it came from. Surrounding whitespace of a segment (Whisper's leading space) is not content: it
is stripped before the rules and edit offsets index the stripped text.

The engine holds no mutable state besides process-wide caches that are safe to share (the compiled
glossaries, the spelling dictionary), so one :class:`Corrector` serves any number of threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from escriba.correction import spelling
from escriba.correction.casing import ends_sentence
from escriba.correction.edits import apply_changes, to_edits
from escriba.correction.errors import TextSegmentsMismatchError, TextTooLongError, TooManySegmentsError
from escriba.correction.glossary import compile_glossary
from escriba.correction.options import CorrectionOptions, resolve_options
from escriba.correction.rules import RULES_VERSION, TEXT_RULES, RuleContext
from escriba.correction.settings import CorrectionSettings
from escriba.correction.silence import segment_verdicts
from escriba.correction.words import realign_words
from escriba.transcript import COMPRESSION_RATIO_THRESHOLD, Edit, Segment, joined_text


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    text: str
    segments: tuple[Segment, ...]
    edits: tuple[Edit, ...]
    rules_version: str
    #: Rules that did not run as asked, and why (said on the task, not silently skipped).
    notes: tuple[str, ...] = ()


def language_notes(options: CorrectionOptions) -> tuple[str, ...]:
    """What the English-only rules leave undone for text in another language."""
    language = options.language
    if language in ("", "en") or language.startswith("en-"):
        return ()
    notes = []
    if options.spelling and not spelling.supports(language):
        notes.append(f"spelling: skipped, its dictionary is English and the text is {language!r}")
    if options.fix_casing:
        notes.append(
            f"casing: sentence starts only; the pronoun rule is English and the text is {language!r}"
        )
    return tuple(notes)


def join_segments(segments: Sequence[Segment]) -> str:
    return joined_text(segments)


class Corrector:
    def __init__(self, settings: CorrectionSettings | None = None) -> None:
        self.settings = settings if settings is not None else CorrectionSettings()

    def preload(self) -> None:
        """Load what the default options need (the spelling dictionary) before serving traffic."""
        if self.settings.spelling:
            spelling.preload()

    def resolve(self, options: CorrectionOptions | None = None) -> CorrectionOptions:
        return resolve_options(options if options is not None else CorrectionOptions(), self.settings)

    def cache_key(
        self, text: str, segments: Sequence[Segment] = (), options: CorrectionOptions | None = None
    ) -> str:
        """Hex digest naming the result of :meth:`correct` for these inputs under these rules."""
        resolved = self.resolve(options)
        document = {
            "rules": RULES_VERSION,
            "dictionary": spelling.dictionary_version() if resolved.spelling else "",
            "options": dataclasses.asdict(resolved),
            "text": text,
            "segments": [dataclasses.asdict(s) for s in segments],
        }
        encoded = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(encoded.encode("utf-8")).hexdigest()

    def correct(
        self, text: str, segments: Sequence[Segment] = (), options: CorrectionOptions | None = None
    ) -> CorrectionResult:
        """Correct ``segments`` (then ``text``, if given, must say the same) or, without segments, ``text``.

        Raises :class:`~escriba.correction.errors.TextTooLongError`/``TooManySegmentsError`` over the
        limits, a ``GlossaryError``/``InvalidLanguageError`` for bad options, and
        ``TextSegmentsMismatchError`` when text and segments disagree.
        """
        self._check_limits(text, segments)
        resolved = self.resolve(options)
        context = RuleContext(
            language=resolved.language,
            glossary=compile_glossary(resolved.glossary),
            spelling=bool(resolved.spelling),
            remove_hallucinations=resolved.remove_hallucinations,
            fix_casing=resolved.fix_casing,
        )
        notes = language_notes(resolved)
        if not segments:
            corrected, edits = _run_rules(text.strip(), -1, context)
            return CorrectionResult(corrected, (), tuple(edits), RULES_VERSION, notes)

        if text.strip() and " ".join(text.split()) != " ".join(join_segments(segments).split()):
            raise TextSegmentsMismatchError(
                "text and segments differ; send the segments alone (the text is joined from them)"
            )
        verdicts = segment_verdicts(segments) if resolved.remove_hallucinations else [None] * len(segments)
        out: list[Segment] = []
        all_edits: list[Edit] = []
        starts_sentence = True
        for segment, verdict in zip(segments, verdicts, strict=True):
            original = segment.text.strip()
            if verdict is not None:
                all_edits.append(Edit(verdict, original, "", segment.id, 0))
                continue
            context = dataclasses.replace(
                context, starts_sentence=starts_sentence, decoder_looped=decoder_looped(segment)
            )
            corrected, edits = _run_rules(original, segment.id, context)
            all_edits.extend(edits)
            words = segment.words if corrected == original else realign_words(segment.words, corrected)
            out.append(dataclasses.replace(segment, text=corrected, words=words))
            if corrected:
                starts_sentence = ends_sentence(corrected)
        return CorrectionResult(join_segments(out), tuple(out), tuple(all_edits), RULES_VERSION, notes)

    def _check_limits(self, text: str, segments: Sequence[Segment]) -> None:
        if len(segments) > self.settings.max_segments:
            raise TooManySegmentsError(
                f"{len(segments)} segments; at most {self.settings.max_segments} are allowed "
                "(ESCRIBA_CORRECTION_MAX_SEGMENTS)"
            )
        size = max(len(text), sum(len(s.text) for s in segments))
        if size > self.settings.max_text_chars:
            raise TextTooLongError(
                f"{size} characters of text; at most {self.settings.max_text_chars} are allowed "
                "(ESCRIBA_CORRECTION_MAX_TEXT_CHARS)"
            )


def decoder_looped(segment: Segment) -> bool | None:
    """Whether the decoder's own scores call ``segment`` a loop (``None``: it carries no scores)."""
    if not (segment.avg_logprob or segment.no_speech_prob or segment.compression_ratio):
        return None
    return segment.compression_ratio > COMPRESSION_RATIO_THRESHOLD


def _run_rules(text: str, segment_id: int, context: RuleContext) -> tuple[str, list[Edit]]:
    edits: list[Edit] = []
    for rule in TEXT_RULES:
        if not rule.applies(context):
            continue
        changes = rule.changes(text, context)
        if changes:
            edits.extend(to_edits(rule.name, text, changes, segment_id))
            text = apply_changes(text, changes)
    return text, edits
