"""Between table rows (and their jsonb columns) and the repository's dataclasses.

Segments and edits are stored as plain JSON objects with the domain field names, so the stored
transcript stays readable with ``psql`` and a schema change needs no custom decoder.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from escriba.db.models import StageResult, StageTimings, TaskRecord, TaskResult
from escriba.db.states import Stage, TaskStatus
from escriba.transcript import Edit, Segment, Word

Row = Mapping[str, Any]


def segment_to_json(segment: Segment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": segment.id,
        "start_s": segment.start_s,
        "end_s": segment.end_s,
        "text": segment.text,
        "words": [
            {"start_s": w.start_s, "end_s": w.end_s, "word": w.word, "probability": w.probability}
            for w in segment.words
        ],
        "avg_logprob": segment.avg_logprob,
        "no_speech_prob": segment.no_speech_prob,
        "compression_ratio": segment.compression_ratio,
        "temperature": segment.temperature,
    }
    if segment.channel is not None:  # per-channel transcripts only: others keep their old shape
        data["channel"] = segment.channel
        data["speaker"] = segment.speaker
    return data


def segment_from_json(data: Mapping[str, Any]) -> Segment:
    return Segment(
        id=int(data["id"]),
        start_s=float(data["start_s"]),
        end_s=float(data["end_s"]),
        text=str(data["text"]),
        words=tuple(
            Word(
                start_s=float(w["start_s"]),
                end_s=float(w["end_s"]),
                word=str(w["word"]),
                probability=float(w.get("probability", 0.0)),
            )
            for w in data.get("words", ())
        ),
        avg_logprob=float(data.get("avg_logprob", 0.0)),
        no_speech_prob=float(data.get("no_speech_prob", 0.0)),
        compression_ratio=float(data.get("compression_ratio", 0.0)),
        temperature=float(data.get("temperature", 0.0)),
        channel=int(data["channel"]) if data.get("channel") is not None else None,
        speaker=str(data.get("speaker", "")),
    )


def edit_to_json(edit: Edit) -> dict[str, Any]:
    return {
        "rule": edit.rule,
        "original": edit.original,
        "replacement": edit.replacement,
        "segment_id": edit.segment_id,
        "offset": edit.offset,
    }


def edit_from_json(data: Mapping[str, Any]) -> Edit:
    return Edit(
        rule=str(data["rule"]),
        original=str(data["original"]),
        replacement=str(data["replacement"]),
        segment_id=int(data.get("segment_id", -1)),
        offset=int(data.get("offset", 0)),
    )


def segments_to_json(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    return [segment_to_json(s) for s in segments]


def edits_to_json(edits: Sequence[Edit]) -> list[dict[str, Any]]:
    return [edit_to_json(e) for e in edits]


def _result_from_row(row: Row) -> TaskResult | None:
    if row["text"] is None:
        return None
    return TaskResult(
        text=row["text"],
        corrected_text=row["corrected_text"] or "",
        language=row["language"],
        language_probability=row["language_probability"] or 0.0,
        segments=tuple(segment_from_json(s) for s in row["segments"]),
        edits=tuple(edit_from_json(e) for e in row["edits"]),
        formats={str(k): str(v) for k, v in row["formats"].items()},
        model=row["model"],
        rules_version=row["rules_version"],
        transcript_from_cache=row["transcript_from_cache"],
        notes=tuple(str(n) for n in row["notes"]),
    )


def task_from_row(row: Row, *, with_result: bool) -> TaskRecord:
    """Build a :class:`TaskRecord`; ``with_result=False`` for rows selected without the result columns."""
    return TaskRecord(
        id=str(row["id"]),
        owner_id=row["owner_id"],
        status=TaskStatus(row["status"]),
        is_archived=row["is_archived"],
        filename=row["filename"],
        audio_object=row["audio_object"],
        audio_sha256=row["audio_sha256"],
        options=dict(row["options"]),
        audio_duration_s=row["audio_duration_s"],
        audio=dict(row["audio"]),
        result=_result_from_row(row) if with_result else None,
        error_reason=row["error_reason"],
        error=row["error"],
        attempts=row["attempts"],
        stage_attempts={str(k): int(v) for k, v in row["stage_attempts"].items()},
        timings=StageTimings(
            upload_ms=row["upload_ms"],
            queue_ms=row["queue_ms"],
            preprocess_ms=row["preprocess_ms"],
            transcription_ms=row["transcription_ms"],
            correction_ms=row["correction_ms"],
            total_ms=row["total_ms"],
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        progress_audio_s=row["progress_audio_s"],
    )


def stage_result_from_row(row: Row) -> StageResult:
    return StageResult(
        task_id=str(row["task_id"]),
        stage=Stage(row["stage"]),
        result=dict(row["result"]),
        duration_ms=row["duration_ms"],
        recorded_at=row["recorded_at"],
    )


def parse_task_id(task_id: str) -> uuid.UUID | None:
    """The UUID of a task id string, or ``None`` when it cannot name any task."""
    try:
        return uuid.UUID(task_id)
    except (ValueError, AttributeError, TypeError):
        return None
