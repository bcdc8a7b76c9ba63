"""TaskService with caller checks on: bearer tokens, owners, and the per-owner queue limit.

A real gateway over TLS, with real NATS and PostgreSQL, and no stage workers: tasks stay ``queued``,
so what one owner does to another's task would show in the row.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from escriba.bus import delete_topology
from escriba.client import EscribaClient
from escriba.common.grpc_server import RunningServer, make_ready, start_server
from escriba.common.security import SecuritySettings, channel_credentials, open_channel
from escriba.common.settings import load
from escriba.db.settings import DatabaseSettings
from escriba.gateway.auth import authenticator
from escriba.gateway.server import GatewayComponent
from escriba.gateway.settings import GatewaySettings
from escriba.local.nats import EmbeddedNats
from escriba.local.secure import LocalSecurity, create_local_security
from escriba.pipeline.runtime import PipelineRuntime
from escriba.v1 import tasks_pb2
from tests.support.grpc_servers import TEST_SERVER_SETTINGS
from tests.support.nats_fixtures import bus_settings
from tests.support.stack import status_name

pytestmark = pytest.mark.timeout(90)

ISSUER = "https://id.example.test"
AUDIENCE = "escriba"
MAX_QUEUED = 3
UNKNOWN_STATUS = tasks_pb2.TaskStatus.ValueType(99)
NO_TASK = "00000000-0000-0000-0000-000000000000"


@dataclass
class Gateway:
    address: str
    pki: LocalSecurity
    jwt_key: Any
    pool: Any

    def client(self, token: str | None = None) -> EscribaClient:
        return EscribaClient(self.address, ca_file=self.pki.ca, token=token)

    def jwt(self, key: Any = None, algorithm: str = "ES256", **claims: Any) -> str:
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 300, **claims}
        return jwt.encode(
            {k: v for k, v in payload.items() if v is not None}, key or self.jwt_key, algorithm=algorithm
        )

    async def rows(self) -> list[Mapping[str, Any]]:
        return list(
            await self.pool.fetch("SELECT id::text, owner_id, status, is_archived FROM transcription_tasks")
        )


@asynccontextmanager
async def gateway_server(
    nats: EmbeddedNats,
    db_settings: DatabaseSettings,
    pool: Any,
    folder: Path,
    security_env: Mapping[str, str],
    jwt_key: Any = None,
) -> AsyncIterator[Gateway]:
    pki = create_local_security(folder / "pki", owners=("alice", "bob"))
    security = load(
        SecuritySettings,
        {
            "ESCRIBA_TLS_CERT_FILE": str(pki.server.cert),
            "ESCRIBA_TLS_KEY_FILE": str(pki.server.key),
            "ESCRIBA_AUTH_ENABLED": "true",
            **security_env,
        },
    ).validate()
    settings = load(GatewaySettings, {"ESCRIBA_GATEWAY_MAX_QUEUED_PER_OWNER": str(MAX_QUEUED)})
    runtime = PipelineRuntime(bus_settings(nats.url), db_settings, client_name="security-tests")
    component = GatewayComponent(runtime, settings, authenticator(security, settings.default_owner))
    running: RunningServer = await start_server(
        [runtime, component], TEST_SERVER_SETTINGS, port=0, security=security
    )
    try:
        await make_ready(running)
        yield Gateway(f"127.0.0.1:{running.port}", pki, jwt_key, pool)
    finally:
        pipeline = runtime.pipeline
        await delete_topology(pipeline.js, pipeline.names)
        await running.shutdown()


@pytest.fixture
def es256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture
async def gateway(
    nats_server: EmbeddedNats,
    db_settings: DatabaseSettings,
    db_pool: Any,
    tmp_path: Path,
    es256_key: ec.EllipticCurvePrivateKey,
) -> AsyncIterator[Gateway]:
    """Static tokens for alice and bob, and ES256 JWTs from one issuer for one audience."""
    public_key = tmp_path / "jwt.pub.pem"
    public_key.write_bytes(public_pem(es256_key))
    pki_dir = tmp_path / "gateway"
    pki_dir.mkdir()
    env = {
        "ESCRIBA_AUTH_TOKENS_FILE": str(pki_dir / "pki" / "tokens"),
        "ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE": str(public_key),
        "ESCRIBA_AUTH_JWT_ISSUER": ISSUER,
        "ESCRIBA_AUTH_JWT_AUDIENCE": AUDIENCE,
        "ESCRIBA_AUTH_JWT_LEEWAY_S": "0",
    }
    async with gateway_server(nats_server, db_settings, db_pool, pki_dir, env, es256_key) as gw:
        yield gw


async def error_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def watch_first(client: EscribaClient, task_id: str) -> tasks_pb2.TaskEvent:
    async for event in client.watch(task_id):
        return event
    raise AssertionError("the watch ended without an event")


def forged_hs256(claims: Mapping[str, Any], secret: bytes) -> str:
    """An HS256 token signed with ``secret`` (PyJWT refuses to sign with a PEM, an attacker would not)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = part(json.dumps(dict(claims)).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(signature)}"


