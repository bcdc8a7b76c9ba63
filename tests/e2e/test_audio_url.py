"""Audio by URL: the preprocess stage fetches http(s) and s3:// audio under the upload's limits, with
time limits and the address policy; each failure fails the task with its own reason."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from aiohttp import web

from escriba.client import EscribaClient, make_spec
from escriba.local.nats import EmbeddedNats
from escriba.local.postgres import free_port
from escriba.local.stack import LocalStack
from escriba.pipeline.taskpb import status_from_pb
from escriba.v1 import tasks_pb2
from tests.support.media import JFK
from tests.support.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoServer
from tests.support.stack import stack_config
from tests.support.text import JFK_REFERENCE, wer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

LIMIT = 2 * 1024 * 1024
FETCH_TIMEOUT_S = 2.0


class AudioServer:
    """Serves the sample and every way a server can let a download down."""

    def __init__(self) -> None:
        self.port = free_port("127.0.0.1")
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jfk.flac", self._sample)
        app.router.add_get("/slow.flac", self._slow)
        app.router.add_get("/big-declared.wav", self._big_declared)
        app.router.add_get("/big-streamed.wav", self._big_streamed)
        app.router.add_get("/loop", self._loop)
        app.router.add_get("/to-private", self._to_private)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _sample(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=JFK.read_bytes(), content_type="audio/flac")

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(JFK.read_bytes()[:1000])
        await asyncio.sleep(FETCH_TIMEOUT_S * 4)
        return response

    async def _big_declared(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\0" * (LIMIT + 1), content_type="audio/wav")

    async def _big_streamed(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse early
        await response.prepare(request)
        for _ in range(LIMIT // 65536 + 4):
            await response.write(b"\0" * 65536)
        return response

    async def _loop(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(self.url("loop"))

    async def _to_private(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://192.168.0.10/audio.wav")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def audio_server() -> AsyncIterator[AudioServer]:
    server = AudioServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def bucket(moto_server: MotoServer) -> str:
    name = f"audio-{uuid.uuid4().hex[:8]}"
    s3 = moto_server.client()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="talks/jfk.flac", Body=JFK.read_bytes())
    return name


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    nats_server: EmbeddedNats,
    postgres_dsn: str,
    moto_server: MotoServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LocalStack]:
    secret = tmp_path_factory.mktemp("s3") / "secret"
    secret.write_text(SECRET_ACCESS_KEY + "\n")
    env = {
        "ESCRIBA_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
        "ESCRIBA_OUTBOUND_CONNECT_TIMEOUT_S": "1",
        "ESCRIBA_FETCH_TIMEOUT_S": str(FETCH_TIMEOUT_S),
        "ESCRIBA_PREPROCESS_MAX_INPUT_BYTES": str(LIMIT),
        "ESCRIBA_S3_ENDPOINT_URL": moto_server.url,
        "ESCRIBA_S3_REGION": "us-east-1",
        "ESCRIBA_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ESCRIBA_S3_SECRET_ACCESS_KEY_FILE": str(secret),
    }
    async with LocalStack(stack_config(nats_server.url, postgres_dsn, env=env)) as running:
        yield running


async def run_url(client: EscribaClient, url: str) -> tasks_pb2.Task:
    spec = make_spec("")
    spec.audio_url = url
    task = await client.create_task_from_url(spec)
    async with asyncio.timeout(120):
        async for event in client.watch(task.id):
            if event.HasField("task"):
                return event.task
    return await client.get(task.id)


def status(task: tasks_pb2.Task) -> str:
    found = status_from_pb(task.status)
    return found.value if found else "unknown"


async def test_an_http_url_is_transcribed(client: EscribaClient, audio_server: AudioServer) -> None:
    task = await run_url(client, audio_server.url("jfk.flac"))
    assert status(task) == "completed", task.error
    assert wer(JFK_REFERENCE, task.result.corrected_text) < 0.15
    assert task.audio.sha256 == hashlib.sha256(JFK.read_bytes()).hexdigest()
    assert task.spec.filename == "" and task.spec.audio_url.endswith("/jfk.flac")


async def test_an_s3_url_is_transcribed(client: EscribaClient, bucket: str) -> None:
    task = await run_url(client, f"s3://{bucket}/talks/jfk.flac")
    assert status(task) == "completed", task.error
    assert wer(JFK_REFERENCE, task.result.corrected_text) < 0.15


async def test_a_missing_s3_key_fails_the_task(client: EscribaClient, bucket: str) -> None:
    task = await run_url(client, f"s3://{bucket}/talks/nothing-here.flac")
    assert status(task) == "failed"
    assert task.error_reason == "audio_url_unavailable" and "NoSuchKey" in task.error


async def test_a_404_fails_the_task(client: EscribaClient, audio_server: AudioServer) -> None:
    task = await run_url(client, audio_server.url("missing.flac"))
    assert status(task) == "failed"
    assert task.error_reason == "audio_url_unavailable" and "404" in task.error


async def test_a_slow_server_fails_the_task_after_its_retries(
    client: EscribaClient, audio_server: AudioServer
) -> None:
    task = await run_url(client, audio_server.url("slow.flac"))
    assert status(task) == "failed"
    assert "ESCRIBA_FETCH_TIMEOUT_S" in task.error
    assert task.attempts >= 2  # a timeout is worth another try


@pytest.mark.parametrize("path", ["big-declared.wav", "big-streamed.wav"])
async def test_an_oversized_body_fails_the_task(
    client: EscribaClient, audio_server: AudioServer, path: str
) -> None:
    task = await run_url(client, audio_server.url(path))
    assert status(task) == "failed"
    assert task.error_reason == "input_too_large"


async def test_a_redirect_loop_fails_the_task(client: EscribaClient, audio_server: AudioServer) -> None:
    task = await run_url(client, audio_server.url("loop"))
    assert status(task) == "failed"
    assert task.error_reason == "too_many_redirects"


async def test_a_redirect_to_a_private_address_fails_the_task(
    client: EscribaClient, audio_server: AudioServer
) -> None:
    task = await run_url(client, audio_server.url("to-private"))
    assert status(task) == "failed"
    assert task.error_reason == "blocked_address" and "192.168.0.10" in task.error


async def test_a_url_with_uploaded_chunks_is_refused(
    client: EscribaClient, audio_server: AudioServer
) -> None:
    spec = make_spec("jfk.flac")
    spec.audio_url = audio_server.url("jfk.flac")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.create_task(JFK, spec)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not both" in (info.value.details() or "")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "s3://bucket-only", "http://"])
async def test_a_bad_audio_url_fails_the_create(client: EscribaClient, url: str) -> None:
    spec = make_spec("")
    spec.audio_url = url
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.create_task_from_url(spec)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
