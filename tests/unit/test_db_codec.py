"""Rows to records: transcripts survive the jsonb round trip and absent results stay absent."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from escriba.db.codec import (
    edit_from_json,
    edit_to_json,
    parse_task_id,
    segment_from_json,
    segment_to_json,
    task_from_row,
)
from escriba.db.states import TaskStatus
from escriba.transcript import Edit, Segment, Word

SEGMENT = Segment(
    id=3,
    start_s=1.25,
    end_s=4.5,
    text=" ask not what your country can do for you",
    words=(Word(1.25, 1.5, " ask", 0.93), Word(1.5, 1.75, " not", 0.88)),
    avg_logprob=-0.31,
    no_speech_prob=0.02,
    compression_ratio=1.4,
    temperature=0.2,
)
EDIT = Edit(rule="glossary", original="comfy ui", replacement="ComfyUI", segment_id=3, offset=7)


def test_segments_and_edits_survive_json() -> None:
    # Through real JSON text, as jsonb stores them.
    assert segment_from_json(json.loads(json.dumps(segment_to_json(SEGMENT)))) == SEGMENT
    assert edit_from_json(json.loads(json.dumps(edit_to_json(EDIT)))) == EDIT
    full_text_edit = Edit(rule="spacing", original="  ", replacement=" ")
    assert edit_from_json(edit_to_json(full_text_edit)) == full_text_edit


def _row(**overrides: Any) -> dict[str, Any]:
    now = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    row: dict[str, Any] = {
        "id": uuid.UUID("8d6c4f0e-5a43-4e0b-9a53-3c1f7f0c2b11"),
        "owner_id": "team-a",
        "status": "queued",
        "is_archived": False,
        "filename": "a.wav",
        "audio_object": "uploads/a",
        "audio_sha256": "00" * 32,
        "options": {"output_formats": ["srt"]},
        "audio_duration_s": None,
        "audio": {},
        "error_reason": "",
        "error": "",
        "attempts": 0,
        "stage_attempts": {},
        "upload_ms": 3.0,
        "queue_ms": None,
        "preprocess_ms": None,
        "transcription_ms": None,
        "correction_ms": None,
        "total_ms": None,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "completed_at": None,
        "progress_audio_s": None,
        "language": "",
        "language_probability": None,
        "model": "",
        "rules_version": "",
        "transcript_from_cache": False,
        "text": None,
        "corrected_text": None,
        "segments": [],
        "edits": [],
        "formats": {},
        "notes": [],
    }
    row.update(overrides)
    return row


def test_unfinished_task_has_no_result() -> None:
    record = task_from_row(_row(), with_result=True)
    assert record.id == "8d6c4f0e-5a43-4e0b-9a53-3c1f7f0c2b11"
    assert record.status is TaskStatus.QUEUED and record.result is None
    assert record.timings.upload_ms == 3.0 and record.timings.total_ms is None


def test_completed_row_carries_its_result() -> None:
    row = _row(
        status="completed",
        text=" ask not",
        corrected_text="Ask not.",
        language="en",
        language_probability=0.99,
        segments=[segment_to_json(SEGMENT)],
        edits=[edit_to_json(EDIT)],
        formats={"vtt": "WEBVTT\n"},
        stage_attempts={"transcription": 2},
        notes=["spelling: skipped"],
    )
    record = task_from_row(row, with_result=True)
    assert record.result is not None
    assert record.result.notes == ("spelling: skipped",)
    assert record.result.segments == (SEGMENT,) and record.result.edits == (EDIT,)
    assert record.result.formats == {"vtt": "WEBVTT\n"} and record.stage_attempts == {"transcription": 2}
    # A listing without results does not pretend the task has none: the columns were not selected.
    light = {k: v for k, v in row.items() if k not in {"text", "segments", "edits", "formats", "notes"}}
    assert task_from_row(light, with_result=False).result is None


def test_task_ids_must_be_uuids() -> None:
    assert parse_task_id("8D6C4F0E-5A43-4E0B-9A53-3C1F7F0C2B11") == uuid.UUID(
        "8d6c4f0e-5a43-4e0b-9a53-3c1f7f0c2b11"
    )
    for bad in ("", "42", "8d6c4f0e-5a43-4e0b-9a53", "x" * 36):
        assert parse_task_id(bad) is None