# Refused callers --------------------------------------------------------------------------------


async def test_requests_without_valid_credentials_are_refused(gateway: Gateway, data_dir: Path) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    bad_tokens = {
        "no token": None,
        "unknown static token": "A" * 43,
        "expired JWT": gateway.jwt(exp=now - 60),
        "JWT signed by another key": gateway.jwt(key=other_key),
        "JWT for another audience": gateway.jwt(aud="someone-else"),
        "JWT from another issuer": gateway.jwt(iss="https://evil.example.test"),
        "JWT without expiry": gateway.jwt(exp=None),
        "unsigned JWT": jwt.encode({"sub": "alice", "exp": now + 300}, "", algorithm="none"),
        "HS256 with the public key as secret": forged_hs256(
            {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}, public_pem(gateway.jwt_key)
        ),
    }
    for what, token in bad_tokens.items():
        async with gateway.client(token) as client:
            for call in (
                lambda: client.get(NO_TASK),
                lambda: client.list(tasks_pb2.ListTasksRequest(statuses=[UNKNOWN_STATUS])),  # refused first
                lambda: client.create_task(data_dir / "jfk.flac"),
                lambda: watch_first(client, NO_TASK),
                lambda: client.cancel(NO_TASK),
                lambda: client.archive(NO_TASK),
            ):
                error = await error_of(call())
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (what, error.details())
                # A short reason only: never which check of the token failed.
                reason = error.details().split(":")[0]
                expected = {"no token": "missing_credentials", "expired JWT": "token_expired"}
                assert reason == expected.get(what, "invalid_token"), (what, error.details())
    assert await gateway.rows() == []  # nothing was stored for anyone


