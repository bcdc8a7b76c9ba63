"""``escriba purge``: retention of finished tasks as a job that really runs (the chart's CronJob).

Rows go in batches (:mod:`escriba.db.retention`, safe to run concurrently); an upload a finished task
still names is deleted from the object store too. Uploads are normally deleted the moment their task
ends, so these are the ones whose deletion failed then (NATS away): without this they would stay until
the bucket's TTL. Cache entries keep their own TTLs. Any failure raises an Escriba error, which the
CLI turns into a readable message and a non-zero exit, so a failing CronJob shows as failed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from escriba.bus import AudioStore, NatsSettings, TopologyError, connect
from escriba.common.settings import load
from escriba.db.pool import create_pool
from escriba.db.retention import purge_finished_batch
from escriba.db.settings import DatabaseSettings, RetentionSettings

log = logging.getLogger(__name__)

DAY_S = 86_400.0


@dataclass(frozen=True)
class PurgeReport:
    """What one purge removed."""

    tasks: int
    archived_tasks: int
    audio_objects: int


async def purge(
    pool: Any, uploads: AudioStore | None, settings: RetentionSettings, *, now: datetime | None = None
) -> PurgeReport:
    """Delete every finished task past its retention (archived ones past theirs) and the uploads they
    still name; ``uploads`` None: no object store to clean (the database alone)."""
    now = now or datetime.now(UTC)
    counts = {True: 0, False: 0}
    objects = 0
    for archived, days in ((True, settings.archived_retention_days), (False, settings.retention_days)):
        cutoff = now - timedelta(seconds=days * DAY_S)
        while True:
            batch = await purge_finished_batch(
                pool, completed_before=cutoff, archived=archived, limit=settings.batch_size
            )
            counts[archived] += batch.tasks
            if uploads is not None:
                for name in batch.audio_objects:
                    await uploads.delete(name)  # a missing object is not an error
                    objects += 1
            if batch.tasks < settings.batch_size:
                break
    report = PurgeReport(
        tasks=counts[True] + counts[False], archived_tasks=counts[True], audio_objects=objects
    )
    log.info(
        "purged finished tasks",
        extra={"tasks": report.tasks, "archived": report.archived_tasks, "objects": report.audio_objects},
    )
    return report


async def run_purge(environ: Mapping[str, str] | None = None) -> PurgeReport:
    """Purge with the ``ESCRIBA_*`` settings: the database of ESCRIBA_DATABASE_URL and, when
    ESCRIBA_NATS_URL is set, the uploads bucket of ESCRIBA_NATS_PREFIX."""
    retention = load(RetentionSettings, environ)
    db_settings = load(DatabaseSettings, environ)
    nats_settings = load(NatsSettings, environ)
    pool = await create_pool(db_settings)
    try:
        if not nats_settings.servers:
            return await purge(pool, None, retention)
        nc = await connect(nats_settings, name="escriba-purge")
        try:
            js = nc.jetstream(timeout=nats_settings.request_timeout_s)
            try:
                uploads: AudioStore | None = await AudioStore.open(js, nats_settings.names.audio_bucket)
            except TopologyError:
                uploads = None  # no service has created the topology yet: no uploads to delete
            return await purge(pool, uploads, retention)
        finally:
            await nc.close()
    finally:
        await pool.close()
