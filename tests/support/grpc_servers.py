"""Run Escriba gRPC components in-process on a free port for integration tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc

from escriba.common.grpc_server import Component, RunningServer, ServerSettings, make_ready, start_server
from escriba.common.metrics import MetricsInterceptor
from escriba.common.settings import load

TEST_SERVER_SETTINGS = load(
    ServerSettings,
    {"ESCRIBA_GRPC_HOST": "127.0.0.1", "ESCRIBA_METRICS_PORT": "0", "ESCRIBA_SHUTDOWN_GRACE_S": "5"},
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def serving(
    components: Sequence[Component], settings: ServerSettings = TEST_SERVER_SETTINGS
) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    running = await start_server(components, settings, port=0, interceptors=[MetricsInterceptor()])
    try:
        await make_ready(running)
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=options) as channel:
            yield running, channel
    finally:
        await running.shutdown()
