"""``escriba serve gateway``: TaskService, the public API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from escriba.bus import NatsSettings
from escriba.common.grpc_server import ServerSettings
from escriba.common.security import SecuritySettings
from escriba.common.service import run_service
from escriba.common.settings import load
from escriba.db.settings import DatabaseSettings
from escriba.gateway.auth import Authenticator, authenticator
from escriba.gateway.servicer import SERVICE_NAME, TaskServicer
from escriba.gateway.settings import GatewaySettings
from escriba.pipeline.runtime import PipelineRuntime
from escriba.stages import GATEWAY
from escriba.v1 import tasks_pb2_grpc


class GatewayComponent:
    service_names: Sequence[str] = (SERVICE_NAME,)
    #: TaskService checks bearer tokens itself (it needs the owner), not the stage services' gate.
    authenticates_callers = True

    def __init__(self, runtime: PipelineRuntime, settings: GatewaySettings, auth: Authenticator) -> None:
        self.servicer = TaskServicer(runtime, settings, auth)

    def register(self, server: grpc.aio.Server) -> None:
        tasks_pb2_grpc.add_TaskServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def build(runtime: PipelineRuntime, env: Mapping[str, str] | None = None) -> GatewayComponent:
    """TaskService from its settings over ``runtime``'s connections: the one wiring ``serve`` and the
    local stack use."""
    settings = load(GatewaySettings, env)
    return GatewayComponent(
        runtime, settings, authenticator(load(SecuritySettings, env), settings.default_owner)
    )


async def serve(port: int | None = None) -> None:
    server_settings = ServerSettings.from_env()
    runtime = PipelineRuntime(load(NatsSettings), load(DatabaseSettings), client_name=GATEWAY)
    await run_service(GATEWAY, [runtime, build(runtime)], server_settings, port=port)
