"""The ListTasks query and its page cursor, designed together with the indexes of migration 0001.

Pages are keyset-paginated on ``(created_at DESC, id DESC)``: the cursor carries the last row's pair
and the next page starts strictly after it, so pages neither skip nor repeat rows when tasks are
inserted meanwhile, and page 1000 costs what page 1 costs (no OFFSET). ``id`` breaks ties between
tasks created in the same transaction.

The SQL text is built from the filters that are present rather than written once with
``$n IS NULL OR ...`` clauses: PostgreSQL caches generic plans for prepared statements, and a
generic plan for an optional-filter query cannot use the owner or status indexes. Each filter shape is
its own statement, served by the index whose equality prefix matches it, which then returns rows
already in page order (no sort):

* owner                 -> ``transcription_tasks_owner_list_idx (owner_id, created_at, id)``
* owner + archived      -> ``transcription_tasks_owner_archived_list_idx (owner_id, is_archived, ...)``
* owner + one status    -> ``transcription_tasks_status_owner_idx (status, owner_id, created_at, id)``
* several statuses      -> the same index, one range per status, then a sort of those rows
* no owner              -> ``transcription_tasks_created_idx (created_at, id)``, filters applied on the way

Only column names from this module and ``$n`` placeholders enter the SQL; values never do.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from escriba.db.errors import InvalidCursor
from escriba.db.models import TaskFilter

MAX_PAGE_SIZE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_VERSION = 1

#: Every column but the result ones: what a listing without results selects.
SUMMARY_COLUMNS = (
    "id, owner_id, status, is_archived, filename, audio_object, audio_sha256, options, audio_duration_s, "
    "audio, error_reason, error, attempts, stage_attempts, upload_ms, queue_ms, preprocess_ms, "
    "transcription_ms, correction_ms, total_ms, created_at, updated_at, started_at, completed_at, "
    "progress_audio_s"
)
#: The result columns, added when results are asked for.
RESULT_COLUMNS = (
    "language, language_probability, model, rules_version, transcript_from_cache, text, corrected_text, "
    "segments, edits, formats, notes"
)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Position after the last row of a page."""

    created_at: datetime
    id: uuid.UUID


def encode_cursor(created_at: datetime, task_id: uuid.UUID | str) -> str:
    delta = created_at - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    payload = json.dumps({"v": _CURSOR_VERSION, "t": micros, "i": uuid.UUID(str(task_id)).hex})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(data, dict) or data.get("v") != _CURSOR_VERSION:
            raise ValueError("unknown cursor version")
        micros = data["t"]
        if not isinstance(micros, int) or isinstance(micros, bool):
            raise ValueError("bad timestamp")
        return Cursor(created_at=_EPOCH + timedelta(microseconds=micros), id=uuid.UUID(hex=str(data["i"])))
    except (ValueError, KeyError, TypeError, OverflowError, UnicodeError, binascii.Error) as exc:
        raise InvalidCursor(f"page token {token[:40]!r} is not one this server issued") from exc


def build_list_query(
    task_filter: TaskFilter, *, cursor: Cursor | None, limit: int, include_results: bool
) -> tuple[str, list[Any]]:
    """SQL and arguments selecting up to ``limit`` tasks after ``cursor``, newest first."""
    columns = SUMMARY_COLUMNS + (", " + RESULT_COLUMNS if include_results else "")
    conditions: list[str] = []
    args: list[Any] = []

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if task_filter.owner_id is not None:
        conditions.append(f"owner_id = {param(task_filter.owner_id)}")
    statuses = sorted({str(s) for s in task_filter.statuses})
    if len(statuses) == 1:
        conditions.append(f"status = {param(statuses[0])}")
    elif statuses:
        conditions.append(f"status = ANY({param(statuses)}::text[])")
    if task_filter.archived is not None:
        conditions.append(f"is_archived = {param(task_filter.archived)}")
    if cursor is not None:
        conditions.append(f"(created_at, id) < ({param(cursor.created_at)}, {param(cursor.id)})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        f"SELECT {columns} FROM transcription_tasks{where}"
        f" ORDER BY created_at DESC, id DESC LIMIT {param(limit)}"
    )
    return sql, args
