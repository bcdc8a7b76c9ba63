"""`escriba serve` that cannot start: one line naming the setting and the cause, non-zero exit, no
traceback, for a taken port, an unreadable certificate and an unreachable NATS or PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from escriba.local.nats import EmbeddedNats

pytestmark = pytest.mark.timeout(180)

UNREACHABLE = {
    "ESCRIBA_NATS_URL": "nats://127.0.0.1:1",
    "ESCRIBA_DATABASE_URL": "postgresql://escriba@127.0.0.1:1/escriba",
    "ESCRIBA_NATS_STARTUP_TIMEOUT_S": "2",
    "ESCRIBA_DATABASE_CONNECT_ATTEMPTS": "1",
    "ESCRIBA_METRICS_PORT": "0",
}


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def serve(service: str, env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ESCRIBA_")}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "escriba.cli", "serve", service, *args],
        env={**base, "ESCRIBA_LOG_LEVEL": "ERROR", **env},
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # Log records are JSON lines; what the person reads is the last plain line.
    plain = [line for line in result.stderr.splitlines() if line.startswith("escriba: ")]
    return result.returncode, plain


async def test_a_taken_metrics_port_names_its_setting(taken_port: int) -> None:
    code, lines = await serve("correction", {**UNREACHABLE, "ESCRIBA_METRICS_PORT": str(taken_port)})
    assert code != 0
    assert lines == [
        f"escriba: cannot start: ESCRIBA_METRICS_PORT: cannot listen on 0.0.0.0:{taken_port} for "
        "Prometheus metrics: the port is already in use (another process listens there)"
    ]


async def test_a_taken_grpc_port_names_its_setting(taken_port: int) -> None:
    code, lines = await serve("correction", UNREACHABLE, "--port", str(taken_port))
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("escriba: cannot start: ESCRIBA_GRPC_PORT: ")
    assert "already in use" in lines[0]


async def test_an_unreadable_certificate_names_its_setting(tmp_path: Path) -> None:
    key = tmp_path / "tls.key"
    key.write_text("not a key")
    env = {
        **UNREACHABLE,
        "ESCRIBA_TLS_CERT_FILE": str(tmp_path / "missing.pem"),
        "ESCRIBA_TLS_KEY_FILE": str(key),
    }
    code, lines = await serve("correction", env, "--port", "0")
    assert code != 0
    assert lines == [
        f"escriba: bad setting: ESCRIBA_TLS_CERT_FILE: cannot read {tmp_path / 'missing.pem'}:"
        " No such file or directory"
    ]


async def test_unreachable_nats_names_its_setting() -> None:
    code, lines = await serve("correction", UNREACHABLE, "--port", "0")
    assert code != 0
    assert len(lines) == 1 and "ESCRIBA_NATS_URL" in lines[0] and "not reachable" in lines[0]


async def test_unreachable_postgres_names_its_setting(nats_server: EmbeddedNats) -> None:
    env = {
        **UNREACHABLE,
        "ESCRIBA_NATS_URL": nats_server.url,
        "ESCRIBA_NATS_PREFIX": f"s{uuid.uuid4().hex[:8]}",
    }
    code, lines = await serve("correction", env, "--port", "0")
    assert code != 0
    assert len(lines) == 1 and "ESCRIBA_DATABASE_URL" in lines[0] and "unreachable" in lines[0]


async def test_a_taken_http_port_names_its_setting(
    nats_server: EmbeddedNats, postgres_dsn: str, taken_port: int
) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        **UNREACHABLE,
        "ESCRIBA_NATS_URL": nats_server.url,
        "ESCRIBA_NATS_PREFIX": f"s{suffix}",
        "ESCRIBA_DATABASE_URL": postgres_dsn,
        "ESCRIBA_DATABASE_SCHEMA": f"startup_{suffix}",
        "ESCRIBA_HTTP_PORT": str(taken_port),
    }
    migrate = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "escriba.cli", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    code, lines = await serve("gateway", env, "--port", "0")
    assert code != 0
    assert lines == [
        f"escriba: cannot start: ESCRIBA_HTTP_PORT: cannot listen on 0.0.0.0:{taken_port} for the "
        "OpenAI-compatible HTTP API: the port is already in use (another process listens there)"
    ]
