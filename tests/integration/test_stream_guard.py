"""Idle and endless streams cannot exhaust a server, one client cannot take every slot, and readiness
says when the server cannot take work: a real gRPC server on a free port, the built-in health and
reflection services as the streams (every Escriba server has them)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from escriba.common.grpc_server import RunningServer, ServerSettings, make_ready, server_options, start_server
from escriba.common.security import SecuritySettings
from escriba.common.settings import load
from escriba.common.stream_guard import peer_address
from tests.support.grpc_servers import TEST_SERVER_SETTINGS

pytestmark = pytest.mark.timeout(60)

CHECK = health_pb2.HealthCheckRequest(service="")


@asynccontextmanager
async def server(**changes: object) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    settings: ServerSettings = dataclasses.replace(TEST_SERVER_SETTINGS, **changes)  # type: ignore[arg-type]
    running = await start_server([], settings, port=0, security=load(SecuritySettings, {}))
    try:
        await make_ready(running)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, channel
    finally:
        await running.shutdown()


async def _forever() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    await asyncio.Event().wait()
    yield reflection_pb2.ServerReflectionRequest()  # pragma: no cover


async def _status_now(running: RunningServer) -> int:
    """What the health service (the one the separate probe port also answers from) says now."""
    reply = await running.health.Check(CHECK, None)
    return int(reply.status)


async def test_a_stream_that_sends_nothing_is_closed() -> None:
    async with server(stream_idle_s=0.5) as (_, channel):
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(_forever())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "sent nothing for 0.5 s" in (caught.value.details() or "")


async def test_a_stream_that_keeps_talking_is_not_idle() -> None:
    async with server(stream_idle_s=0.5) as (_, channel):

        async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            for _ in range(4):
                await asyncio.sleep(0.3)
                yield reflection_pb2.ServerReflectionRequest(list_services="")

        answers = [
            a
            async for a in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests())
        ]
        assert len(answers) == 4


async def test_a_stream_never_outlives_its_bound() -> None:
    async with server(stream_max_s=1.0) as (_, channel):
        watch = health_pb2_grpc.HealthStub(channel).Watch(CHECK)
        seen = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for reply in watch:
                seen.append(reply.status)
        assert seen == [health_pb2.HealthCheckResponse.SERVING]
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_one_client_cannot_take_every_slot() -> None:
    async with server(max_concurrent_rpcs=8, max_rpcs_per_peer=2) as (_, channel):
        stub = health_pb2_grpc.HealthStub(channel)
        watches = [stub.Watch(CHECK) for _ in range(2)]
        for watch in watches:
            await watch.read()  # each is being served now
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(CHECK)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already holds 2 calls" in (caught.value.details() or "")
        watches[0].cancel()

        async def admitted() -> bool:
            try:
                await stub.Check(CHECK)
            except grpc.aio.AioRpcError:
                return False
            return True

        for _ in range(100):
            if await admitted():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the client's freed slot never came back")
        watches[1].cancel()


async def test_readiness_reports_a_server_whose_slots_are_all_taken() -> None:
    async with server(max_concurrent_rpcs=3, max_rpcs_per_peer=0) as (running, channel):
        stub = health_pb2_grpc.HealthStub(channel)
        assert await _status_now(running) == health_pb2.HealthCheckResponse.SERVING
        watches = [stub.Watch(CHECK) for _ in range(3)]
        for watch in watches:
            await watch.read()
        assert await _status_now(running) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(CHECK)  # grpc itself refuses a fourth call
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        for watch in watches:
            watch.cancel()
        for _ in range(100):
            if await _status_now(running) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("readiness did not come back when the slots were freed")
        assert (await stub.Check(CHECK)).status == health_pb2.HealthCheckResponse.SERVING


async def test_shutdown_is_not_undone_by_freed_slots() -> None:
    async with server(max_concurrent_rpcs=2, max_rpcs_per_peer=0) as (running, _):
        await running.set_saturated(True)
        await running.set_serving(False)
        await running.set_saturated(False)
        assert await _status_now(running) == health_pb2.HealthCheckResponse.NOT_SERVING


class _Context:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:53122", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:40000", "ipv6:[::1]"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
        ("", ""),
    ],
)
def test_a_peer_is_its_address_not_its_port(peer: str, address: str) -> None:
    assert peer_address(_Context(peer)) == address


def test_streams_per_connection_are_bounded_only_when_asked() -> None:
    assert "grpc.max_concurrent_streams" not in dict(server_options(TEST_SERVER_SETTINGS))
    bounded = dataclasses.replace(TEST_SERVER_SETTINGS, max_streams_per_connection=50)
    assert dict(server_options(bounded))["grpc.max_concurrent_streams"] == 50
