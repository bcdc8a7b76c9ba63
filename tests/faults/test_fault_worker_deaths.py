"""A task whose preprocess job kills its worker every time fails after a bounded number of deaths.

Issue 15, class 2: a recording that needs more memory than a pod has gets the pod OOM-killed, the job
is redelivered after the ack wait and kills the next pod, until its deliveries run out. Here the
preprocess process is SIGKILLed (what the kernel's OOM killer does) each time it starts on the task; the
supervisor brings it back, as Kubernetes restarts a container. After
``ESCRIBA_PREPROCESS_MAX_WORKER_DEATHS`` (2) deaths the next delivery fails the task with
``worker_died`` and a readable reason, without running the job a third time (``ESCRIBA_NATS_MAX_DELIVER``
is 5 here), and the service goes on with other work.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bench import rss
from escriba.client import EscribaClient
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from tests.faults.scenario import FaultRun, assert_clean, distinct_clips, fault_config, write_clips
from tests.support.ledger import Ledger, connect_db
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

MAX_DEATHS = 2


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    # One job at a time, so each kill lands on the poisonous task alone.
    env = {"ESCRIBA_PREPROCESS_MAX_CONCURRENCY": "1", "ESCRIBA_PREPROCESS_MAX_WORKER_DEATHS": str(MAX_DEATHS)}
    async with LocalStack(fault_config(nats_server.url, postgres_dsn, mode="processes", env=env)) as running:
        yield running


async def task_row(run: FaultRun, task_id: str) -> dict[str, object]:
    conn = await connect_db(run.dsn, run.schema)
    try:
        row = await conn.fetchrow(
            "SELECT status, stage_attempts, error_reason, error FROM transcription_tasks WHERE id = $1",
            uuid.UUID(task_id),
        )
    finally:
        await conn.close()
    assert row is not None
    return {**dict(row), "stage_attempts": json.loads(row["stage_attempts"])}


async def test_a_job_that_kills_its_worker_fails_after_the_bound(
    stack: LocalStack, fault_ledger: Ledger, tmp_path: Path
) -> None:
    # 20 minutes of speech and silence: seconds of preprocessing, time for the kill to land mid-job.
    poison = rss.preprocess_input(tmp_path / "meeting.mp3", 20)
    run = FaultRun("worker-deaths", stack, fault_ledger)
    async with EscribaClient(stack.address) as client, run:
        task_id = run.record((await client.create_task(poison)).id)
        for death in range(1, MAX_DEATHS + 1):

            async def started(death: int = death) -> bool:
                row = await task_row(run, task_id)
                return row["status"] == "preprocessing" and row["stage_attempts"] == {"preprocess": death}

            await eventually(started, timeout_s=60, interval_s=0.05, what=f"delivery {death} to start")
            await asyncio.sleep(0.3)  # decoding now
            victim_pid = stack.processes["preprocess"].pid
            os.kill(victim_pid, signal.SIGKILL)

            def restarted(victim_pid: int = victim_pid) -> bool:
                return stack.processes["preprocess"].pid != victim_pid

            await eventually(restarted, timeout_s=60, what="preprocess to restart")
            await stack._wait_healthy("preprocess")

        async def failed() -> bool:
            return (await task_row(run, task_id))["status"] == "failed"

        await eventually(failed, timeout_s=60, interval_s=0.2, what="the task to fail")
        row = await task_row(run, task_id)
        assert row["error_reason"] == "worker_died", row
        message = str(row["error"])
        assert message.startswith("preprocess: the preprocess worker died 2 times on this task"), message
        assert "out of memory?" in message, message
        assert row["stage_attempts"] == {"preprocess": MAX_DEATHS}, row  # not run a third time

        # The restarted service does other work as before.
        await run.submit_all(client, write_clips(tmp_path, distinct_clips(3, seed=31)))
        result = await run.settle(timeout_s=120)
    assert_clean(result, completed=3)
