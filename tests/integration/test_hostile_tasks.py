"""Hostile input through the public API (TaskService on the local stack): every upload ends as a task
with a readable reason or as a clear gRPC status, malformed requests are refused before anything is
stored, the gateway's memory stays bounded, and the stack stays healthy and keeps transcribing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from escriba.client import EscribaClient, make_spec
from escriba.common.client import byte_chunks, write_all
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from escriba.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc
from tests.support import media
from tests.support.hostile import HOSTILE, MAX_DURATION_S, MEMORY_BOUND_MB, Hostile, hostile_ids, readable
from tests.support.memory import PeakRss
from tests.support.stack import run_task, stack_config, status_name
from tests.support.text import JFK_REFERENCE, wer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

MAX_UPLOAD_BYTES = 16 * 1024 * 1024
TEN_MB = 10 * 1024 * 1024


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    env = {
        "ESCRIBA_GATEWAY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "ESCRIBA_PREPROCESS_MAX_INPUT_BYTES": str(MAX_UPLOAD_BYTES),
        "ESCRIBA_PREPROCESS_MAX_DURATION_S": str(MAX_DURATION_S),
    }
    async with LocalStack(stack_config(nats_server.url, postgres_dsn, env=env)) as running:
        yield running


async def task_rows(stack: LocalStack) -> int:
    assert stack.runtime is not None
    count = await stack.runtime.pipeline.pool.fetchval("SELECT count(*) FROM transcription_tasks")
    return int(count)


async def create(
    client: EscribaClient, spec: tasks_pb2.TaskSpec | None, data: bytes, *, spec_again: bool = False
) -> tasks_pb2.Task:
    """CreateTask with hand-made messages (``spec=None`` sends chunks only)."""

    def requests() -> Iterator[tasks_pb2.CreateTaskRequest]:
        if spec is not None:
            yield tasks_pb2.CreateTaskRequest(spec=spec)
        for chunk in byte_chunks(data):
            yield tasks_pb2.CreateTaskRequest(chunk=chunk)
            if spec_again and spec is not None:
                yield tasks_pb2.CreateTaskRequest(spec=spec)

    call = client.stub.CreateTask()
    writer = asyncio.create_task(write_all(call, requests()))
    try:
        task: tasks_pb2.Task = await call
    finally:
        await writer
    return task


async def refused(call: object, *codes: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    details = err.value.details() or ""
    assert err.value.code() in codes, (err.value.code(), details[:300])
    assert readable(details), details[:300]
    return details


INVALID = grpc.StatusCode.INVALID_ARGUMENT
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("hostile", HOSTILE, ids=hostile_ids())
async def test_hostile_upload_becomes_a_task_or_a_status(
    client: EscribaClient, stack: LocalStack, tmp_path: Path, hostile: Hostile
) -> None:
    path = media.write(tmp_path / "upload.bin", hostile.make())
    if hostile.reason == "empty_input":  # nothing to store: refused before a task exists
        rows = await task_rows(stack)
        details = await refused(client.create_task(path), INVALID)
        assert details.startswith("empty_input")
        assert await task_rows(stack) == rows
        return
    with PeakRss() as peak:
        task = await run_task(client, path, timeout_s=120)
    assert peak.growth_mb < MEMORY_BOUND_MB, f"{hostile.name} took {peak.growth_mb:.0f} MB"
    if hostile.reason is None:
        assert status_name(task) == "completed", task.error
        assert task.result.duration_s > 0
        return
    assert status_name(task) == "failed"
    assert task.error_reason == hostile.reason, task.error
    assert task.error.startswith("preprocess: ") and readable(task.error), task.error
    assert task.attempts == 1, "a permanent failure was retried"


async def test_upload_over_the_limit_is_refused_while_streaming(
    client: EscribaClient, stack: LocalStack, tmp_path: Path
) -> None:
    path = media.write(tmp_path / "big.bin", media.random_bytes(4 * MAX_UPLOAD_BYTES))
    rows = await task_rows(stack)
    with PeakRss() as peak:
        details = await refused(client.create_task(path), TOO_BIG)
    assert details.startswith("input_too_large") and str(MAX_UPLOAD_BYTES) in details
    assert peak.growth_mb < MAX_UPLOAD_BYTES / 2**20 + 100, f"took {peak.growth_mb:.0f} MB"
    assert await task_rows(stack) == rows


def spec_with(**options: object) -> tasks_pb2.TaskSpec:
    spec = make_spec("clip.flac")
    for path, value in options.items():
        target: object = spec
        *parents, name = path.split("__")
        for parent in parents:
            target = getattr(target, parent)
        if isinstance(value, list):
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)
    return spec


HUGE = "word " * (TEN_MB // 5)


@pytest.mark.parametrize(
    ("spec", "codes"),
    [
        pytest.param(spec_with(transcription__hotwords=HUGE), (INVALID,), id="10 MB hotwords"),
        pytest.param(spec_with(transcription__initial_prompt=HUGE), (INVALID,), id="10 MB prompt"),
        pytest.param(spec_with(filename=HUGE), (INVALID,), id="10 MB filename"),
        pytest.param(
            spec_with(correction__glossary=[common_pb2.GlossaryEntry(term=HUGE)]),
            (INVALID,),
            id="10 MB glossary",
        ),
        pytest.param(
            # Every entry, alias and phrase within its own limit, 720,000 characters in all: about 20 s
            # and 250 MiB to compile in the correction stage before the budget in characters existed.
            spec_with(
                correction__glossary=[
                    common_pb2.GlossaryEntry(
                        term=f"Term {n:04d} " + "x" * 50,
                        aliases=[f"alias {n:04d} {k:02d} " + "y" * 46 for k in range(20)],
                    )
                    for n in range(570)
                ]
            ),
            (INVALID,),
            id="glossary costly to compile",
        ),
        pytest.param(spec_with(correction__language=HUGE), (INVALID,), id="10 MB correction language"),
        pytest.param(spec_with(transcription__beam_size=2**32 - 1), (INVALID,), id="huge beam size"),
        pytest.param(spec_with(transcription__temperature=-1.0), (INVALID,), id="negative temperature"),
        pytest.param(spec_with(transcription__temperature=math.nan), (INVALID,), id="NaN temperature"),
        pytest.param(spec_with(transcription__vad__threshold=-3.0), (INVALID,), id="negative VAD threshold"),
        pytest.param(
            spec_with(transcription__vad__speech_pad_ms=2**32 - 1), (INVALID,), id="huge VAD padding"
        ),
        pytest.param(spec_with(transcription__language="zz-top"), (INVALID,), id="unknown language"),
        pytest.param(spec_with(output_formats=[99]), (INVALID,), id="unknown output format"),
    ],
)
async def test_malformed_spec_is_refused_before_anything_is_stored(
    client: EscribaClient, stack: LocalStack, spec: tasks_pb2.TaskSpec, codes: tuple[grpc.StatusCode, ...]
) -> None:
    rows = await task_rows(stack)
    await refused(create(client, spec, media.JFK.read_bytes()), *codes)
    assert await task_rows(stack) == rows


async def test_message_over_the_size_limit(client: EscribaClient, stack: LocalStack) -> None:
    # Refused by gRPC itself before the servicer sees it. Only the spec is sent: with chunks still
    # being written, grpc's client can replace the status with INTERNAL (grpc/grpc#36066).
    rows = await task_rows(stack)
    details = await refused(create(client, spec_with(transcription__hotwords=HUGE * 2), b""), TOO_BIG)
    assert "larger than max" in details
    await refused(client.stub.ListTasks(tasks_pb2.ListTasksRequest(page_token="A" * 2 * TEN_MB)), TOO_BIG)
    assert await task_rows(stack) == rows


async def test_stream_out_of_order_is_refused(client: EscribaClient, stack: LocalStack) -> None:
    rows = await task_rows(stack)
    jfk = media.JFK.read_bytes()
    assert (await refused(create(client, None, jfk), INVALID)).startswith("malformed_request")
    twice = create(client, make_spec("a.flac"), jfk, spec_again=True)
    assert (await refused(twice, INVALID)).startswith("malformed_request")
    assert (await refused(create(client, None, b""), INVALID)).startswith("empty_input")
    assert await task_rows(stack) == rows


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\..\\..\\Windows\\win.ini", "win.ini"),
        ("/", ""),
        ("..", ""),
        ("rec\x00ord\x1b[31m.flac", "record[31m.flac"),
        ("a/" * 100 + "b" * 400 + ".mp3", "b" * 255),
    ],
)
async def test_path_like_filenames_are_cleaned(client: EscribaClient, name: str, shown: str) -> None:
    task = await create(client, make_spec(name), media.JFK.read_bytes())
    assert task.spec.filename == shown
    await client.cancel(task.id)


async def test_malformed_reads_get_invalid_argument(client: EscribaClient) -> None:
    stub: tasks_pb2_grpc.TaskServiceStub = client.stub
    for task_id in ("", "../../etc/passwd", "' OR 1=1 --", "x" * TEN_MB):
        await refused(stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task_id)), INVALID)
        await refused(stub.CancelTask(tasks_pb2.CancelTaskRequest(task_id=task_id)), INVALID)
        await refused(stub.ArchiveTask(tasks_pb2.ArchiveTaskRequest(task_id=task_id)), INVALID)
        async with asyncio.timeout(30):
            await refused(_first(stub.WatchTask(tasks_pb2.WatchTaskRequest(task_id=task_id))), INVALID)
    for request in (
        tasks_pb2.ListTasksRequest(statuses=[42]),  # type: ignore[list-item]  # unknown to this server
        tasks_pb2.ListTasksRequest(page_size=2**32 - 1),
        tasks_pb2.ListTasksRequest(page_token="!!!not-a-token"),
        tasks_pb2.ListTasksRequest(page_token="A" * TEN_MB),
    ):
        await refused(stub.ListTasks(request), INVALID)
    missing = "7a0e6d8e-5b1b-4c47-9f4e-2f1a0a6c1d2e"
    await refused(stub.GetTask(tasks_pb2.GetTaskRequest(task_id=missing)), grpc.StatusCode.NOT_FOUND)


async def _first(stream: grpc.aio.UnaryStreamCall) -> object:
    async for event in stream:
        return event
    return None


async def test_still_healthy_and_transcribing(client: EscribaClient, stack: LocalStack) -> None:
    async with grpc.aio.insecure_channel(stack.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    task = await run_task(client, media.JFK, timeout_s=120)
    assert status_name(task) == "completed", task.error
    assert wer(JFK_REFERENCE, task.result.corrected_text) <= 0.1
