"""Changes a rule makes to one text, and how they become auditable :class:`~escriba.transcript.Edit`\\ s.

Every rule returns its changes against the text it was given, sorted and non-overlapping, and never
rewrites the text itself: applying them here is the only way a text changes. That is what makes the
reported edits replayable: start from a segment's (stripped) text and, rule by rule, apply that rule's
edits at their offsets; the result is the corrected text, character for character.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from escriba.transcript import Edit


@dataclass(frozen=True, slots=True)
class Change:
    """Replace ``text[start:end]`` with ``replacement`` (start == end inserts, "" deletes)."""

    start: int
    end: int
    replacement: str


def apply_changes(text: str, changes: Sequence[Change]) -> str:
    """Apply changes computed against ``text``; a rule that returns overlapping changes is a bug."""
    parts: list[str] = []
    position = 0
    for change in changes:
        if change.start < position or change.end < change.start or change.end > len(text):
            raise ValueError(f"changes overlap or fall outside the text: {change!r}")
        parts.append(text[position : change.start])
        parts.append(change.replacement)
        position = change.end
    parts.append(text[position:])
    return "".join(parts)


def to_edits(rule: str, text: str, changes: Sequence[Change], segment_id: int) -> list[Edit]:
    return [
        Edit(
            rule=rule,
            original=text[c.start : c.end],
            replacement=c.replacement,
            segment_id=segment_id,
            offset=c.start,
        )
        for c in changes
        if text[c.start : c.end] != c.replacement
    ]
