"""Start-up shared by every service process: settings, logs, traces, metrics, then the gRPC server.

Settings are read before anything binds a port, so a bad ``ESCRIBA_*`` (or ``OTEL_*``) value stops the
process at once with the variable named, instead of after a model load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from escriba.common import logging as escriba_logging
from escriba.common.grpc_server import Component, RunningServer, ServerSettings, serve_until_stopped
from escriba.common.metrics import (
    MetricsInterceptor,
    init_service_metrics,
    register_gpu_metrics,
    start_metrics_server,
)
from escriba.common.tracing import configure_tracing


async def run_service(
    name: str,
    components: Sequence[Component],
    server_settings: ServerSettings,
    *,
    port: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    escriba_logging.configure(name, server_settings.log_level, json_format=server_settings.log_json)
    tracer_provider = configure_tracing(name)
    init_service_metrics(name, [s for c in components for s in c.service_names])
    register_gpu_metrics()
    start_metrics_server(server_settings.metrics_port)
    try:
        await serve_until_stopped(
            components, server_settings, port=port, stop=stop, interceptors=[MetricsInterceptor()]
        )
    finally:
        if tracer_provider is not None:
            # Export what is still buffered before the process exits.
            tracer_provider.shutdown()


__all__ = ["RunningServer", "run_service"]
