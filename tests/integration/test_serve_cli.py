"""`escriba serve SERVICE --port N`: SERVING once ready, listed by reflection, drained on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.grpc_servers import free_port

pytestmark = pytest.mark.timeout(180)


async def _wait_serving(
    stub: health_pb2_grpc.HealthStub, service: str, proc: subprocess.Popen[bytes]
) -> None:
    for _ in range(600):
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{service} never became SERVING")


async def _list_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for response in stub.ServerReflectionInfo(requests()):
        return {s.name for s in response.list_services_response.service}
    return set()


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.parametrize(
    ("service", "grpc_name"),
    [
        ("preprocess", "escriba.v1.PreprocessService"),
        ("transcription", "escriba.v1.TranscriptionService"),
        ("correction", "escriba.v1.CorrectionService"),
    ],
)
async def test_serve_health_reflection_and_sigterm(service: str, grpc_name: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCRIBA_")} | {
        "ESCRIBA_METRICS_PORT": "0",
        "ESCRIBA_GRPC_HOST": "127.0.0.1",
        "ESCRIBA_SHUTDOWN_GRACE_S": "3",
    }
    proc = _spawn([sys.executable, "-m", "escriba.cli", "serve", service, "--port", str(port)], env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await _wait_serving(health, grpc_name, proc)
            overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert overall.status == health_pb2.HealthCheckResponse.SERVING
            services = await _list_services(channel)
            assert grpc_name in services
            assert "grpc.health.v1.Health" in services
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, output.decode(errors="replace")[-2000:]
        assert b"shutting down" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_bad_setting_fails_fast_naming_the_variable() -> None:
    env = dict(os.environ) | {"ESCRIBA_TRANSCRIPTION_DEVICE": "tpu", "ESCRIBA_METRICS_PORT": "0"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "escriba.cli", "serve", "transcription", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "ESCRIBA_TRANSCRIPTION_DEVICE" in result.stderr
