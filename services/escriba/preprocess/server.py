"""``escriba serve preprocess``: the PreprocessService gRPC server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from escriba.common.grpc_server import ServerSettings
from escriba.common.outbound import OutboundSettings
from escriba.common.service import run_service
from escriba.common.settings import load
from escriba.pipeline.assemble import StageService, stage_components
from escriba.preprocess.engine import Preprocessor
from escriba.preprocess.fetch import AudioFetcher
from escriba.preprocess.servicer import SERVICE_NAME, PreprocessServicer
from escriba.preprocess.settings import FetchSettings, PreprocessSettings
from escriba.preprocess.worker import PreprocessStage
from escriba.stages import Stage
from escriba.v1 import preprocess_pb2_grpc


class PreprocessComponent:
    service_names: Sequence[str] = (SERVICE_NAME,)

    def __init__(self, settings: PreprocessSettings, fetcher: AudioFetcher | None = None) -> None:
        self.engine = Preprocessor(settings)
        self.settings = settings
        self.fetcher = fetcher or AudioFetcher(FetchSettings(), OutboundSettings())

    def register(self, server: grpc.aio.Server) -> None:
        servicer = PreprocessServicer(self.engine, self.settings.max_concurrency)
        preprocess_pb2_grpc.add_PreprocessServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.fetcher.close()


def build(env: Mapping[str, str] | None = None) -> StageService:
    """The preprocess service from its settings: the one wiring ``serve``, the local stack and tests use."""
    settings = load(PreprocessSettings, env)
    fetcher = AudioFetcher(load(FetchSettings, env), load(OutboundSettings, env))
    component = PreprocessComponent(settings, fetcher)
    return StageService(
        Stage.PREPROCESS,
        component,
        lambda runtime: PreprocessStage(runtime, component.engine, component.fetcher),
        default_in_flight=settings.max_concurrency,
    )


async def serve(port: int | None = None) -> None:
    server_settings = ServerSettings.from_env()
    await run_service("preprocess", stage_components(build()), server_settings, port=port)
