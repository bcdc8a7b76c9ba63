"""Local stacks for end-to-end tests: the session's NATS and PostgreSQL, private names per stack."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from escriba.client import EscribaClient, make_spec
from escriba.local.stack import StackConfig
from escriba.pipeline.taskpb import status_from_pb
from escriba.v1 import tasks_pb2

#: How long a batch of e2e tasks may take: below the e2e tests' own 600 s timeout, so a stuck task is
#: reported by id and status.
TASKS_TIMEOUT_S = float(os.environ.get("TEST_TASKS_TIMEOUT_S", "420"))

#: Short timings so retries and redeliveries happen within a test's time.
FAST_PIPELINE = {
    "ESCRIBA_NATS_ACK_WAIT_S": "4",
    "ESCRIBA_NATS_HEARTBEAT_S": "1",
    "ESCRIBA_NATS_MAX_DELIVER": "3",
    "ESCRIBA_NATS_BACKOFF_S": "0.2,0.5",
    "ESCRIBA_NATS_FETCH_WAIT_S": "0.5",
    "ESCRIBA_NATS_STOP_GRACE_S": "5",
    "ESCRIBA_GATEWAY_WATCH_POLL_S": "1",
    "ESCRIBA_SHUTDOWN_GRACE_S": "5",
    "ESCRIBA_DATABASE_POOL_MIN_SIZE": "1",
    "ESCRIBA_DATABASE_POOL_MAX_SIZE": "8",
    "ESCRIBA_LOG_LEVEL": "WARNING",
    # Small stream and bucket caps: JetStream reserves them in its store, and tests run several stacks.
    **{
        f"ESCRIBA_NATS_{name}_MAX_BYTES": str(mib * 1024**2)
        for name, mib in (
            ("JOBS", 64),
            ("EVENTS", 32),
            ("WEBHOOKS", 16),
            ("AUDIO", 512),
            ("NORMALIZED", 256),
            ("TRANSCRIPTS", 64),
            ("CORRECTIONS", 32),
        )
    },
}


def stack_config(
    nats_url: str, database_url: str, *, mode: str = "in_process", env: Mapping[str, str] | None = None
) -> StackConfig:
    suffix = uuid.uuid4().hex[:10]
    return StackConfig(
        port=0,
        http_port=0,
        mode=mode,
        env={
            **FAST_PIPELINE,
            "ESCRIBA_NATS_URL": nats_url,
            "ESCRIBA_DATABASE_URL": database_url,
            "ESCRIBA_NATS_PREFIX": f"e{suffix}",
            "ESCRIBA_DATABASE_SCHEMA": f"e2e_{suffix}",
            **(env or {}),
        },
    )


async def run_task(
    client: EscribaClient, path: Path, spec: tasks_pb2.TaskSpec | None = None, timeout_s: float = 240
) -> tasks_pb2.Task:
    """Create a task and follow it to its terminal state."""
    task = await client.create_task(path, spec or make_spec(path.name))
    try:
        async with asyncio.timeout(timeout_s):
            async for event in client.watch(task.id):
                if event.HasField("task"):
                    return event.task
    except TimeoutError:
        # Say which task is stuck and where, instead of letting the test's own timeout hide it.
        stuck = await client.get(task.id)
        raise AssertionError(
            f"task {task.id} ({path.name}) still {status_name(stuck)} after {timeout_s:.0f} s"
        ) from None
    return await client.get(task.id)


async def run_tasks(
    client: EscribaClient, paths: Iterable[Path], timeout_s: float = TASKS_TIMEOUT_S
) -> list[tasks_pb2.Task]:
    return list(await asyncio.gather(*(run_task(client, p, timeout_s=timeout_s) for p in paths)))


def status_name(task: tasks_pb2.Task) -> str:
    status = status_from_pb(task.status)
    return status.value if status else "unknown"
