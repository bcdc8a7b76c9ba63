"""With 100k tasks, every real list query is an index scan, in custom and generic (prepared) plans."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from escriba.db import TaskFilter, TaskStatus
from escriba.db.list_query import build_list_query, decode_cursor, encode_cursor
from escriba.db.tasks import PURGE_ARCHIVED_SQL

pytestmark = pytest.mark.timeout(180)

ROWS = 100_000
OWNERS = 500

# Statuses by share, like a long-running install: mostly finished work, a little in flight. One owner
# ("heavy") has 2000 tasks, the others about 200 each.
FILL = f"""
INSERT INTO transcription_tasks (id, owner_id, status, is_archived, created_at, completed_at, text)
SELECT gen_random_uuid(), CASE WHEN g % 50 = 1 THEN 'heavy' ELSE 'owner-' || (g % {OWNERS}) END, s.status,
       s.status IN ('completed', 'failed', 'cancelled') AND g % 3 = 0,
       c.created,
       CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN c.created + interval '2 minutes' END,
       CASE WHEN s.status = 'completed' THEN 'some words' END
FROM generate_series(1, {ROWS}) AS g
CROSS JOIN LATERAL (SELECT now() - (g / 2) * interval '1 minute' AS created) AS c
CROSS JOIN LATERAL (SELECT CASE
    WHEN g % 100 < 80 THEN 'completed'
    WHEN g % 100 < 86 THEN 'failed'
    WHEN g % 100 < 90 THEN 'cancelled'
    WHEN g % 100 < 94 THEN 'queued'
    WHEN g % 100 < 96 THEN 'preprocessing'
    WHEN g % 100 < 98 THEN 'transcribing'
    ELSE 'correcting' END AS status) AS s
"""


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _parse(raw: Any) -> list[dict[str, Any]]:
    document = json.loads(raw) if isinstance(raw, str) else raw
    return list(_nodes(document[0]["Plan"]))


async def _custom_plan(conn: Any, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    """The plan for these argument values (what the first executions of a statement get)."""
    return _parse(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))


async def _generic_plan(conn: Any, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    """The plan PostgreSQL caches for a prepared statement, valid for any argument values.

    asyncpg prepares every query and the server may switch to this plan after five executions, so
    it must use the indexes too. EXPLAIN with bound parameters would plan for the values instead,
    hence an SQL-level PREPARE and EXPLAIN EXECUTE with literal arguments.
    """
    name = f"plan_{uuid.uuid4().hex}"
    literals = []
    for arg in args:
        text = "{" + ",".join(arg) + "}" if isinstance(arg, list) else str(arg)
        literals.append(await conn.fetchval("SELECT quote_literal($1::text)", text))
    await conn.execute(f"PREPARE {name} AS {sql}")
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({', '.join(literals)})")
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute(f"DEALLOCATE {name}")
    nodes = _parse(raw)
    if len(args) > 1:  # a LIMIT-only statement shows no parameter in its plan
        assert "$1" in json.dumps(nodes), f"not a generic plan: {nodes}"
    return nodes


def _assert_index_only_access(nodes: list[dict[str, Any]], label: str) -> None:
    scans = [n for n in nodes if n.get("Relation Name") == "transcription_tasks"]
    assert scans, f"{label}: no scan of transcription_tasks in {nodes}"
    kinds = {n["Node Type"] for n in scans}
    assert "Seq Scan" not in kinds, f"{label}: sequential scan: {nodes}"
    indexes = {n.get("Index Name") for n in nodes if n.get("Index Name")}
    assert indexes, f"{label}: no index used: {nodes}"


async def test_list_queries_use_indexes_at_100k_rows(db_pool: Any) -> None:
    async with db_pool.acquire() as conn:
        await conn.execute(FILL)
        await conn.execute("ANALYZE transcription_tasks")
        assert await conn.fetchval("SELECT count(*) FROM transcription_tasks") == ROWS
        # A cursor from the middle of one owner's history, as a client paging back would send.
        row = await conn.fetchrow(
            "SELECT created_at, id FROM transcription_tasks WHERE owner_id = 'owner-7'"
            " ORDER BY created_at DESC, id DESC OFFSET 100 LIMIT 1"
        )
        cursor = decode_cursor(encode_cursor(row["created_at"], row["id"]))

        filters = {
            "owner": TaskFilter(owner_id="owner-7"),
            "owner, not archived": TaskFilter(owner_id="owner-7", archived=False),
            "owner, archived": TaskFilter(owner_id="owner-7", archived=True),
            "owner, one status": TaskFilter(owner_id="owner-7", statuses=(TaskStatus.COMPLETED,)),
            "owner, active statuses": TaskFilter(
                owner_id="owner-7",
                statuses=(TaskStatus.QUEUED, TaskStatus.PREPROCESSING, TaskStatus.TRANSCRIBING),
                archived=False,
            ),
            "all owners": TaskFilter(),
            "all owners, not archived": TaskFilter(archived=False),
            "all owners, one status": TaskFilter(statuses=(TaskStatus.TRANSCRIBING,)),
        }
        for generic in (False, True):
            plan = _generic_plan if generic else _custom_plan
            for label, task_filter in filters.items():
                for position in (None, cursor):
                    for include_results in (False, True):
                        sql, args = build_list_query(
                            task_filter, cursor=position, limit=51, include_results=include_results
                        )
                        name = f"{label} (cursor={position is not None}, generic={generic})"
                        _assert_index_only_access(await plan(conn, sql, args), name)

            # The retention purge rides (is_archived, completed_at).
            nodes = await plan(conn, PURGE_ARCHIVED_SQL, [datetime.now(UTC) - timedelta(days=30), 1000])
            _assert_index_only_access(nodes, f"purge (generic={generic})")
            assert any(n.get("Index Name") == "transcription_tasks_archived_completed_idx" for n in nodes)

            # Point reads by id use the primary key.
            nodes = await plan(conn, "SELECT * FROM transcription_tasks WHERE id = $1", [uuid.uuid4()])
            _assert_index_only_access(nodes, f"get (generic={generic})")

        # The shapes ListTasks sends most walk one index in page order: nothing to sort, however many
        # tasks the owner has. (For an owner with a few hundred tasks the planner may rightly prefer
        # a bitmap scan and a sort of the few rows left after the cursor; both are index access.)
        in_order = [
            TaskFilter(owner_id="heavy"),
            TaskFilter(owner_id="heavy", archived=False),
            TaskFilter(owner_id="heavy", archived=True),
            TaskFilter(owner_id="heavy", statuses=(TaskStatus.COMPLETED,)),
            TaskFilter(),
        ]
        for task_filter in in_order:
            for position in (None, cursor):
                sql, args = build_list_query(task_filter, cursor=position, limit=51, include_results=False)
                for plan in (_custom_plan, _generic_plan):
                    nodes = await plan(conn, sql, args)
                    _assert_index_only_access(nodes, str(task_filter))
                    assert "Sort" not in {n["Node Type"] for n in nodes}, (task_filter, nodes)
