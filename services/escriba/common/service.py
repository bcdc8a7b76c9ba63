"""Start-up shared by every service process: settings, logs, metrics, then the gRPC server.

Settings are read before anything binds a port, so a bad ``ESCRIBA_*`` value stops the process at once
with the variable named, instead of after a model load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from escriba.common import logging as escriba_logging
from escriba.common.grpc_server import Component, RunningServer, ServerSettings, serve_until_stopped
from escriba.common.metrics import MetricsInterceptor, start_metrics_server


async def run_service(
    name: str,
    components: Sequence[Component],
    server_settings: ServerSettings,
    *,
    port: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    escriba_logging.configure(name, server_settings.log_level, json_format=server_settings.log_json)
    start_metrics_server(server_settings.metrics_port)
    await serve_until_stopped(
        components, server_settings, port=port, stop=stop, interceptors=[MetricsInterceptor()]
    )


__all__ = ["RunningServer", "run_service"]
