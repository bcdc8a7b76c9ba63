"""TaskRecord (the repository's view) to the public ``escriba.v1.Task`` message, and back for statuses."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from escriba.db.models import TaskRecord, WebhookAttempt
from escriba.db.states import TaskStatus
from escriba.transcript_pb import edit_to_pb, segment_to_pb
from escriba.v1 import common_pb2, tasks_pb2

_STATUS = {
    TaskStatus.QUEUED: tasks_pb2.TASK_STATUS_QUEUED,
    TaskStatus.PREPROCESSING: tasks_pb2.TASK_STATUS_PREPROCESSING,
    TaskStatus.TRANSCRIBING: tasks_pb2.TASK_STATUS_TRANSCRIBING,
    TaskStatus.CORRECTING: tasks_pb2.TASK_STATUS_CORRECTING,
    TaskStatus.COMPLETED: tasks_pb2.TASK_STATUS_COMPLETED,
    TaskStatus.FAILED: tasks_pb2.TASK_STATUS_FAILED,
    TaskStatus.CANCELLED: tasks_pb2.TASK_STATUS_CANCELLED,
}


def status_to_pb(status: TaskStatus) -> tasks_pb2.TaskStatus.ValueType:
    return _STATUS[status]


def status_from_pb(value: int) -> TaskStatus | None:
    for status, number in _STATUS.items():
        if number == value:
            return status
    return None


def spec_to_dict(spec: tasks_pb2.TaskSpec) -> dict[str, Any]:
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


def spec_from_dict(data: dict[str, Any]) -> tasks_pb2.TaskSpec:
    return json_format.ParseDict(data, tasks_pb2.TaskSpec(), ignore_unknown_fields=True)


def audio_to_dict(info: common_pb2.AudioInfo) -> dict[str, Any]:
    return json_format.MessageToDict(info, preserving_proto_field_name=True)


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def webhook_attempts_to_pb(attempts: Iterable[WebhookAttempt]) -> list[tasks_pb2.WebhookAttempt]:
    out = []
    for a in attempts:
        item = tasks_pb2.WebhookAttempt(
            attempt=a.attempt,
            http_status=a.http_status,
            error=a.error,
            duration_ms=a.duration_ms,
            delivered=a.delivered,
        )
        item.at.FromDatetime(a.at)
        out.append(item)
    return out


def task_to_pb(record: TaskRecord, *, include_result: bool = True) -> tasks_pb2.Task:
    task = tasks_pb2.Task(
        id=record.id,
        owner_id=record.owner_id,
        status=status_to_pb(record.status),
        is_archived=record.is_archived,
        spec=spec_from_dict(record.options),
        error=record.error,
        error_reason=record.error_reason,
        attempts=record.attempts,
    )
    if record.audio:
        json_format.ParseDict(record.audio, task.audio, ignore_unknown_fields=True)
    timings = record.timings
    task.timings.CopyFrom(
        common_pb2.StageTimings(
            upload_ms=timings.upload_ms or 0.0,
            queue_ms=timings.queue_ms or 0.0,
            preprocess_ms=timings.preprocess_ms or 0.0,
            transcription_ms=timings.transcription_ms or 0.0,
            correction_ms=timings.correction_ms or 0.0,
            total_ms=timings.total_ms or 0.0,
        )
    )
    for field, value in (
        ("created_at", record.created_at),
        ("started_at", record.started_at),
        ("completed_at", record.completed_at),
    ):
        ts = _timestamp(value)
        if ts is not None:
            getattr(task, field).CopyFrom(ts)
    if record.status is TaskStatus.COMPLETED and record.audio_duration_s is not None:
        task.progress.CopyFrom(
            tasks_pb2.Progress(audio_done_s=record.audio_duration_s, audio_total_s=record.audio_duration_s)
        )
    elif record.progress_audio_s is not None:
        task.progress.CopyFrom(
            tasks_pb2.Progress(
                audio_done_s=record.progress_audio_s, audio_total_s=record.audio_duration_s or 0.0
            )
        )
    result = record.result
    if include_result and result is not None:
        task.result.CopyFrom(
            tasks_pb2.TaskResult(
                text=result.text,
                corrected_text=result.corrected_text,
                segments=[segment_to_pb(s) for s in result.segments],
                edits=[edit_to_pb(e) for e in result.edits],
                language=result.language,
                language_probability=result.language_probability,
                duration_s=record.audio_duration_s or 0.0,
                srt=result.formats.get("srt", ""),
                vtt=result.formats.get("vtt", ""),
                model=result.model,
                rules_version=result.rules_version,
                transcript_from_cache=result.transcript_from_cache,
                notes=list(result.notes),
            )
        )
    return task
