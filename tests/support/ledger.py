"""Count what became of every task a fault scenario submitted: the numbers the summary line prints.

The record of truth is PostgreSQL, so the audit reads it directly (never through the services under
test): each submitted id must have exactly one row in a terminal status, a failed task must carry a
machine reason and a readable message, and no stage may have stored two results. The task events on
JetStream add one more witness: two different terminal statuses published for one task mean it
finished twice. Rows nobody was told about (a CreateTask that answered an error yet created a task, so
a retrying client submits it again) count as duplicates too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg
import nats
from nats.js.errors import NotFoundError

from escriba.bus.names import BusNames
from escriba.db.pool import quote_ident
from escriba.db.states import TERMINAL, TaskStatus
from escriba.pipeline.taskpb import status_from_pb
from escriba.v1 import tasks_pb2

_TERMINAL_VALUES = sorted(s.value for s in TERMINAL)


@dataclass
class Tally:
    submitted: int = 0
    completed: int = 0
    failed_with_reason: int = 0
    lost: int = 0
    duplicated: int = 0

    def __iadd__(self, other: Tally) -> Tally:
        self.submitted += other.submitted
        self.completed += other.completed
        self.failed_with_reason += other.failed_with_reason
        self.lost += other.lost
        self.duplicated += other.duplicated
        return self

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0

    def line(self, label: str = "faults") -> str:
        return (
            f"{label}: submitted={self.submitted} completed={self.completed} "
            f"failed_with_reason={self.failed_with_reason} lost={self.lost} duplicated={self.duplicated}"
        )


@dataclass
class Audit:
    """One scenario's tally, the final status of each task, and a sentence per problem found."""

    scenario: str
    tally: Tally
    statuses: dict[str, str] = field(default_factory=dict)
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # task id -> (reason, message)
    problems: list[str] = field(default_factory=list)
    #: Tasks some stage ran more than once (a redelivery or a retry): shows the fault hit work in flight.
    retried: int = 0

    def line(self) -> str:
        return f"{self.tally.line(self.scenario)} (retried={self.retried})"

    def ids_with(self, status: str) -> list[str]:
        return [task_id for task_id, s in self.statuses.items() if s == status]


@dataclass
class Ledger:
    """Every scenario's latest audit, in the order they ran (one per session, printed at its end)."""

    by_scenario: dict[str, Audit] = field(default_factory=dict)

    def add(self, audit: Audit) -> None:
        """Record ``audit``; a scenario audited again (more tasks submitted since) replaces its last one."""
        self.by_scenario[audit.scenario] = audit

    @property
    def audits(self) -> list[Audit]:
        return list(self.by_scenario.values())

    @property
    def total(self) -> Tally:
        total = Tally()
        for audit in self.audits:
            total += audit.tally
        return total


async def connect_db(dsn: str, schema: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, server_settings={"search_path": quote_ident(schema)}, timeout=10
    )
    return conn


async def existing_ids(dsn: str, schema: str) -> set[str]:
    conn = await connect_db(dsn, schema)
    try:
        rows = await conn.fetch("SELECT id::text FROM transcription_tasks")
    finally:
        await conn.close()
    return {r["id"] for r in rows}


async def wait_terminal(
    dsn: str, schema: str, task_ids: Iterable[str], *, timeout_s: float, poll_s: float = 0.5
) -> int:
    """Wait until every task is terminal or ``timeout_s`` passes; returns how many are still not.

    Reads survive the database going away (a scenario may be restarting it): a failed poll is retried.
    """
    ids = [uuid.UUID(t) for t in task_ids]
    deadline = time.monotonic() + timeout_s
    remaining = len(ids)
    while True:
        try:
            conn = await connect_db(dsn, schema)
            try:
                done = await conn.fetchval(
                    "SELECT count(*) FROM transcription_tasks WHERE id = ANY($1::uuid[])"
                    " AND status = ANY($2::text[])",
                    ids,
                    _TERMINAL_VALUES,
                )
            finally:
                await conn.close()
            remaining = len(ids) - int(done)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            pass  # the database is down for now: the scenario brings it back
        if remaining == 0 or time.monotonic() > deadline:
            return remaining
        await asyncio.sleep(poll_s)


