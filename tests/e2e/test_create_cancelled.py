"""Callers that give up mid-create at random points leave no task behind in ``queued``.

Each CreateTask is cancelled by its caller, or cut by its deadline, at a random moment: while the
upload streams, while the gateway stores it, between the task's INSERT and its job's publish, or after
the answer. Whatever the gateway did by then, every task row it wrote must reach an end (the job was
queued with it: the create is shielded from the caller, and what a dead create leaves in the outbox is
published by the reconciler), and the owner's slots come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from escriba.client import EscribaClient, make_spec
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from escriba.v1 import tasks_pb2
from tests.support import media
from tests.support.stack import stack_config
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

CALLERS = 24


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    env = {"ESCRIBA_GATEWAY_OUTBOX_AFTER_S": "1", "ESCRIBA_GATEWAY_OUTBOX_INTERVAL_S": "0.2"}
    async with LocalStack(stack_config(nats_server.url, postgres_dsn, env=env)) as running:
        yield running


async def _rows(stack: LocalStack) -> list[tuple[str, str, bool]]:
    pipeline = stack.runtime.pipeline  # type: ignore[union-attr]
    rows = await pipeline.pool.fetch(
        "SELECT id::text, status, outbox_job IS NOT NULL AS pending FROM transcription_tasks"
    )
    return [(r["id"], r["status"], r["pending"]) for r in rows]


async def test_callers_that_give_up_at_random_points_leave_nothing_queued(
    stack: LocalStack, tmp_path: Path
) -> None:
    rng = random.Random(20261203)
    # Distinct bytes per caller (a gain each), so each task runs its stages rather than one cache hit.
    speech = media.long_speech(12.0)
    paths = [
        media.write(tmp_path / f"c{i:02d}.flac", media.to_flac(media.with_gain(speech, -i * 0.25), 16000))
        for i in range(CALLERS)
    ]
    answered: list[str] = []

    async def caller(index: int, client: EscribaClient) -> None:
        path = paths[index]
        give_up_after = rng.uniform(0.0, 0.6)
        if index % 2:
            # A deadline: the server sees DEADLINE_EXCEEDED at that moment.
            with path.open("rb") as f:
                data = f.read()

            async def requests() -> AsyncIterator[tasks_pb2.CreateTaskRequest]:
                yield tasks_pb2.CreateTaskRequest(spec=make_spec(path.name))
                for start in range(0, len(data), 16384):
                    yield tasks_pb2.CreateTaskRequest(chunk=data[start : start + 16384])

            try:
                task = await client.stub.CreateTask(requests(), timeout=give_up_after + 0.01)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED, exc
            else:
                answered.append(task.id)
            return
        call = asyncio.create_task(client.create_task(path))
        done, _ = await asyncio.wait({call}, timeout=give_up_after)
        if call in done:
            answered.append(call.result().id)
        else:
            call.cancel()  # the caller goes away: the RPC is cancelled
            with contextlib.suppress(asyncio.CancelledError):
                await call

    async with EscribaClient(stack.address) as client:
        await asyncio.gather(*(caller(i, client) for i in range(CALLERS)))

        async def all_ended() -> bool:
            rows = await _rows(stack)
            return all(status in ("completed", "failed", "cancelled") for _, status, _ in rows)

        await eventually(all_ended, "every task the gateway stored to end", timeout_s=240, interval_s=0.5)
        rows = await _rows(stack)
        print(f"{len(answered)} answered, {len(rows)} stored, of {CALLERS} callers")
        assert 0 < len(answered) < CALLERS  # some gave up in time, some did not
        assert set(answered) <= {task_id for task_id, _, _ in rows}
        assert [r for r in rows if r[1] != "completed"] == [], rows  # none failed for being abandoned
        assert not any(pending for _, _, pending in rows)  # the outbox is empty
        # The owner's slots are free again: a new task goes through.
        done = await client.transcribe(paths[0])
        assert done.status == tasks_pb2.TASK_STATUS_COMPLETED
