"""``escriba serve correction``: the CorrectionService gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import grpc

from escriba.common.grpc_server import ServerSettings
from escriba.common.service import run_service
from escriba.common.settings import load
from escriba.correction.corrector import Corrector
from escriba.correction.servicer import SERVICE_NAME, CorrectionServicer
from escriba.correction.settings import CorrectionSettings
from escriba.correction.worker import CorrectionStage
from escriba.pipeline.assemble import StageService, stage_components
from escriba.stages import Stage
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


#: Corrections taken at once by default: each is a few milliseconds of CPU, so a handful hides the
#: round trips to PostgreSQL and NATS between them.
DEFAULT_IN_FLIGHT = 4


def build(env: Mapping[str, str] | None = None) -> StageService:
    """The correction service from its settings: the one wiring ``serve``, the local stack and tests use."""
    component = CorrectionComponent(load(CorrectionSettings, env))
    return StageService(
        Stage.CORRECTION,
        component,
        lambda runtime: CorrectionStage(runtime, component.corrector),
        default_in_flight=DEFAULT_IN_FLIGHT,
    )


async def serve(port: int | None = None) -> None:
    server_settings = ServerSettings.from_env()
    await run_service("correction", stage_components(build()), server_settings, port=port)