async def terminal_event_statuses(nats_url: str, names: BusNames) -> dict[str, set[str]]:
    """The terminal statuses published on each task's event subject (events of this prefix only).

    Read message by message with direct gets (``next_by_subj``): each read is one bounded request and
    the walk ends at the stream's last message, so the audit neither misses an event nor waits on an
    idle timeout.
    """
    found: dict[str, set[str]] = defaultdict(set)
    nc = await nats.connect(nats_url, name="escriba-fault-audit", connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(names.events_stream)
        last = info.state.last_seq or 0
        seq = info.state.first_seq or 1
        while info.state.messages and seq <= last:
            try:
                raw = await js.get_msg(names.events_stream, seq=seq, subject=names.events_wildcard, next=True)
            except NotFoundError:
                break
            assert raw.seq is not None
            seq = raw.seq + 1
            event = tasks_pb2.TaskEvent.FromString(raw.data or b"")
            status = status_from_pb(event.status)
            if status is not None and status.terminal:
                found[event.task_id].add(status.value)
    finally:
        await nc.close()
    return found


async def audit(
    scenario: str,
    *,
    dsn: str,
    schema: str,
    submitted: Iterable[str],
    before: set[str] | frozenset[str] = frozenset(),
    events: Mapping[str, set[str]] | None = None,
) -> Audit:
    """Classify every submitted task; ``before`` are rows that existed before the scenario began."""
    ids = list(dict.fromkeys(submitted))
    result = Audit(scenario, Tally(submitted=len(ids)))
    tally, problems = result.tally, result.problems
    conn = await connect_db(dsn, schema)
    try:
        rows = await conn.fetch(
            "SELECT id::text AS id, status, error_reason, error,"
            " (SELECT max(value::int) FROM jsonb_each_text(stage_attempts)) AS most"
            " FROM transcription_tasks"
            " WHERE id = ANY($1::uuid[])",
            [uuid.UUID(t) for t in ids],
        )
        stage_rows = await conn.fetch(
            "SELECT task_id::text AS id, stage, count(*) AS n FROM task_stage_results"
            " WHERE task_id = ANY($1::uuid[]) GROUP BY task_id, stage",
            [uuid.UUID(t) for t in ids],
        )
        everything = {r["id"] for r in await conn.fetch("SELECT id::text AS id FROM transcription_tasks")}
    finally:
        await conn.close()
    by_id = {r["id"]: r for r in rows}
    repeated_stage = {r["id"] for r in stage_rows if r["n"] > 1}
    for task_id in ids:
        row = by_id.get(task_id)
        if row is None:
            tally.lost += 1
            problems.append(f"{task_id}: accepted by CreateTask but has no row")
            continue
        status = TaskStatus(row["status"])
        result.statuses[task_id] = status.value
        result.errors[task_id] = (row["error_reason"], row["error"])
        if (row["most"] or 0) > 1:
            result.retried += 1
        if status is TaskStatus.COMPLETED:
            tally.completed += 1
        elif status is TaskStatus.FAILED and row["error_reason"] and row["error"]:
            tally.failed_with_reason += 1
        elif status is TaskStatus.FAILED:
            tally.lost += 1
            problems.append(f"{task_id}: failed without a reason")
        elif status is TaskStatus.CANCELLED:
            tally.lost += 1
            problems.append(f"{task_id}: cancelled, though nobody cancelled it")
        else:
            tally.lost += 1
            problems.append(f"{task_id}: still {status.value} at the deadline")
        published = (events or {}).get(task_id, set())
        if task_id in repeated_stage:
            tally.duplicated += 1
            problems.append(f"{task_id}: a stage stored more than one result")
        elif len(published) > 1:
            tally.duplicated += 1
            problems.append(f"{task_id}: finished more than once ({', '.join(sorted(published))})")
    orphans = everything - set(before) - set(ids)
    if orphans:
        tally.duplicated += len(orphans)
        problems.append(
            f"{len(orphans)} task(s) exist that no client was told about (a retried submission "
            f"creates a second task): {', '.join(sorted(orphans)[:5])}"
        )
    return result
