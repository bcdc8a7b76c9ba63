"""What the task repository takes and returns: typed values, never database rows.

Callers (gateway, workers) depend on these dataclasses only, so the schema can change behind the
repository and no asyncpg ``Record`` leaks past it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from escriba.db.states import Stage, TaskStatus
from escriba.transcript import Edit, Segment


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Wall-clock milliseconds; ``None`` until the step has happened."""

    upload_ms: float | None = None
    queue_ms: float | None = None
    preprocess_ms: float | None = None
    transcription_ms: float | None = None
    correction_ms: float | None = None
    total_ms: float | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to insert as ``queued``; ``id`` is generated (UUID4) when not given."""

    owner_id: str
    filename: str = ""
    audio_object: str = ""
    audio_sha256: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    upload_ms: float | None = None
    id: str | None = None
    #: The caller's key for a safe retry (unique per owner); None: every create is a new task.
    idempotency_key: str | None = None
    #: The serialized first job, stored with the row until published (the outbox); None: not kept.
    outbox_job: bytes | None = None
    #: What the upload holds in the object store, counted against the owner's quota while unfinished.
    upload_bytes: int = 0


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A task's first job that was stored but is not known to be published."""

    task_id: str
    status: TaskStatus
    job: bytes


@dataclass(frozen=True, slots=True)
class TaskResult:
    """The outcome of a completed task."""

    text: str
    corrected_text: str
    language: str
    language_probability: float = 0.0
    segments: tuple[Segment, ...] = ()
    edits: tuple[Edit, ...] = ()
    #: Rendered subtitle outputs by format name ("srt", "vtt").
    formats: Mapping[str, str] = field(default_factory=dict)
    model: str = ""
    rules_version: str = ""
    transcript_from_cache: bool = False
    #: Correction rules that did not run as asked, and why.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    owner_id: str
    status: TaskStatus
    is_archived: bool
    filename: str
    audio_object: str
    audio_sha256: str
    options: dict[str, Any]
    audio_duration_s: float | None
    audio: dict[str, Any]
    #: Set once completed; ``None`` before, and in listings asked for without results.
    result: TaskResult | None
    error_reason: str
    error: str
    attempts: int
    stage_attempts: dict[str, int]
    timings: StageTimings
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    #: Audio-seconds transcription has decoded so far (``None`` before it started).
    progress_audio_s: float | None = None


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One try at delivering a task's webhook: what the receiver answered, or why there was no answer."""

    task_id: str
    attempt: int
    at: datetime
    http_status: int
    error: str
    duration_ms: float
    delivered: bool


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of a guarded status change: ``task`` is the row after it (or as it was, when the
    guard refused: e.g. the task had been cancelled meanwhile)."""

    applied: bool
    task: TaskRecord


@dataclass(frozen=True, slots=True)
class StageResult:
    task_id: str
    stage: Stage
    result: dict[str, Any]
    duration_ms: float | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class StageWrite:
    """The outcome of an idempotent stage result write.

    A worker first looks at ``status``: terminal (cancelled, failed) means drop the job, nothing was
    stored. Otherwise ``applied`` says this call stored the result; not applied means a previous
    delivery already did, and ``stored`` holds that first result (use it, do not redo the work).
    """

    applied: bool
    stored: StageResult | None
    status: TaskStatus


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """What a listing selects; ``None`` / empty means "any"."""

    owner_id: str | None = None
    statuses: tuple[TaskStatus, ...] = ()
    archived: bool | None = None


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: tuple[TaskRecord, ...]
    #: Opaque token for the next page; empty on the last page.
    next_cursor: str
