"""Service processes killed (SIGKILL) or stopped (SIGTERM) in the middle of work: nothing lost or doubled.

The stack runs each service as its own process with the supervisor on, as ``escriba up`` does, so a
process that dies comes back by itself. A killed transcription worker stops heartbeating and its job is
redelivered after the ack wait; a stopped one finishes or hands back (nak) what it holds; a stopped
gateway lets in-flight uploads finish and refuses new ones (UNAVAILABLE) until it is back, and the
client retries them.
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

from escriba.client import EscribaClient
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from tests.faults.scenario import (
    FaultRun,
    assert_clean,
    distinct_clips,
    fault_config,
    write_clips,
)
from tests.support import media
from tests.support.ledger import Ledger, connect_db
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

STAGE_STATUS = {"preprocess": "preprocessing", "transcription": "transcribing", "correction": "correcting"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    async with LocalStack(fault_config(nats_server.url, postgres_dsn, mode="processes")) as running:
        yield running


async def status_of(run: FaultRun, task_id: str) -> tuple[str, dict[str, int]]:
    conn = await connect_db(run.dsn, run.schema)
    try:
        row = await conn.fetchrow(
            "SELECT status, stage_attempts FROM transcription_tasks WHERE id = $1", uuid.UUID(task_id)
        )
    finally:
        await conn.close()
    assert row is not None
    return row["status"], json.loads(row["stage_attempts"])


async def reached(run: FaultRun, service: str) -> bool:
    """Some task got to ``service``'s stage (or past it): the stage has work from this run now.

    A task in the stage's own status is the signal to aim for, but a fast stage (correction takes
    milliseconds) may be passed between two polls, so a task beyond it counts too: the other tasks,
    still behind it, keep the stage busy.
    """
    statuses = ["preprocessing", "transcribing", "correcting", "completed", "failed"]
    later = statuses[statuses.index(STAGE_STATUS[service]) :]
    conn = await connect_db(run.dsn, run.schema)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM transcription_tasks"
            " WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])",
            [uuid.UUID(t) for t in run.ids],
            later,
        )
    finally:
        await conn.close()
    return bool(found)


async def wait_restarted(stack: LocalStack, service: str, old_pid: int, timeout_s: float = 60) -> None:
    """The supervisor brought the service back (a new process that answers health checks)."""
    await eventually(
        lambda: stack.processes[service].pid != old_pid, timeout_s=timeout_s, what=f"{service} to restart"
    )
    await stack._wait_healthy(service)


async def test_sigkill_transcription_mid_job(stack: LocalStack, fault_ledger: Ledger, tmp_path: Path) -> None:
    # One long recording, so the kill lands while the model runs, and short ones queued behind it.
    long_path = media.write(tmp_path / "long.flac", media.to_flac(media.long_speech(60.0), 16000))
    paths = write_clips(tmp_path, distinct_clips(8, seed=11))
    run = FaultRun("sigkill-transcription", stack, fault_ledger)
    async with EscribaClient(stack.address) as client, run:
        long_id = run.record((await client.create_task(long_path)).id)
        await run.submit_all(client, paths)

        async def transcribing() -> bool:
            return (await status_of(run, long_id))[0] == "transcribing"

        await eventually(transcribing, timeout_s=120, interval_s=0.05, what="the long task to be transcribed")
        await asyncio.sleep(1.0)  # the model is decoding now
        victim = stack.processes["transcription"]
        os.kill(victim.pid, signal.SIGKILL)
        await wait_restarted(stack, "transcription", victim.pid)
        result = await run.settle(timeout_s=240)
    assert_clean(result, completed=len(run.ids))
    _, attempts = await status_of(run, long_id)
    assert attempts["transcription"] >= 2, attempts  # delivered again after the kill


@pytest.mark.parametrize("service", ["gateway", "preprocess", "transcription", "correction"])
async def test_sigterm_during_work(
    stack: LocalStack, fault_ledger: Ledger, tmp_path: Path, service: str
) -> None:
    seed = {"gateway": 21, "preprocess": 22, "transcription": 23, "correction": 24}[service]
    clips = distinct_clips(10, seconds=2.0, seed=seed)
    # Two longer recordings keep every stage busy long enough for the signal to land mid-job.
    speech = media.long_speech(50.0)
    clips += [media.to_flac(speech[:, : 16000 * 25], 16000), media.to_flac(speech[:, 16000 * 20 :], 16000)]
    paths = write_clips(tmp_path, clips, prefix=service)
    run = FaultRun(f"sigterm-{service}", stack, fault_ledger)
    async with EscribaClient(stack.address) as client, run:
        victim = stack.processes[service]
        if service == "gateway":
            submitting = asyncio.create_task(run.submit_all(client, paths))
            await eventually(lambda: bool(run.ids), timeout_s=60, interval_s=0.01, what="the first upload")
            victim.send_signal(signal.SIGTERM)
            await submitting  # the rest finished, or were refused while it was away and retried
        else:
            await run.submit_all(client, paths)

            async def busy() -> bool:
                return await reached(run, service)

            await eventually(busy, timeout_s=120, interval_s=0.02, what=f"work in {service}")
            victim.send_signal(signal.SIGTERM)
        await wait_restarted(stack, service, victim.pid)
        assert victim.wait(timeout=30) == 0  # it stopped in order, not by a crash
        result = await run.settle(timeout_s=240)
    assert_clean(result, completed=len(paths))
