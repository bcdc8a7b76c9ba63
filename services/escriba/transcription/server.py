"""``escriba serve transcription``: the TranscriptionService gRPC server.

The server binds first and loads the model afterwards, so Kubernetes sees a live process whose health is
NOT_SERVING (and whose RPCs answer UNAVAILABLE) until the model is in memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence

import grpc

from escriba.common import metrics
from escriba.common.grpc_server import ServerSettings
from escriba.common.service import run_service
from escriba.common.settings import SettingsError, load
from escriba.models import ModelCatalogue, ModelEntry, ModelSettings
from escriba.pipeline.assemble import StageService, stage_components
from escriba.pipeline.handoff import HANDOFF
from escriba.stages import Stage
from escriba.transcription.engine import WhisperEngine
from escriba.transcription.servicer import SERVICE_NAME, TranscriptionServicer
from escriba.transcription.settings import TranscriptionSettings
from escriba.transcription.worker import TranscriptionStage
from escriba.v1 import transcription_pb2_grpc


class TranscriptionComponent:
    service_names: Sequence[str] = (SERVICE_NAME,)

    def __init__(self, settings: TranscriptionSettings, engine: WhisperEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or WhisperEngine(settings)

    def register(self, server: grpc.aio.Server) -> None:
        servicer = TranscriptionServicer(
            self.engine,
            max_input_bytes=self.settings.max_input_bytes,
            max_duration_s=self.settings.max_duration_s,
        )
        transcription_pb2_grpc.add_TranscriptionServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        if not self.engine.is_ready:
            await asyncio.to_thread(self.engine.load)
        seconds = self.engine.load_seconds
        if seconds is not None:
            metrics.MODEL_LOAD_SECONDS.labels(self.engine.model_name, self.engine.device).set(seconds)

    async def stop(self) -> None:
        await asyncio.to_thread(self.engine.close)


def served_settings(
    settings: TranscriptionSettings, catalogue: ModelCatalogue
) -> tuple[TranscriptionSettings, ModelEntry | None]:
    """The settings of the model this process serves: ``ESCRIBA_TRANSCRIPTION_MODEL`` names a
    catalogue entry (empty: the default one), whose source, device and precision apply; anything else
    is a model directory or name served outside the catalogue (its jobs are the default route's)."""
    entry = catalogue.find(settings.model)
    if entry is None:
        return settings, None
    tables = {}
    for field, variable, raw in (
        ("batch_sizes_cpu", "ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CPU", entry.batch_sizes_cpu),
        ("batch_sizes_cuda", "ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CUDA", entry.batch_sizes_cuda),
    ):
        if raw:
            try:
                tables[field] = getattr(load(TranscriptionSettings, {variable: raw}), field)
            except SettingsError as exc:
                raise SettingsError("ESCRIBA_MODELS", f"model {entry.name}: {field}: {exc}") from exc
    return (
        dataclasses.replace(
            settings,
            model=entry.source or "bundled",
            device=entry.device or settings.device,
            compute_type=entry.compute_type or settings.compute_type,
            **tables,
        ),
        entry,
    )


def build(env: Mapping[str, str] | None = None, engine: WhisperEngine | None = None) -> StageService:
    """The transcription service of one model from its settings (``engine``: one already loaded, e.g.
    shared by tests); the one wiring ``serve``, the local stack and tests use."""
    catalogue = load(ModelSettings, env).models()
    settings, entry = served_settings(load(TranscriptionSettings, env), catalogue)
    component = TranscriptionComponent(
        settings, engine or WhisperEngine(settings, name=entry.name if entry else "")
    )
    if settings.local_handoff_bytes:
        HANDOFF.enable(settings.local_handoff_bytes)
    route = catalogue.route(entry.name) if entry is not None else None
    return StageService(
        Stage.TRANSCRIPTION,
        component,
        lambda runtime: TranscriptionStage(
            runtime,
            component.engine,
            max_audio_in_flight_s=settings.max_audio_in_flight_s,
            progress_interval_s=settings.progress_interval_s,
        ),
        # One more job than requests run at once (enough to fill shared batches when they are on), so the
        # next one is fetched while the others decode.
        default_in_flight=component.engine.request_slots + 1,
        route=route,
    )


async def serve(port: int | None = None) -> None:
    server_settings = ServerSettings.from_env()
    await run_service("transcription", stage_components(build()), server_settings, port=port)
