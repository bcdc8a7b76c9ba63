"""``escriba serve gateway``: TaskService, the public API."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import grpc

from escriba.bus import NatsSettings
from escriba.common.grpc_server import ServerSettings
from escriba.common.outbound import OutboundSettings
from escriba.common.security import SecuritySettings
from escriba.common.service import run_service
from escriba.common.settings import load
from escriba.db.settings import DatabaseSettings
from escriba.gateway.auth import Authenticator, authenticator
from escriba.gateway.openai_api import OpenAIApi
from escriba.gateway.servicer import SERVICE_NAME, TaskServicer
from escriba.gateway.settings import GatewaySettings, HttpSettings
from escriba.models import ModelSettings
from escriba.pipeline.outbox import OutboxReconciler
from escriba.pipeline.runtime import PipelineRuntime
from escriba.stages import GATEWAY
from escriba.v1 import tasks_pb2_grpc
from escriba.webhooks.dispatcher import WebhookDispatcher
from escriba.webhooks.settings import WebhookSettings


class GatewayComponent:
    """TaskService on the gRPC server, and the OpenAI-compatible HTTP API on its own port."""

    service_names: Sequence[str] = (SERVICE_NAME,)
    #: TaskService checks bearer tokens itself (it needs the owner), not the stage services' gate.
    authenticates_callers = True

    def __init__(
        self,
        runtime: PipelineRuntime,
        settings: GatewaySettings,
        auth: Authenticator,
        *,
        http: OpenAIApi | None = None,
        host: str = "",
        http_port: int = 0,
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self.servicer = TaskServicer(runtime, settings, auth)
        self.http = http
        self.webhooks = webhooks
        self.outbox: OutboxReconciler | None = None
        self._runtime, self._settings = runtime, settings
        self._host, self._http_port = host, http_port

    def register(self, server: grpc.aio.Server) -> None:
        tasks_pb2_grpc.add_TaskServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.start()
        if self.http is not None:
            await self.http.start(self._host, self._http_port)
        # The runtime's connections are open by now (it starts first): the outbox loop needs them.
        self.outbox = OutboxReconciler(
            self._runtime.pipeline,
            after_s=self._settings.outbox_after_s,
            interval_s=self._settings.outbox_interval_s,
        )
        await self.outbox.start()

    async def stop(self) -> None:
        if self.outbox is not None:
            await self.outbox.stop()
        if self.http is not None:
            await self.http.stop()
        if self.webhooks is not None:
            # Deliveries in flight finish or go back to the work queue for another replica.
            await self.webhooks.stop()


def build(
    runtime: PipelineRuntime, env: Mapping[str, str] | None = None, *, host: str | None = None
) -> GatewayComponent:
    """TaskService and the HTTP API from their settings over ``runtime``'s connections: the one wiring
    ``serve`` and the local stack use."""
    settings = load(GatewaySettings, env)
    security = load(SecuritySettings, env)
    auth = authenticator(security, settings.default_owner)
    webhooks = WebhookDispatcher(runtime, load(WebhookSettings, env), load(OutboundSettings, env))
    webhooks.load_key()  # a missing or bad secret stops start-up here, naming its variable
    settings = dataclasses.replace(settings, accept_webhooks=webhooks.enabled)
    http_settings = load(HttpSettings, env)
    http = None
    if http_settings.enabled:
        http = OpenAIApi(runtime, settings, http_settings, auth, security=security)
    return GatewayComponent(
        runtime,
        settings,
        auth,
        http=http,
        host=host if host is not None else load(ServerSettings, env).host,
        http_port=http_settings.port,
        webhooks=webhooks,
    )


async def serve(port: int | None = None) -> None:
    server_settings = ServerSettings.from_env()
    runtime = PipelineRuntime(
        load(NatsSettings), load(DatabaseSettings), client_name=GATEWAY, models=load(ModelSettings).models()
    )
    await run_service(GATEWAY, [runtime, build(runtime)], server_settings, port=port)
