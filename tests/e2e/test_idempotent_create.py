"""CreateTask is safe to retry: an idempotency key makes a repeated upload the same task, and the
client retries uploads the gateway's transport refused (at its concurrent-RPC limit) with that key.

A local stack whose gRPC server serves one RPC at a time, so a second call is refused while one is
open, as a busy gateway at ESCRIBA_GRPC_MAX_CONCURRENT_RPCS refuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from escriba.client import EscribaClient, make_spec
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from escriba.v1 import tasks_pb2
from tests.support.stack import stack_config
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    config = stack_config(nats_server.url, postgres_dsn, env={"ESCRIBA_GRPC_MAX_CONCURRENT_RPCS": "1"})
    async with LocalStack(config) as running:
        yield running


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    code: grpc.StatusCode = caught.value.code()
    return code


async def stored_uploads(stack: LocalStack) -> int:
    pipeline = stack.runtime.pipeline  # type: ignore[union-attr]
    info = await pipeline.js.stream_info(f"OBJ_{pipeline.uploads.bucket}")
    return info.state.messages


async def hold_the_only_slot(client: EscribaClient) -> grpc.aio.StreamUnaryCall:
    """A CreateTask that sent its spec and waits, once the server has taken it.

    Writing a message only buffers it, so the server may take the call a moment later; a probe (a
    CancelTask, which the channel never retries) refused with RESOURCE_EXHAUSTED shows it has. A probe
    can itself hold the slot when the call arrives, which refuses the call: then it is made again.
    """

    async def refused() -> bool:
        code = await code_of(client.cancel("00000000-0000-4000-8000-000000000000"))
        return code is grpc.StatusCode.RESOURCE_EXHAUSTED

    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        held = client.stub.CreateTask()
        await held.write(tasks_pb2.CreateTaskRequest(spec=make_spec("held.flac")))
        for _ in range(40):
            await asyncio.sleep(0.05)
            if held.done():
                break  # refused: a probe had the slot
            if await refused():
                return held
        held.cancel()
    pytest.fail("the server never reached its RPC limit")


async def test_the_same_key_twice_is_one_task_and_one_stored_upload(
    client: EscribaClient, stack: LocalStack, data_dir: Path
) -> None:
    spec = make_spec("jfk.flac")
    spec.idempotency_key = "meeting-2026-11-24"
    first = await client.create_task(data_dir / "jfk.flac", spec)
    stored = await stored_uploads(stack)
    again = await client.create_task(data_dir / "jfk.flac", spec)
    assert again.id == first.id
    assert await stored_uploads(stack) == stored, "the repeated upload was stored again"
    other = await client.create_task(data_dir / "jfk.flac")  # no key given: the client picks a new one
    assert other.id != first.id


async def test_a_bad_key_is_refused(client: EscribaClient, data_dir: Path) -> None:
    spec = make_spec("jfk.flac")
    spec.idempotency_key = "x" * 129
    assert await code_of(client.create_task(data_dir / "jfk.flac", spec)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_upload_refused_at_the_rpc_limit_is_retried_and_lands_once(
    client: EscribaClient, stack: LocalStack, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await hold_the_only_slot(client)
    spec = make_spec("jfk.flac")
    spec.idempotency_key = "retried-upload"
    # More attempts than the default, so a slow machine cannot run out of them before the release.
    async with EscribaClient(stack.address, upload_attempts=10) as patient:
        attempts = 0
        create = patient.stub.CreateTask

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal attempts
            attempts += 1
            return create(*args, **kwargs)

        monkeypatch.setattr(patient.stub, "CreateTask", counted)
        upload = asyncio.create_task(patient.create_task(data_dir / "jfk.flac", spec))
        # A second attempt means the gateway refused the first (the client retries only refusals).
        await eventually(lambda: attempts >= 2, what="the first attempt to be refused and retried")
        assert not upload.done()
        await held.done_writing()  # an empty upload: refused, and the slot is free
        assert await code_of(held) == grpc.StatusCode.INVALID_ARGUMENT
        task = await asyncio.wait_for(upload, 60)
    pipeline = stack.runtime.pipeline  # type: ignore[union-attr]
    rows = await pipeline.pool.fetch(
        "SELECT id::text FROM transcription_tasks WHERE idempotency_key = $1", "retried-upload"
    )
    assert [r["id"] for r in rows] == [task.id]
