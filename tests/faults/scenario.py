"""What every fault scenario does: boot a local stack, submit distinct short clips, settle, audit.

A scenario records each task CreateTask accepted, then :meth:`FaultRun.settle` waits (bounded) until
PostgreSQL shows every one of them terminal, audits them (:mod:`tests.support.ledger`) and adds the
result to the session's ledger, which the summary line adds up. If a scenario fails before settling,
leaving the block settles it with a short deadline, so its tasks are still counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import grpc
import numpy as np

from escriba.bus.names import BusNames
from escriba.client import EscribaClient
from escriba.local.stack import LocalStack, StackConfig
from tests.support import media
from tests.support.ledger import Audit, Ledger, audit, existing_ids, terminal_event_statuses, wait_terminal
from tests.support.stack import stack_config
from tests.support.waiting import eventually

#: Timings for fault runs: FAST_PIPELINE's short ack wait and heartbeats, with the production number of
#: deliveries and a backoff long enough (7.5 s over five deliveries) to ride out a server restart.
FAULT_ENV = {
    "ESCRIBA_NATS_MAX_DELIVER": "5",
    "ESCRIBA_NATS_BACKOFF_S": "0.5,1,2,4",
    "ESCRIBA_NATS_RECONNECT_WAIT_S": "0.5",
    "ESCRIBA_DATABASE_CONNECT_ATTEMPTS": "5",
}
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def fault_config(
    nats_url: str, dsn: str, *, mode: str = "processes", env: Mapping[str, str] | None = None
) -> StackConfig:
    return stack_config(nats_url, dsn, mode=mode, env={**FAULT_ENV, **(env or {})})


def distinct_clips(count: int, *, seconds: float = 1.5, seed: int = 0) -> list[bytes]:
    """``count`` different FLAC clips of real speech: other slices and gains of wideband recordings
    (cheap in the model: these runs are about what happens around it).

    Different bytes and different samples, so no clip hits another's preprocess or transcript cache:
    each task runs every stage for real.
    """
    rate = 16000
    length = int(seconds * rate)
    rng = np.random.default_rng(seed)
    speech = media.wideband_speech(max(40.0, count * 0.5 + seconds + 1))
    starts = rng.choice(speech.shape[1] - length, size=count, replace=False)
    clips = []
    for i, start in enumerate(starts):
        gain_db = float(rng.uniform(-9.0, 3.0)) + i * 1e-3
        clips.append(media.to_flac(media.with_gain(speech[:, start : start + length], gain_db), rate))
    return clips


def write_clips(folder: Path, clips: list[bytes], prefix: str = "clip") -> list[Path]:
    return [media.write(folder / f"{prefix}-{i:04d}.flac", data) for i, data in enumerate(clips)]


async def submit(client: EscribaClient, path: Path, *, attempts: int = 60, delay_s: float = 0.5) -> str:
    """CreateTask, retried while the gateway is away (UNAVAILABLE) or busy (RESOURCE_EXHAUSTED)."""
    for attempt in range(1, attempts + 1):
        try:
            task = await client.create_task(path)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or attempt == attempts:
                raise
            await asyncio.sleep(delay_s)
        else:
            return task.id
    raise AssertionError("unreachable")


class FaultRun:
    """One scenario's submissions on one stack, audited once at the end."""

    def __init__(self, name: str, stack: LocalStack, ledger: Ledger) -> None:
        self.name = name
        self.stack = stack
        self.ledger = ledger
        self.ids: list[str] = []
        self.before: set[str] = set()
        self.result: Audit | None = None

    @property
    def dsn(self) -> str:
        return self.stack.database_url

    @property
    def schema(self) -> str:
        return self.stack.config.env["ESCRIBA_DATABASE_SCHEMA"]

    @property
    def names(self) -> BusNames:
        return BusNames(prefix=self.stack.config.env["ESCRIBA_NATS_PREFIX"])

    def record(self, task_id: str) -> str:
        self.ids.append(task_id)
        return task_id

    async def submit_all(self, client: EscribaClient, paths: list[Path]) -> list[str]:
        """Submit every path at once (each retried while the gateway is unavailable)."""

        async def one(path: Path) -> str:
            return self.record(await submit(client, path))

        return list(await asyncio.gather(*(one(p) for p in paths)))

    async def terminal_count(self) -> int:
        return len(self.ids) - await wait_terminal(self.dsn, self.schema, self.ids, timeout_s=0)

    async def wait_for_terminal(self, count: int, timeout_s: float = 120.0) -> None:
        """Wait until at least ``count`` of the tasks so far are terminal (the run is under way)."""

        async def enough() -> bool:
            return await self.terminal_count() >= count

        await eventually(enough, timeout_s=timeout_s, interval_s=0.2, what=f"{count} finished tasks")

    async def settle(self, timeout_s: float = 180.0) -> Audit:
        """Wait for every task so far to finish (bounded), audit them, and put the audit in the ledger.

        May be called again after submitting more: the new audit replaces the scenario's last one.
        """
        await wait_terminal(self.dsn, self.schema, self.ids, timeout_s=timeout_s)
        events = await terminal_event_statuses(self.stack.nats_url, self.names)
        self.result = await audit(
            self.name, dsn=self.dsn, schema=self.schema, submitted=self.ids, before=self.before, events=events
        )
        self.ledger.add(self.result)
        return self.result

    async def __aenter__(self) -> FaultRun:
        self.before = await existing_ids(self.dsn, self.schema)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.result is None and self.ids:
            await self.settle(timeout_s=10.0)


def assert_clean(result: Audit, *, completed: int | None = None) -> None:
    """Nothing lost or duplicated, and (when given) exactly ``completed`` tasks completed."""
    details = "\n".join(result.problems)
    assert result.tally.clean, f"{result.tally.line(result.scenario)}\n{details}"
    if completed is not None:
        failures = {t: result.errors[t] for t in result.ids_with("failed")}
        assert result.tally.completed == completed, (result.tally.line(result.scenario), failures)
