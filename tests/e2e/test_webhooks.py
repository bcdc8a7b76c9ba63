"""Webhooks on a local stack with a real HTTP receiver: signed, retried with backoff, every attempt
on the task, and never sent where the address policy forbids (loopback is allowed for the test)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from aiohttp import web

from escriba.client import EscribaClient, make_spec
from escriba.local.nats import EmbeddedNats
from escriba.local.postgres import free_port
from escriba.local.stack import LocalStack
from escriba.v1 import tasks_pb2
from escriba.webhooks.signing import parse_secret, verify
from tests.support.media import JFK
from tests.support.stack import stack_config
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

SECRET = b"whsec_" + __import__("base64").b64encode(b"a test secret of 32 bytes long!!")
TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("webhooks") / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str, secret_file: Path) -> AsyncIterator[LocalStack]:
    env = {
        "ESCRIBA_WEBHOOK_SECRET_FILE": str(secret_file),
        "ESCRIBA_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
        "ESCRIBA_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
        "ESCRIBA_WEBHOOK_BACKOFF_S": "0.5,1",
        "ESCRIBA_WEBHOOK_MAX_ATTEMPTS": "6",
    }
    async with LocalStack(stack_config(nats_server.url, postgres_dsn, env=env)) as running:
        yield running


@dataclasses.dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """A webhook receiver whose every path answers as its test scripts it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: dict[str, list[Received]] = {}
        self.scripts: dict[str, Callable[[int], Awaitable[web.StreamResponse]]] = {}
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        calls = self.received.setdefault(path, [])
        calls.append(Received(dict(request.headers), await request.read(), time.monotonic()))
        script = self.scripts.get(path)
        if script is None:
            return web.Response(status=204)
        return await script(len(calls))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver(free_port("127.0.0.1"))
    await running.start()
    yield running
    await running.stop()


async def submit(client: EscribaClient, webhook_url: str) -> tasks_pb2.Task:
    spec = make_spec(JFK.name)
    spec.webhook_url = webhook_url
    return await client.create_task(JFK, spec)


async def attempts_of(client: EscribaClient, task_id: str, count: int) -> list[tasks_pb2.WebhookAttempt]:
    async def enough() -> list[tasks_pb2.WebhookAttempt] | None:
        task = await client.get(task_id)
        return list(task.webhook_attempts) if len(task.webhook_attempts) >= count else None

    found: list[tasks_pb2.WebhookAttempt] = await eventually(
        enough, f"{count} webhook attempts", timeout_s=60
    )
    return found


def assert_signed(call: Received, task_id: str) -> dict[str, object]:
    verify(parse_secret(SECRET), call.headers, call.body, now=int(time.time()))
    event = json.loads(call.body)
    assert event["type"] == "task.completed"
    assert event["data"]["id"] == task_id
    assert call.headers["webhook-id"] == f"msg_{task_id}_completed"
    return dict(event)


async def test_a_receiver_down_at_first_gets_the_event_once_it_is_up(client: EscribaClient) -> None:
    late = Receiver(free_port("127.0.0.1"))
    task = await submit(client, late.url("late"))
    first = await attempts_of(client, task.id, 1)
    assert not first[0].delivered and first[0].http_status == 0 and first[0].error
    await late.start()
    try:
        attempts = await attempts_of(client, task.id, len(first) + 1)
        assert attempts[-1].delivered and attempts[-1].http_status == 204
        assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
        (call,) = late.received["late"]
        event = assert_signed(call, task.id)
        assert "country" in str(event["data"])
    finally:
        await late.stop()


async def test_a_500_is_retried_and_the_200_delivers(client: EscribaClient, receiver: Receiver) -> None:
    async def flaky(call: int) -> web.StreamResponse:
        return web.Response(status=500 if call == 1 else 200)

    receiver.scripts["flaky"] = flaky
    task = await submit(client, receiver.url("flaky"))
    attempts = await attempts_of(client, task.id, 2)
    assert [(a.http_status, a.delivered) for a in attempts] == [(500, False), (200, True)]
    assert attempts[0].error == "the receiver answered HTTP 500"
    first, second = receiver.received["flaky"]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # receivers dedupe on it
    assert second.at - first.at >= 0.4  # the backoff was waited
    assert_signed(second, task.id)


async def test_a_slow_receiver_times_out_and_is_tried_again(
    client: EscribaClient, receiver: Receiver
) -> None:
    async def slow_once(call: int) -> web.StreamResponse:
        if call == 1:
            await asyncio.sleep(TIMEOUT_S * 3)
        return web.Response(status=202)

    receiver.scripts["slow"] = slow_once
    task = await submit(client, receiver.url("slow"))
    attempts = await attempts_of(client, task.id, 2)
    assert not attempts[0].delivered and "no answer within" in attempts[0].error
    assert attempts[1].delivered and attempts[1].http_status == 202


async def test_a_redirect_to_a_private_address_is_refused_for_good(
    stack: LocalStack, client: EscribaClient, receiver: Receiver
) -> None:
    async def to_metadata(call: int) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("http://169.254.169.254/latest/meta-data/")

    receiver.scripts["redirect"] = to_metadata
    task = await submit(client, receiver.url("redirect"))
    (attempt,) = await attempts_of(client, task.id, 1)
    assert not attempt.delivered and "169.254.169.254" in attempt.error

    async def settled() -> bool:
        assert stack.runtime is not None
        pipeline = stack.runtime.pipeline
        info = await pipeline.js.stream_info(pipeline.names.webhooks_stream)
        return info.state.messages == 0

    await eventually(settled, "the refused delivery to leave the work queue")
    task_now = await client.get(task.id)
    assert len(task_now.webhook_attempts) == 1  # refused for good: never tried again


async def test_a_webhook_to_a_private_address_is_refused(client: EscribaClient) -> None:
    task = await submit(client, "http://10.1.2.3/hook")
    (attempt,) = await attempts_of(client, task.id, 1)
    assert not attempt.delivered and "10.1.2.3" in attempt.error


async def test_a_malformed_webhook_url_fails_the_create(client: EscribaClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await submit(client, "ftp://example.com/hook")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "webhook_url" in (info.value.details() or "")
