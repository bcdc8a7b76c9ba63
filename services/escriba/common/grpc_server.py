"""One way to run a gRPC service: health, reflection, limits and an orderly shutdown.

Every Escriba server is built here so they all behave the same for Kubernetes: the standard health service
answers NOT_SERVING until the component is ready (the model is loaded) and again as soon as shutdown begins,
reflection lists the services for grpcurl and debugging, message sizes are bounded, and SIGTERM drains
in-flight RPCs within a bounded grace period before the component releases its resources.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from escriba.common.security import SecuritySettings, bind, server_interceptors, start_health_server
from escriba.common.settings import at_least, between, load, positive, setting, settings_class
from escriba.common.startup import StartupError, probe_bind
from escriba.common.stream_guard import StreamGuard, StreamLimits
from escriba.common.tracing import TracingInterceptor

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
#: Least time each component gets to stop after the grace period is spent (close connections cleanly).
COMPONENT_STOP_FLOOR_S = 2.0


@settings_class
@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("ESCRIBA_GRPC_HOST", "0.0.0.0", "address the gRPC server binds to")
    port: int = setting(
        "ESCRIBA_GRPC_PORT",
        50051,
        "gRPC port (0 picks a free one); `--port` overrides",
        check=between(0, 65535),
    )
    max_message_bytes: int = setting(
        "ESCRIBA_GRPC_MAX_MESSAGE_BYTES",
        16 * 1024 * 1024,
        "largest single gRPC message, bytes (audio travels in chunks below this)",
        check=at_least(64 * 1024),
    )
    max_concurrent_rpcs: int = setting(
        "ESCRIBA_GRPC_MAX_CONCURRENT_RPCS",
        256,
        "RPCs served at once before new ones are refused",
        check=positive,
    )
    max_rpcs_per_peer: int = setting(
        "ESCRIBA_GRPC_MAX_RPCS_PER_PEER",
        192,
        "RPCs one client address may hold at once (0: no bound); keep it below"
        " ESCRIBA_GRPC_MAX_CONCURRENT_RPCS so one client cannot take every slot (behind a proxy, every"
        " caller shares the proxy's address)",
        check=at_least(0),
    )
    max_streams_per_connection: int = setting(
        "ESCRIBA_GRPC_MAX_STREAMS_PER_CONNECTION",
        0,
        "concurrent HTTP/2 streams one connection may open (0: gRPC's default, no bound; calls per client"
        " address are bounded by ESCRIBA_GRPC_MAX_RPCS_PER_PEER either way). A bound below what one"
        " client multiplexes makes it queue; streams opened before it learns the bound are refused",
        check=at_least(0),
    )
    stream_idle_s: float = setting(
        "ESCRIBA_GRPC_STREAM_IDLE_S",
        60.0,
        "longest a client stream (an upload, reflection) may go without sending its next message, seconds;"
        " then DEADLINE_EXCEEDED",
        check=positive,
    )
    stream_max_s: float = setting(
        "ESCRIBA_GRPC_STREAM_MAX_S",
        7200.0,
        "longest a streaming RPC (an upload with its Transcribe wait, WatchTask, Health.Watch) may stay"
        " open, seconds; keep it above ESCRIBA_GATEWAY_TRANSCRIBE_TIMEOUT_S",
        check=positive,
    )
    shutdown_grace_s: float = setting(
        "ESCRIBA_SHUTDOWN_GRACE_S",
        20.0,
        "seconds in-flight work gets to finish after SIGTERM (keep below terminationGracePeriodSeconds)",
        check=at_least(0),
    )
    metrics_port: int = setting(
        "ESCRIBA_METRICS_PORT", 9464, "Prometheus /metrics port (0 disables)", check=between(0, 65535)
    )
    log_level: str = setting(
        "ESCRIBA_LOG_LEVEL",
        "INFO",
        "minimum level of log records written",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    log_json: bool = setting("ESCRIBA_LOG_JSON", True, "structured JSON logs (false: plain text)")

    @classmethod
    def from_env(cls) -> ServerSettings:
        return load(cls)


class Component(Protocol):
    """What a service plugs into :func:`start_server` (and :func:`serve_until_stopped`)."""

    #: Fully qualified gRPC service names served (for health and reflection).
    service_names: Sequence[str]

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None:
        """Become ready (load a model, connect). Health says SERVING only after this returns."""

    async def stop(self) -> None:
        """Release resources after the server stopped accepting and in-flight RPCs ended."""


def server_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
    ]
    if settings.max_streams_per_connection:
        options.append(("grpc.max_concurrent_streams", settings.max_streams_per_connection))
    return options


@dataclass
class RunningServer:
    """A started server: its bound port and the means to stop it in order."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    components: Sequence[Component]
    port: int
    grace_s: float
    #: The plaintext health-only server for kubelet probes, when TLS is on and one is configured.
    health_server: grpc.aio.Server | None = None
    #: Ready (components started, not stopping), and whether every RPC slot is taken (StreamGuard).
    ready: bool = False
    saturated: bool = False

    async def set_serving(self, serving: bool) -> None:
        self.ready = serving
        await self._publish()

    async def set_saturated(self, saturated: bool) -> None:
        """A server whose every slot is taken would refuse new work: readiness says so."""
        self.saturated = saturated
        await self._publish()

    async def _publish(self) -> None:
        serving = self.ready and not self.saturated
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        for component in self.components:
            for name in component.service_names:
                await self.health.set(name, status)

    async def shutdown(self) -> None:
        """Health NOT_SERVING, stop accepting, let in-flight RPCs finish, then stop components.

        One deadline covers it all: the components (workers handing back jobs, NATS drain, pool close)
        share what the RPC drain left of the grace period, each with a short floor to close cleanly, so
        the whole shutdown takes at most the grace period plus a few seconds per component.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_s)
        if self.health_server is not None:
            await self.health_server.stop(0)
        for component in reversed(self.components):
            remaining = max(deadline - loop.time(), COMPONENT_STOP_FLOOR_S)
            try:
                await asyncio.wait_for(component.stop(), timeout=remaining)
            except Exception:
                log.exception("component stop failed")


async def start_server(
    components: Sequence[Component],
    settings: ServerSettings,
    *,
    port: int | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    security: SecuritySettings | None = None,
) -> RunningServer:
    """Bind and start; components become ready afterwards so health can report the loading phase.

    ``security`` (default: from the environment) decides TLS and the gate in front of stage services.
    """
    security = SecuritySettings.from_env() if security is None else security
    interceptors = [*interceptors, *server_interceptors(components, security)]
    guard = StreamGuard(
        StreamLimits(
            max_rpcs=settings.max_concurrent_rpcs,
            per_peer=settings.max_rpcs_per_peer,
            idle_s=settings.stream_idle_s,
            max_s=settings.stream_max_s,
        )
    )
    server = grpc.aio.server(
        options=server_options(settings),
        # The guard first: it counts every call, health and reflection included. Then tracing: its
        # server span covers the other interceptors and the servicer.
        interceptors=[guard, TracingInterceptor(), *interceptors],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names: list[str] = [HEALTH_SERVICE, reflection.SERVICE_NAME]
    for component in components:
        component.register(server)
        names.extend(component.service_names)
    reflection.enable_server_reflection(names, server)
    wanted = settings.port if port is None else port
    address = f"{settings.host}:{wanted}"
    if wanted and (taken := probe_bind(settings.host, wanted, quiet_if_free=True)):
        # Asked first: gRPC binds with SO_REUSEPORT, so a second server could share a port silently.
        raise StartupError("ESCRIBA_GRPC_PORT", f"cannot listen on {address} for gRPC: {taken}")
    try:
        bound = bind(server, address, security)
    except RuntimeError:  # grpc >= 1.60 raises where it used to return 0
        bound = 0
    if bound == 0:
        raise StartupError(
            "ESCRIBA_GRPC_PORT",
            f"cannot listen on {address} for gRPC: {probe_bind(settings.host, wanted)}",
        )
    running = RunningServer(server, health, components, bound, settings.shutdown_grace_s)
    guard.on_saturation = running.set_saturated
    await running.set_serving(False)
    try:
        running.health_server = await start_health_server(health, settings.host, security)
    except OSError as exc:
        raise StartupError(
            "ESCRIBA_HEALTH_PORT",
            f"cannot listen on {settings.host}:{security.health_port} for health checks:"
            f" {probe_bind(settings.host, security.health_port)}",
        ) from exc
    await server.start()
    return running


async def make_ready(running: RunningServer) -> None:
    for component in running.components:
        await component.start()
    await running.set_serving(True)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def serve_until_stopped(
    components: Sequence[Component],
    settings: ServerSettings,
    *,
    port: int | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[RunningServer], Awaitable[None] | None] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``), then shut down in order within the grace period."""
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    running = await start_server(components, settings, port=port, interceptors=interceptors)
    log.info("grpc server listening", extra={"port": running.port, "services": _names(components)})
    ready = asyncio.create_task(make_ready(running))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({ready, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            ready.result()  # a failed start-up is fatal: raised after the shutdown below
            log.info("ready", extra={"port": running.port})
            if on_ready is not None:
                result = on_ready(running)
                if asyncio.iscoroutine(result):
                    await result
            await stopper
        else:
            ready.cancel()
    finally:
        stopper.cancel()
        # Also after a failed start-up: what did start (the server, connections) stops in order.
        log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})
        await running.shutdown()
        log.info("stopped")


def _names(components: Sequence[Component]) -> list[str]:
    return [name for c in components for name in c.service_names]
