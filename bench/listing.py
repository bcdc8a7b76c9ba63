"""ListTasks on a million tasks, with the migrations' indexes and without them.

An embedded PostgreSQL (the same binaries as the local stack) gets the real migrations in one schema,
a million rows made with ``generate_series`` (a long-running install: mostly finished tasks, a few in
flight, a third of the finished ones archived, one heavy owner and thousands of small ones), and a
copy of that table in a second schema with the same columns, constraints and primary key but none of
the migrations' list indexes. The repository's own ``list_tasks`` (the query ListTasks sends, keyset
pages of 50) runs the same mix of filters and pages against both.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from escriba.common.settings import load
from escriba.db import TaskFilter, TaskStatus
from escriba.db.migrate import migrate
from escriba.db.pool import create_pool, quote_ident
from escriba.db.settings import DatabaseSettings
from escriba.db.tasks import TaskRepository
from escriba.local.postgres import EmbeddedPostgres

INDEXED, PLAIN = "bench_indexed", "bench_no_indexes"
OWNERS = 5000

FILL = """
INSERT INTO transcription_tasks (id, owner_id, status, is_archived, created_at, completed_at, text, filename)
SELECT gen_random_uuid(), CASE WHEN g % 50 = 1 THEN 'heavy' ELSE 'owner-' || (g % {owners}) END, s.status,
       s.status IN ('completed', 'failed', 'cancelled') AND g % 3 = 0,
       c.created,
       CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN c.created + interval '2 minutes' END,
       CASE WHEN s.status = 'completed' THEN 'a short transcript of a call' END,
       'call-' || g || '.mp3'
FROM generate_series(1, {rows}) AS g
CROSS JOIN LATERAL (SELECT now() - g * interval '20 seconds' AS created) AS c
CROSS JOIN LATERAL (SELECT CASE
    WHEN g % 100 < 80 THEN 'completed'
    WHEN g % 100 < 86 THEN 'failed'
    WHEN g % 100 < 90 THEN 'cancelled'
    WHEN g % 100 < 94 THEN 'queued'
    WHEN g % 100 < 96 THEN 'preprocessing'
    WHEN g % 100 < 98 THEN 'transcribing'
    ELSE 'correcting' END AS status) AS s
"""

#: The listings clients send: one owner's tasks with each filter ListTasks has, and operators'
#: listings across owners.
FILTERS = {
    "heavy owner": TaskFilter(owner_id="heavy"),
    "owner": TaskFilter(owner_id="owner-7"),
    "owner, not archived": TaskFilter(owner_id="owner-7", archived=False),
    "owner, archived": TaskFilter(owner_id="heavy", archived=True),
    "owner, completed": TaskFilter(owner_id="heavy", statuses=(TaskStatus.COMPLETED,)),
    "owner, in flight": TaskFilter(
        owner_id="heavy",
        statuses=(TaskStatus.QUEUED, TaskStatus.PREPROCESSING, TaskStatus.TRANSCRIBING),
        archived=False,
    ),
    "all owners": TaskFilter(),
    "all owners, not archived": TaskFilter(archived=False),
    "all owners, transcribing": TaskFilter(statuses=(TaskStatus.TRANSCRIBING,)),
}


@dataclass(frozen=True)
class ListingResult:
    rows: int
    fill_s: float
    indexed_ms: list[float]
    plain_ms: list[float]
    per_filter_median_ms: dict[str, tuple[float, float]]

    @staticmethod
    def p(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    @property
    def p99_ms(self) -> float:
        return self.p(self.indexed_ms, 99)

    @property
    def speedup(self) -> float:
        """p99 without the indexes over p99 with them, same mix of listings."""
        return self.p(self.plain_ms, 99) / self.p99_ms


async def _measure(repo: TaskRepository, repeats: int) -> tuple[list[float], dict[str, float]]:
    """Latency of each listing: the first page and the page after it, ``repeats`` times each."""
    latencies: list[float] = []
    medians: dict[str, float] = {}
    for label, task_filter in FILTERS.items():
        first = await repo.list_tasks(task_filter, limit=50)
        mine: list[float] = []
        for _ in range(repeats):
            for cursor in ("", first.next_cursor):
                started = time.perf_counter()
                await repo.list_tasks(task_filter, cursor=cursor, limit=50)
                mine.append((time.perf_counter() - started) * 1000.0)
        latencies += mine
        medians[label] = float(np.median(mine))
    return latencies, medians


async def run(rows: int = 1_000_000, indexed_repeats: int = 25, plain_repeats: int = 3) -> ListingResult:
    with tempfile.TemporaryDirectory(prefix="escriba-bench-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data", durable=False)
        dsn = await asyncio.to_thread(server.start)
        try:
            return await _run(dsn, rows, indexed_repeats, plain_repeats)
        finally:
            await asyncio.to_thread(server.stop)


async def _run(dsn: str, rows: int, indexed_repeats: int, plain_repeats: int) -> ListingResult:
    def settings(schema: str) -> DatabaseSettings:
        return load(
            DatabaseSettings,
            {
                "ESCRIBA_DATABASE_URL": dsn,
                "ESCRIBA_DATABASE_SCHEMA": schema,
                "ESCRIBA_DATABASE_POOL_MAX_SIZE": "2",
                "ESCRIBA_DATABASE_COMMAND_TIMEOUT_S": "600",
            },
        )

    indexed_settings = settings(INDEXED)
    indexed = await create_pool(indexed_settings)
    plain = await create_pool(settings(PLAIN))
    try:
        await migrate(indexed, INDEXED, indexed_settings.resolved_migrations_dir())
        started = time.perf_counter()
        await indexed.execute(FILL.format(rows=rows, owners=OWNERS))
        await indexed.execute("ANALYZE transcription_tasks")
        fill_s = time.perf_counter() - started
        source, copy = (quote_ident(INDEXED), quote_ident(PLAIN))
        await plain.execute(f"CREATE SCHEMA IF NOT EXISTS {copy}")
        await plain.execute(
            f"CREATE TABLE {copy}.transcription_tasks (LIKE {source}.transcription_tasks "
            "INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        await plain.execute(
            f"INSERT INTO {copy}.transcription_tasks SELECT * FROM {source}.transcription_tasks"
        )
        await plain.execute(f"ALTER TABLE {copy}.transcription_tasks ADD PRIMARY KEY (id)")
        await plain.execute(f"ANALYZE {copy}.transcription_tasks")
        indexed_ms, indexed_medians = await _measure(TaskRepository(indexed), indexed_repeats)
        plain_ms, plain_medians = await _measure(TaskRepository(plain), plain_repeats)
    finally:
        await indexed.close()
        await plain.close()
    return ListingResult(
        rows=rows,
        fill_s=fill_s,
        indexed_ms=indexed_ms,
        plain_ms=plain_ms,
        per_filter_median_ms={k: (indexed_medians[k], plain_medians[k]) for k in FILTERS},
    )
