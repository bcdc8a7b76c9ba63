"""The whole Escriba stack on one machine: embedded NATS and PostgreSQL, migrations, and the services.

Two shapes share the same start-up:

* ``in_process``: one gRPC server in this process hosts TaskService and the three stage services, with
  one set of connections and each stage's JetStream worker. Quick to start; used by
  ``escriba transcribe FILE`` and most end-to-end tests.
* ``processes``: each service runs as its own ``escriba serve`` process, as in Kubernetes, and a dead
  process is restarted. Used by ``escriba up`` and by tests that kill a worker.

Servers are embedded only when their URL is not configured: with ``ESCRIBA_NATS_URL`` /
``ESCRIBA_DATABASE_URL`` set, the stack uses those.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from escriba.bus import NatsSettings
from escriba.common.grpc_server import Component, RunningServer, ServerSettings, make_ready, start_server
from escriba.common.metrics import MetricsInterceptor
from escriba.common.security import SecuritySettings, channel_credentials, open_channel
from escriba.common.settings import load
from escriba.db.migrate import run_migrations
from escriba.db.settings import DatabaseSettings
from escriba.local.nats import LOCAL_MAX_FILE_STORE_BYTES, EmbeddedNats
from escriba.local.postgres import EmbeddedPostgres, free_port
from escriba.local.secure import LOCAL_HOSTS, LocalSecurity, create_local_security
from escriba.models import ModelSettings
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.settings import WorkerSettings
from escriba.stages import GATEWAY, Stage, in_order

if TYPE_CHECKING:
    import grpc

    from escriba.transcription.engine import WhisperEngine

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "escriba"


@dataclass
class StackConfig:
    #: Where embedded servers keep their data; ``None``: a temporary directory removed on stop.
    data_dir: Path | None = None
    #: Port of the public API (TaskService); 0 picks a free one.
    port: int = 50051
    #: Port of the OpenAI-compatible HTTP API; 0 picks a free one (``escriba up`` asks for 8080).
    http_port: int = 0
    host: str = "127.0.0.1"
    mode: str = "in_process"  # or "processes"
    #: Extra ESCRIBA_* variables for the services (tests shorten timeouts this way).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Restart a service process that exits (processes mode).
    restart: bool = True
    #: TLS everywhere, bearer tokens on TaskService, mTLS (processes) or a service token (in-process)
    #: on the stage services; throwaway credentials are made in ``<data_dir>/secure``.
    secure: bool = False
    #: Owners that get a static token when ``secure`` (``LocalStack.security.token(owner)``).
    owners: tuple[str, ...] = ("local",)
    #: Catalogue models (``ESCRIBA_MODELS``) to run a transcription service for; empty: the default
    #: one. In-process mode only.
    models: tuple[str, ...] = ()


class LocalStack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.nats: EmbeddedNats | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.nats_url = ""
        self.database_url = ""
        self.port = 0
        self.http_port = 0
        self._server: RunningServer | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._service_env: dict[str, dict[str, str]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        #: In-process mode: the shared connections and the model (tests inspect them).
        self.runtime: PipelineRuntime | None = None
        self.transcription_engine: WhisperEngine | None = None
        #: In-process mode: every served model's engine, by catalogue name.
        self.transcription_engines: dict[str, WhisperEngine] = {}
        #: Secure mode: the CA, certificates and tokens clients need.
        self.security: LocalSecurity | None = None
        self._stopping = False

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """Base URL of the OpenAI-compatible API (``/v1`` included, as OpenAI clients take it)."""
        scheme = "https" if self.security is not None else "http"
        return f"{scheme}://{self.config.host}:{self.http_port}/v1"

    def environment(self) -> dict[str, str]:
        """The environment every service of this stack runs with: this process's, then the stack's."""
        env = dict(os.environ)
        if self.security is not None:
            env.update(self.security.environment())
        env.update(self.config.env)
        env["ESCRIBA_NATS_URL"] = self.nats_url
        env["ESCRIBA_DATABASE_URL"] = self.database_url
        return env

    # Start-up ------------------------------------------------------------------------------------

    async def start(self) -> str:
        data_dir = self.config.data_dir
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="escriba-stack-")
            data_dir = Path(self._tmp.name)
        data_dir.mkdir(parents=True, exist_ok=True)
        if self.config.secure:
            self.security = await asyncio.to_thread(
                create_local_security,
                data_dir / "secure",
                owners=self.config.owners,
                hosts=(*LOCAL_HOSTS, self.config.host),
            )
        merged = {**os.environ, **self.config.env}
        self.nats_url = merged.get("ESCRIBA_NATS_URL", "")
        self.database_url = merged.get("ESCRIBA_DATABASE_URL", "")
        if not self.nats_url:
            # Room for the stream caps however full the disk: this server is one user's.
            self.nats = EmbeddedNats(data_dir / "nats", max_file_store_bytes=LOCAL_MAX_FILE_STORE_BYTES)
            self.nats_url = await asyncio.to_thread(self.nats.start)
            log.info("embedded nats-server started", extra={"url": self.nats_url})
        if not self.database_url:
            self.postgres = EmbeddedPostgres(data_dir / "postgres", durable=self._tmp is None)
            self.database_url = await asyncio.to_thread(self.postgres.start)
            log.info("embedded PostgreSQL started", extra={"port": self.postgres.port})
        env = self.environment()
        db_settings = load(DatabaseSettings, env)
        await run_migrations(db_settings, dsn=self.database_url)
        self.port = self.config.port or free_port(self.config.host)
        self.http_port = self.config.http_port or free_port(self.config.host)
        env = {**env, "ESCRIBA_HTTP_PORT": str(self.http_port)}
        if self.config.mode == "processes":
            await self._start_processes(env)
        else:
            await self._start_in_process(env)
        return self.address

    async def _start_in_process(self, env: Mapping[str, str]) -> None:
        """Every service in this process, each built by its own ``build`` (as ``escriba serve`` does),
        its worker on one shared set of connections."""
        from escriba.gateway import server as gateway_server

        server_settings = replace(load(ServerSettings, env), host=self.config.host, metrics_port=0)
        security = load(SecuritySettings, env).validate()
        catalogue = load(ModelSettings, env).models()
        runtime = PipelineRuntime(
            load(NatsSettings, env), load(DatabaseSettings, env), client_name="local", models=catalogue
        )
        self.runtime = runtime
        worker_settings = load(WorkerSettings, env)
        stages = []
        for spec in in_order():
            module = importlib.import_module(spec.server_module)
            if spec.stage is not Stage.TRANSCRIPTION:
                stages.append(module.build(env))
                continue
            # One transcription service per model served, each on its model's own consumer.
            # Without a list, the environment's ESCRIBA_TRANSCRIPTION_MODEL (or the default) as is.
            for model in self.config.models or (env.get("ESCRIBA_TRANSCRIPTION_MODEL", ""),):
                service = module.build({**env, "ESCRIBA_TRANSCRIPTION_MODEL": model})
                engine = service.component.engine
                self.transcription_engines[model or catalogue.default.name] = engine
                self.transcription_engine = self.transcription_engine or engine
                stages.append(service)
        components: Sequence[Component] = [
            runtime,
            *(service.component for service in stages),
            gateway_server.build(runtime, env, host=self.config.host),
            *(service.worker(runtime, worker_settings) for service in stages if worker_settings.enabled),
        ]
        self._server = await start_server(
            components,
            server_settings,
            port=self.port,
            interceptors=[MetricsInterceptor()],
            security=security,
        )
        await make_ready(self._server)

    async def _start_processes(self, env: Mapping[str, str]) -> None:
        if self.config.models:
            raise ValueError(
                "StackConfig.models runs in-process only; processes mode serves the default model"
            )
        for service in (GATEWAY, *(spec.name for spec in in_order())):
            port = self.port if service == GATEWAY else free_port(self.config.host)
            service_env = dict(env)
            service_env.setdefault("ESCRIBA_GRPC_HOST", self.config.host)
            service_env["ESCRIBA_GRPC_PORT"] = str(port)
            service_env["ESCRIBA_METRICS_PORT"] = env.get(
                f"ESCRIBA_LOCAL_METRICS_PORT_{service.upper()}", "0"
            )
            if (
                self.security is not None
                and service != GATEWAY
                and "ESCRIBA_TLS_CA_FILE" not in self.config.env
            ):
                # Stage services take platform callers only: a client certificate from this CA.
                service_env["ESCRIBA_TLS_CA_FILE"] = str(self.security.ca)
            self._service_env[service] = service_env
            self._spawn(service)
        await asyncio.gather(*(self._wait_healthy(s) for s in self._service_env))
        if self.config.restart:
            self._supervisor = asyncio.create_task(self._supervise())

    def _spawn(self, service: str) -> None:
        env = self._service_env[service]
        self.processes[service] = subprocess.Popen(
            [sys.executable, "-m", "escriba.cli", "serve", service],
            env=env,
            start_new_session=True,
        )
        log.info("started service", extra={"service": service, "pid": self.processes[service].pid})

    def service_port(self, service: str) -> int:
        return int(self._service_env[service]["ESCRIBA_GRPC_PORT"])

    def client_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS that trusts this stack's CA and presents its client certificate; ``None`` when plaintext."""
        if self.security is None:
            return None
        return channel_credentials(self.security.ca, self.security.client.cert, self.security.client.key)

    async def _wait_healthy(self, service: str, timeout_s: float = 120.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        address = f"{self.config.host}:{self.service_port(service)}"
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with open_channel(address, self.client_credentials()) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                proc = self.processes[service]
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with code {proc.returncode} while starting")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{service} did not become healthy within {timeout_s} s")
                await asyncio.sleep(0.2)

    async def _supervise(self) -> None:
        backoff = dict.fromkeys(self.processes, 1.0)
        while not self._stopping:
            await asyncio.sleep(0.5)
            for service, proc in list(self.processes.items()):
                if self._stopping or proc.poll() is None:
                    continue
                log.warning("service exited; restarting", extra={"service": service, "code": proc.returncode})
                await asyncio.sleep(backoff[service])
                backoff[service] = min(backoff[service] * 2, 30.0)
                if not self._stopping:
                    self._spawn(service)

    # Shutdown ------------------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        await asyncio.to_thread(self._stop_processes)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
        if self.nats is not None:
            await asyncio.to_thread(self.nats.close)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _stop_processes(self, timeout_s: float = 30.0) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

    async def __aenter__(self) -> LocalStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
