"""``escriba serve correction``: the CorrectionService gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from escriba.common.grpc_server import ServerSettings
from escriba.common.service import run_service
from escriba.correction.corrector import Corrector
from escriba.correction.servicer import SERVICE_NAME, CorrectionServicer
from escriba.correction.settings import CorrectionSettings
from escriba.correction.worker import CorrectionStage
from escriba.pipeline.assemble import stage_components
from escriba.v1 import correction_pb2_grpc


class CorrectionComponent:
    service_names: Sequence[str] = (SERVICE_NAME,)

    def __init__(self, settings: CorrectionSettings) -> None:
        self.corrector = Corrector(settings)

    def register(self, server: grpc.aio.Server) -> None:
        correction_pb2_grpc.add_CorrectionServiceServicer_to_server(
            CorrectionServicer(self.corrector), server
        )

    async def start(self) -> None:
        # Load the spelling dictionary (when on by default) before reporting SERVING.
        await asyncio.to_thread(self.corrector.preload)

    async def stop(self) -> None:
        return None


async def serve(port: int | None = None) -> None:
    server_settings = ServerSettings.from_env()
    component = CorrectionComponent(CorrectionSettings.from_env())
    components = stage_components(
        component,
        lambda runtime: CorrectionStage(runtime, component.corrector),
        name="correction",
        default_in_flight=4,
    )
    await run_service("correction", components, server_settings, port=port)