async def test_an_unknown_caller_that_sends_nothing_is_answered_without_being_waited_for(
    gateway: Gateway,
) -> None:
    """An unauthenticated CreateTask that never sends its spec used to hold an RPC slot forever (the
    gateway drained its upload first); now it is answered within a bounded time."""
    async with gateway.client("A" * 43) as client:

        async def nothing() -> AsyncIterator[tasks_pb2.CreateTaskRequest]:
            await asyncio.Event().wait()
            yield tasks_pb2.CreateTaskRequest()  # pragma: no cover

        async with asyncio.timeout(20):
            error = await error_of(client.stub.CreateTask(nothing(), metadata=client.metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_basic_credentials_are_not_a_bearer_token(gateway: Gateway) -> None:
    token = gateway.pki.token("alice")
    async with gateway.client() as client:
        client.metadata = (("authorization", f"Basic {token}"),)
        error = await error_of(client.get(NO_TASK))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details().startswith("missing_credentials")


async def test_a_token_without_an_owner_is_denied(gateway: Gateway) -> None:
    async with gateway.client(gateway.jwt(sub=None)) as client:
        error = await error_of(client.list(tasks_pb2.ListTasksRequest()))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_needs_no_credentials(gateway: Gateway) -> None:
    async with open_channel(gateway.address, channel_credentials(gateway.pki.ca)) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# Owners -----------------------------------------------------------------------------------------


async def test_static_tokens_and_jwts_name_the_owner(gateway: Gateway, data_dir: Path) -> None:
    async with gateway.client(gateway.pki.token("alice")) as alice:
        task = await alice.create_task(data_dir / "jfk.flac")
    assert task.owner_id == "alice" and status_name(task) == "queued"
    async with gateway.client(gateway.jwt(sub="alice")) as alice_jwt:
        assert (await alice_jwt.get(task.id)).owner_id == "alice"
    async with gateway.client(gateway.jwt(sub="carol")) as carol:
        assert (await carol.list(tasks_pb2.ListTasksRequest())).tasks == []
        created = await carol.create_task(data_dir / "jfk.flac")
        assert created.owner_id == "carol"


async def test_an_owner_cannot_see_or_touch_another_owners_task(gateway: Gateway, data_dir: Path) -> None:
    async with (
        gateway.client(gateway.pki.token("alice")) as alice,
        gateway.client(gateway.pki.token("bob")) as bob,
    ):
        task = await alice.create_task(data_dir / "jfk.flac")
        bobs = await bob.create_task(data_dir / "jfk.flac")
        for call in (
            lambda: bob.get(task.id),
            lambda: watch_first(bob, task.id),
            lambda: bob.cancel(task.id),
            lambda: bob.archive(task.id),
        ):
            error = await error_of(call())
            # Exactly like a task that does not exist: ids cannot be probed across owners.
            assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
        assert [t.id for t in (await bob.list(tasks_pb2.ListTasksRequest())).tasks] == [bobs.id]
        assert [t.id for t in (await alice.list(tasks_pb2.ListTasksRequest())).tasks] == [task.id]
        # Alice's task is untouched: still queued, not archived, and hers.
        again = await alice.get(task.id)
        assert status_name(again) == "queued" and not again.is_archived and again.owner_id == "alice"
        rows = {r["id"]: r for r in await gateway.rows()}
        assert rows[task.id]["status"] == "queued" and rows[task.id]["owner_id"] == "alice"
        # Her own cancel and archive work; Bob still sees nothing of it.
        assert status_name(await alice.cancel(task.id)) == "cancelled"
        assert (await alice.archive(task.id)).is_archived
        error = await error_of(bob.archive(task.id))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        listed = await bob.list(tasks_pb2.ListTasksRequest(archived=True))
        assert listed.tasks == []
        assert status_name(await bob.get(bobs.id)) == "queued"


# Limits -----------------------------------------------------------------------------------------


async def test_queued_tasks_per_owner_are_limited(gateway: Gateway, data_dir: Path) -> None:
    audio = data_dir / "jfk.flac"
    async with (
        gateway.client(gateway.pki.token("alice")) as alice,
        gateway.client(gateway.pki.token("bob")) as bob,
    ):
        tasks = [await alice.create_task(audio) for _ in range(MAX_QUEUED)]
        error = await error_of(alice.create_task(audio))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details().startswith("too_many_unfinished_tasks")
        # Transcribe goes through the same door.
        error = await error_of(alice.transcribe(audio))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Another owner is not affected, and a finished task frees a place.
        assert (await bob.create_task(audio)).owner_id == "bob"
        await alice.cancel(tasks[0].id)
        assert status_name(await alice.create_task(audio)) == "queued"
        owners = [r["owner_id"] for r in await gateway.rows()]
        assert owners.count("alice") == MAX_QUEUED + 1 and owners.count("bob") == 1


# HMAC-signed JWTs -------------------------------------------------------------------------------


async def test_hs256_jwts_verified_with_a_shared_secret(
    nats_server: EmbeddedNats, db_settings: DatabaseSettings, db_pool: Any, tmp_path: Path
) -> None:
    secret = b"s" * 16 + hashlib.sha256(b"escriba tests").hexdigest().encode()
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_bytes(secret + b"\n")  # a trailing newline, as `kubectl create secret` may leave
    env = {"ESCRIBA_AUTH_JWT_SECRET_FILE": str(secret_file)}
    async with gateway_server(nats_server, db_settings, db_pool, tmp_path, env) as gw:
        claims = {"sub": "dave", "exp": int(time.time()) + 300}
        async with gw.client(jwt.encode(claims, secret, algorithm="HS256")) as dave:
            assert (await dave.list(tasks_pb2.ListTasksRequest())).tasks == []
        for token in (
            jwt.encode(claims, b"x" * 48, algorithm="HS256"),  # another secret
            jwt.encode({**claims, "aud": "escriba"}, secret, algorithm="HS256"),  # no audience configured
            gw.pki.token("alice"),  # static tokens are not configured on this gateway
        ):
            async with gw.client(token) as client:
                error = await error_of(client.list(tasks_pb2.ListTasksRequest()))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
