"""The task repository: every read and write of ``transcription_tasks`` and ``task_stage_results``.

Two rules shape it. Status changes are single guarded statements (``UPDATE ... WHERE status =
ANY(allowed) RETURNING``, sources from :mod:`escriba.db.states`), so the database arbitrates races:
a cancel that lands first makes the later stage's update match no row, and a completed task matches
no transition at all. And a stage's result is written once per (task, stage) (primary key, ``ON
CONFLICT DO NOTHING``), so a job JetStream redelivers after a lost worker finds the first result
instead of writing a second one.

Owner-scoped calls (``get``, ``cancel``, ``archive`` with ``owner_id``) report another owner's task
exactly like a missing one, so ids cannot be probed across owners. Workers pass ``owner_id=None``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from escriba.common.errors import InvalidInputError
from escriba.db.codec import (
    edits_to_json,
    parse_task_id,
    segments_to_json,
    stage_result_from_row,
    task_from_row,
)
from escriba.db.errors import TaskAlreadyExists, TaskNotFound, database_errors
from escriba.db.list_query import (
    MAX_PAGE_SIZE,
    RESULT_COLUMNS,
    SUMMARY_COLUMNS,
    build_list_query,
    decode_cursor,
    encode_cursor,
)
from escriba.db.models import (
    NewTask,
    OutboxEntry,
    StageResult,
    StageWrite,
    TaskFilter,
    TaskPage,
    TaskRecord,
    TaskResult,
    Transition,
    WebhookAttempt,
)
from escriba.db.states import ACTIVE, TERMINAL, Stage, TaskStatus, allowed_sources, stage_status
from escriba.stages import STAGES

ALL_COLUMNS = f"{SUMMARY_COLUMNS}, {RESULT_COLUMNS}"
DEFAULT_PAGE_SIZE = 50
#: Oldest archived tasks first, a bounded batch per call ($1: completed before, $2: batch size).
#: ``= ANY(ARRAY(...))`` rather than ``IN (SELECT ...)``: the latter plans as a hash semi-join over a
#: sequential scan of the whole table; the array form deletes through the primary key.
PURGE_ARCHIVED_SQL = (
    "DELETE FROM transcription_tasks WHERE id = ANY(ARRAY("
    " SELECT id FROM transcription_tasks WHERE is_archived AND completed_at < $1"
    " ORDER BY completed_at LIMIT $2))"
)

_STAGE_TIMING_COLUMN = {stage: spec.timing_column for stage, spec in STAGES.items()}
# Milliseconds from creation to now, plus the upload that preceded the row.
_TOTAL_MS = "COALESCE(upload_ms, 0) + extract(epoch FROM now() - created_at) * 1000"


def _statuses(statuses: Iterable[TaskStatus]) -> list[str]:
    return sorted(s.value for s in statuses)


class TaskRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # Reads ---------------------------------------------------------------------------------------

    async def get(self, task_id: str, *, owner_id: str | None) -> TaskRecord:
        """The task, with its result; :class:`TaskNotFound` when missing or owned by someone else."""
        tid = self._task_uuid(task_id)
        sql = f"SELECT {ALL_COLUMNS} FROM transcription_tasks WHERE id = $1"
        args: list[Any] = [tid]
        if owner_id is not None:
            sql += " AND owner_id = $2"
            args.append(owner_id)
        with database_errors("reading a task"):
            row = await self._pool.fetchrow(sql, *args)
        if row is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task_from_row(row, with_result=True)

    async def list_tasks(
        self,
        task_filter: TaskFilter,
        *,
        cursor: str = "",
        limit: int = DEFAULT_PAGE_SIZE,
        include_results: bool = False,
    ) -> TaskPage:
        """One page of tasks, newest first; pass the page's ``next_cursor`` back for the next one."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInputError(
                f"page size must be between 1 and {MAX_PAGE_SIZE}, got {limit}", reason="invalid_page_size"
            )
        position = decode_cursor(cursor) if cursor else None
        # One row more than asked tells whether another page exists without a COUNT.
        sql, args = build_list_query(
            task_filter, cursor=position, limit=limit + 1, include_results=include_results
        )
        with database_errors("listing tasks"):
            rows = await self._pool.fetch(sql, *args)
        tasks = tuple(task_from_row(row, with_result=include_results) for row in rows[:limit])
        next_cursor = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last["created_at"], last["id"])
        return TaskPage(tasks=tasks, next_cursor=next_cursor)

    async def count_unfinished(self, owner_id: str, *, up_to: int) -> int:
        """How many of the owner's tasks are queued or in a stage, counting no further than ``up_to``.

        The bound keeps the check cheap however large a backlog grows: the ``(status, owner_id)`` index
        is read for at most ``up_to`` rows.
        """
        with database_errors("counting unfinished tasks"):
            count = await self._pool.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM transcription_tasks"
                " WHERE status = ANY($1::text[]) AND owner_id = $2 LIMIT $3) AS unfinished",
                _statuses(ACTIVE),
                owner_id,
                up_to,
            )
        return int(count)

    async def stored_bytes(self, owner_id: str) -> int:
        """Bytes the owner's unfinished tasks hold in the upload bucket (a finished task's upload is
        deleted, so only these count). Reads the ``(status, owner_id)`` index for at most the owner's
        unfinished tasks, which the queue limit bounds."""
        with database_errors("counting stored bytes"):
            total = await self._pool.fetchval(
                "SELECT COALESCE(sum(upload_bytes), 0) FROM transcription_tasks"
                " WHERE status = ANY($1::text[]) AND owner_id = $2",
                _statuses(ACTIVE),
                owner_id,
            )
        return int(total)

    async def get_stage_result(self, task_id: str, stage: Stage) -> StageResult | None:
        """What a previous delivery of ``stage`` stored for the task, if anything."""
        tid = self._task_uuid(task_id)
        with database_errors("reading a stage result"):
            row = await self._pool.fetchrow(
                "SELECT task_id, stage, result, duration_ms, recorded_at FROM task_stage_results"
                " WHERE task_id = $1 AND stage = $2",
                tid,
                stage.value,
            )
        return None if row is None else stage_result_from_row(row)

    # Writes --------------------------------------------------------------------------------------

    async def create(self, task: NewTask) -> TaskRecord:
        """Insert ``task`` as ``queued``; :class:`TaskAlreadyExists` when its id (or its owner's
        idempotency key) is taken."""
        row = await self._insert(task, skip_taken_key=False)
        assert row is not None
        return task_from_row(row, with_result=True)

    async def create_once(self, task: NewTask) -> tuple[TaskRecord, bool]:
        """Insert ``task`` unless its owner already has a task with its idempotency key; returns the
        task and whether it was created now. Two concurrent creates with one key insert one row."""
        if not task.idempotency_key:
            return await self.create(task), True
        for _ in range(2):
            row = await self._insert(task, skip_taken_key=True)
            if row is not None:
                return task_from_row(row, with_result=True), True
            existing = await self.find_by_idempotency_key(task.owner_id, task.idempotency_key)
            if existing is not None:
                return existing, False
            # The task holding the key was deleted between the two statements: insert again.
        raise TaskAlreadyExists(f"the idempotency key {task.idempotency_key!r} is in use")

    async def _insert(self, task: NewTask, *, skip_taken_key: bool) -> asyncpg.Record | None:
        """The INSERT of a new task; None when ``skip_taken_key`` and its owner's key is taken."""
        if not task.owner_id:
            raise InvalidInputError("a task needs an owner", reason="missing_owner")
        tid = uuid.uuid4() if task.id is None else parse_task_id(task.id)
        if tid is None:
            raise InvalidInputError(f"task id {task.id!r} is not a UUID", reason="invalid_task_id")
        on_conflict = (
            " ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
            if skip_taken_key
            else ""
        )
        with database_errors("creating a task"):
            try:
                row: asyncpg.Record | None = await self._pool.fetchrow(
                    "INSERT INTO transcription_tasks (id, owner_id, filename, audio_object, audio_sha256,"
                    " options, upload_ms, idempotency_key, outbox_job, outbox_since, upload_bytes)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::bytea,"
                    " CASE WHEN $9::bytea IS NULL THEN NULL ELSE now() END, $10)"
                    f"{on_conflict} RETURNING {ALL_COLUMNS}",
                    tid,
                    task.owner_id,
                    task.filename,
                    task.audio_object,
                    task.audio_sha256,
                    dict(task.options),
                    task.upload_ms,
                    task.idempotency_key,
                    task.outbox_job,
                    task.upload_bytes,
                )
            except asyncpg.UniqueViolationError as exc:
                raise TaskAlreadyExists(f"task {tid} already exists") from exc
        return row

    async def find_by_idempotency_key(self, owner_id: str, key: str) -> TaskRecord | None:
        with database_errors("finding a task by idempotency key"):
            row = await self._pool.fetchrow(
                f"SELECT {ALL_COLUMNS} FROM transcription_tasks WHERE owner_id = $1 AND idempotency_key = $2",
                owner_id,
                key,
            )
        return None if row is None else task_from_row(row, with_result=True)

    async def start_stage(self, task_id: str, stage: Stage) -> Transition:
        """Move the task into ``stage`` (re-entering it is allowed: a redelivered job).

        Not applied when the task is terminal (e.g. cancelled meanwhile) or already past ``stage``.
        """
        return await self._transition(
            task_id,
            allowed_sources(stage_status(stage)),
            "status = $3, started_at = COALESCE(started_at, now()),"
            " queue_ms = COALESCE(queue_ms, extract(epoch FROM now() - created_at) * 1000)",
            [stage_status(stage).value],
        )

    async def complete(self, task_id: str, result: TaskResult) -> Transition:
        """Store ``result`` and mark the task completed; not applied when it is already terminal."""
        return await self._transition(
            task_id,
            allowed_sources(TaskStatus.COMPLETED),
            f"status = 'completed', completed_at = now(), total_ms = {_TOTAL_MS},"
            " text = $3, corrected_text = $4, language = $5, language_probability = $6, segments = $7,"
            " edits = $8, formats = $9, model = $10, rules_version = $11, transcript_from_cache = $12,"
            " notes = $13",
            [
                result.text,
                result.corrected_text,
                result.language,
                result.language_probability,
                segments_to_json(result.segments),
                edits_to_json(result.edits),
                dict(result.formats),
                result.model,
                result.rules_version,
                result.transcript_from_cache,
                list(result.notes),
            ],
        )

    async def fail(self, task_id: str, reason: str, message: str) -> Transition:
        """Mark the task failed with a machine ``reason`` and a readable ``message``."""
        if not reason:
            raise InvalidInputError("a failure needs a reason", reason="missing_reason")
        return await self._transition(
            task_id,
            allowed_sources(TaskStatus.FAILED),
            f"status = 'failed', completed_at = now(), total_ms = {_TOTAL_MS}, error_reason = $3, error = $4",
            [reason, message],
        )

    async def cancel(self, task_id: str, *, owner_id: str | None) -> Transition:
        """Cancel a task that has not finished; later stage transitions of it are not applied."""
        return await self._transition(
            task_id,
            allowed_sources(TaskStatus.CANCELLED),
            f"status = 'cancelled', completed_at = now(), total_ms = {_TOTAL_MS}",
            [],
            owner_id=owner_id,
        )

    async def archive(self, task_id: str, *, owner_id: str | None) -> Transition:
        """Hide a finished task from default listings; not applied to unfinished or archived tasks."""
        return await self._transition(
            task_id, TERMINAL, "is_archived = true", [], owner_id=owner_id, guard="NOT is_archived"
        )

    async def record_attempt(self, task_id: str, stage: Stage) -> int:
        """Count one more delivery of ``stage`` for the task; returns that stage's count."""
        tid = self._task_uuid(task_id)
        with database_errors("recording an attempt"):
            count = await self._pool.fetchval(
                "UPDATE transcription_tasks SET attempts = attempts + 1,"
                " stage_attempts = jsonb_set(stage_attempts, ARRAY[$2::text],"
                "   to_jsonb(COALESCE((stage_attempts ->> $2::text)::int, 0) + 1)),"
                " updated_at = now()"
                " WHERE id = $1 RETURNING (stage_attempts ->> $2::text)::int",
                tid,
                stage.value,
            )
        if count is None:
            raise TaskNotFound(f"task {task_id} not found")
        return int(count)

    async def record_audio(self, task_id: str, *, duration_s: float, info: Mapping[str, Any]) -> None:
        """Store what preprocessing learned about the audio (duration, AudioInfo as JSON)."""
        if not duration_s >= 0:
            raise InvalidInputError(
                f"audio duration must be >= 0 s, got {duration_s}", reason="invalid_duration"
            )
        tid = self._task_uuid(task_id)
        with database_errors("recording audio info"):
            status = await self._pool.execute(
                "UPDATE transcription_tasks SET audio_duration_s = $2, audio = $3, updated_at = now()"
                " WHERE id = $1",
                tid,
                duration_s,
                dict(info),
            )
        if status == "UPDATE 0":
            raise TaskNotFound(f"task {task_id} not found")

    async def record_progress(self, task_id: str, audio_s: float) -> None:
        """How far transcription is; only while the task is transcribing (a late report after the task
        moved on, or a smaller number, changes nothing)."""
        tid = self._task_uuid(task_id)
        with database_errors("recording progress"):
            await self._pool.execute(
                "UPDATE transcription_tasks SET progress_audio_s = $2"
                " WHERE id = $1 AND status = $3"
                " AND (progress_audio_s IS NULL OR progress_audio_s < $2)",
                tid,
                max(0.0, float(audio_s)),
                TaskStatus.TRANSCRIBING.value,
            )

    async def record_webhook_attempt(
        self,
        task_id: str,
        attempt: int,
        *,
        http_status: int,
        error: str,
        duration_ms: float,
        delivered: bool,
    ) -> None:
        """One delivery attempt (a redelivered attempt number overwrites its row: the last word wins)."""
        tid = self._task_uuid(task_id)
        with database_errors("recording a webhook attempt"):
            await self._pool.execute(
                "INSERT INTO webhook_attempts (task_id, attempt, http_status, error, duration_ms, delivered)"
                " VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (task_id, attempt) DO UPDATE SET at = now(), http_status = $3, error = $4,"
                " duration_ms = $5, delivered = $6",
                tid,
                attempt,
                http_status,
                error[:2000],
                max(0.0, duration_ms),
                delivered,
            )

    async def webhook_attempts(self, task_id: str) -> list[WebhookAttempt]:
        tid = self._task_uuid(task_id)
        with database_errors("reading webhook attempts"):
            rows = await self._pool.fetch(
                "SELECT task_id, attempt, at, http_status, error, duration_ms, delivered"
                " FROM webhook_attempts WHERE task_id = $1 ORDER BY attempt",
                tid,
            )
        return [
            WebhookAttempt(
                task_id=str(r["task_id"]),
                attempt=r["attempt"],
                at=r["at"],
                http_status=r["http_status"],
                error=r["error"],
                duration_ms=r["duration_ms"],
                delivered=r["delivered"],
            )
            for r in rows
        ]

    async def record_stage_result(
        self, task_id: str, stage: Stage, result: Mapping[str, Any], *, duration_ms: float | None = None
    ) -> StageWrite:
        """Store the result of ``stage`` once; see :class:`StageWrite` for what a worker does next.

        The first write for (task, stage) wins; its ``duration_ms`` also becomes the stage's timing.
        Nothing is stored for a terminal task.
        """
        if duration_ms is not None and not duration_ms >= 0:
            raise InvalidInputError(f"duration must be >= 0 ms, got {duration_ms}", reason="invalid_duration")
        tid = self._task_uuid(task_id)
        select_result = "task_id, stage, result, duration_ms, recorded_at"
        with database_errors("recording a stage result"):
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO task_stage_results (task_id, stage, result, duration_ms)"
                    " SELECT id, $2::text, $3::jsonb, $4::float8 FROM transcription_tasks"
                    "  WHERE id = $1 AND status = ANY($5::text[])"
                    f" ON CONFLICT (task_id, stage) DO NOTHING RETURNING {select_result}",
                    tid,
                    stage.value,
                    dict(result),
                    duration_ms,
                    _statuses(ACTIVE),
                )
                if row is not None:
                    column = _STAGE_TIMING_COLUMN[stage]
                    status = await conn.fetchval(
                        f"UPDATE transcription_tasks SET {column} = COALESCE($2, {column}),"
                        " updated_at = now() WHERE id = $1 RETURNING status",
                        tid,
                        duration_ms,
                    )
                    return StageWrite(
                        applied=True, stored=stage_result_from_row(row), status=TaskStatus(status)
                    )
                status = await conn.fetchval("SELECT status FROM transcription_tasks WHERE id = $1", tid)
                if status is None:
                    raise TaskNotFound(f"task {task_id} not found")
                existing = await conn.fetchrow(
                    f"SELECT {select_result} FROM task_stage_results WHERE task_id = $1 AND stage = $2",
                    tid,
                    stage.value,
                )
        stored = None if existing is None else stage_result_from_row(existing)
        return StageWrite(applied=False, stored=stored, status=TaskStatus(status))

    # The outbox of first jobs -------------------------------------------------------------------

    async def outbox_published(self, task_id: str) -> None:
        """The task's first job is on the queue: nothing is left for a reconciler to publish."""
        with database_errors("clearing a task's outbox"):
            await self._pool.execute(
                "UPDATE transcription_tasks SET outbox_job = NULL, outbox_since = NULL"
                " WHERE id = $1 AND outbox_job IS NOT NULL",
                self._task_uuid(task_id),
            )

    async def claim_outbox(self, *, older_than_s: float, limit: int = 100) -> list[OutboxEntry]:
        """Take up to ``limit`` first jobs stored more than ``older_than_s`` ago (or claimed that long
        ago by a reconciler that did not finish) and restart their clock, so another replica running
        the same loop leaves them alone for as long: ``FOR UPDATE SKIP LOCKED`` keeps two concurrent
        claims apart, the restarted clock keeps them apart afterwards."""
        with database_errors("claiming the outbox"):
            rows = await self._pool.fetch(
                "UPDATE transcription_tasks SET outbox_since = now() WHERE id = ANY(ARRAY("
                " SELECT id FROM transcription_tasks WHERE outbox_job IS NOT NULL"
                " AND outbox_since < now() - make_interval(secs => $1)"
                " ORDER BY outbox_since LIMIT $2 FOR UPDATE SKIP LOCKED))"
                " RETURNING id, status, outbox_job",
                older_than_s,
                limit,
            )
        return [OutboxEntry(str(r["id"]), TaskStatus(r["status"]), bytes(r["outbox_job"])) for r in rows]

    async def purge_archived(self, *, completed_before: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` archived tasks that finished before ``completed_before``, oldest
        first; returns how many. Retention jobs call it until it returns 0."""
        with database_errors("purging archived tasks"):
            status = await self._pool.execute(PURGE_ARCHIVED_SQL, completed_before, limit)
        return int(str(status).rsplit(" ", 1)[-1])

    # Internals -----------------------------------------------------------------------------------

    @staticmethod
    def _task_uuid(task_id: str) -> uuid.UUID:
        tid = parse_task_id(task_id)
        if tid is None:
            raise TaskNotFound(f"task {task_id!r} not found")
        return tid

    async def _transition(
        self,
        task_id: str,
        sources: Iterable[TaskStatus],
        assignments: str,
        args: Sequence[Any],
        *,
        owner_id: str | None = None,
        guard: str = "",
    ) -> Transition:
        """Apply ``assignments`` (placeholders from $3) if the task's status is in ``sources``.

        The guard is part of the UPDATE, so PostgreSQL arbitrates races: a concurrent change is
        waited for and the guard re-checked on the row it left, hence of two racing transitions only
        one that is still allowed applies. When nothing matched, a second statement (with a fresh
        snapshot, so it sees whatever won the race) reads the row as it is now, to tell the caller
        why; a missing row, or one of another owner, is :class:`TaskNotFound`.
        """
        tid = self._task_uuid(task_id)
        params: list[Any] = [tid, _statuses(sources), *args]
        scope = ""
        if owner_id is not None:
            params.append(owner_id)
            scope = f" AND owner_id = ${len(params)}"
        extra = f" AND {guard}" if guard else ""
        update = (
            f"UPDATE transcription_tasks SET {assignments}, updated_at = now()"
            f" WHERE id = $1 AND status = ANY($2::text[]){extra}{scope}"
            f" RETURNING {ALL_COLUMNS}"
        )
        with database_errors("changing a task's status"):
            row = await self._pool.fetchrow(update, *params)
            if row is not None:
                return Transition(applied=True, task=task_from_row(row, with_result=True))
            current = f"SELECT {ALL_COLUMNS} FROM transcription_tasks WHERE id = $1"
            if owner_id is not None:
                row = await self._pool.fetchrow(current + " AND owner_id = $2", tid, owner_id)
            else:
                row = await self._pool.fetchrow(current, tid)
        if row is None:
            raise TaskNotFound(f"task {task_id} not found")
        return Transition(applied=False, task=task_from_row(row, with_result=True))
