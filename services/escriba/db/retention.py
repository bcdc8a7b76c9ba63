"""Retention: finished tasks leave the database in small batches, whoever runs it and how often.

``escriba purge`` may run on every replica, or as a CronJob that overlaps its previous run: each batch
claims its rows with ``FOR UPDATE SKIP LOCKED``, so concurrent purgers take different rows instead of
waiting on each other, and a row another purger already deleted is simply not there. Each batch is one
short statement, so a purge of a million rows never holds a long transaction or many locks. A pass per
``is_archived`` value keeps every batch on the ``(is_archived, completed_at DESC)`` index. Stage
results and webhook attempts go with their task (ON DELETE CASCADE); the task's upload, if one is
still stored, is returned for the caller to delete from the object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from escriba.db.errors import database_errors

PURGE_FINISHED_SQL = """
WITH doomed AS (
    SELECT id FROM transcription_tasks
    WHERE is_archived = $3 AND completed_at < $1
    ORDER BY completed_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM transcription_tasks AS t USING doomed WHERE t.id = doomed.id
RETURNING t.audio_object
"""


@dataclass(frozen=True)
class PurgedBatch:
    """How many tasks one batch deleted, and the uploads they named."""

    tasks: int
    audio_objects: tuple[str, ...]


async def purge_finished_batch(
    pool: Any, *, completed_before: datetime, archived: bool, limit: int
) -> PurgedBatch:
    """Delete up to ``limit`` finished tasks (archived or not, as ``archived`` says) that ended before
    ``completed_before``, oldest first. Unfinished tasks have no ``completed_at`` and are never taken."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    with database_errors("purging finished tasks"):
        rows = await pool.fetch(PURGE_FINISHED_SQL, completed_before, limit, archived)
    return PurgedBatch(
        tasks=len(rows), audio_objects=tuple(r["audio_object"] for r in rows if r["audio_object"])
    )
