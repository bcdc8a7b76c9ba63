"""EscribaClient retries reads the gateway refused for load, and never retries a write.

The server is a real gRPC server at a concurrent-RPC limit of one, which answers RESOURCE_EXHAUSTED to
a second call while the first is open (as the gateway does at ESCRIBA_GRPC_MAX_CONCURRENT_RPCS). Its
TaskService is a stand-in: what is under test is the client's channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from escriba.client import EscribaClient
from escriba.v1 import tasks_pb2, tasks_pb2_grpc

pytestmark = pytest.mark.timeout(30)


class BusyTaskService(tasks_pb2_grpc.TaskServiceServicer):
    """GetTask answers; WatchTask stays open until released; CancelTask counts its calls."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.watching = asyncio.Event()
        self.gets = 0
        self.cancels = 0

    async def GetTask(self, request: tasks_pb2.GetTaskRequest, context: object) -> tasks_pb2.Task:
        self.gets += 1
        return tasks_pb2.Task(id=request.task_id)

    async def WatchTask(
        self, request: tasks_pb2.WatchTaskRequest, context: object
    ) -> AsyncIterator[tasks_pb2.TaskEvent]:
        self.watching.set()
        await self.release.wait()
        yield tasks_pb2.TaskEvent(task_id=request.task_id)

    async def CancelTask(self, request: tasks_pb2.CancelTaskRequest, context: object) -> tasks_pb2.Task:
        self.cancels += 1
        return tasks_pb2.Task(id=request.task_id)


@pytest.fixture
async def busy() -> AsyncIterator[tuple[str, BusyTaskService]]:
    service = BusyTaskService()  # type: ignore[abstract]  # the other methods answer UNIMPLEMENTED
    server = grpc.aio.server(maximum_concurrent_rpcs=1)
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        service.release.set()
        await server.stop(grace=None)


async def hold_the_only_slot(client: EscribaClient, service: BusyTaskService) -> asyncio.Task[None]:
    async def watch() -> None:
        async for _ in client.watch("held"):
            pass

    holder = asyncio.create_task(watch())
    await asyncio.wait_for(service.watching.wait(), 5)
    return holder


async def test_a_read_refused_for_load_succeeds_once_the_server_has_room(
    busy: tuple[str, BusyTaskService],
) -> None:
    address, service = busy
    async with EscribaClient(address) as client:
        holder = await hold_the_only_slot(client, service)
        asyncio.get_running_loop().call_later(0.2, service.release.set)
        task = await client.get("t-1")  # refused at first, retried with backoff
        await holder
    assert task.id == "t-1" and service.gets == 1


async def test_a_write_refused_for_load_is_not_retried(busy: tuple[str, BusyTaskService]) -> None:
    address, service = busy
    async with EscribaClient(address) as client:
        holder = await hold_the_only_slot(client, service)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.cancel("t-2")
        service.release.set()
        await holder
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and service.cancels == 0
