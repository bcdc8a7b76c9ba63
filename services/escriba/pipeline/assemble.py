"""Put a stage service together: its gRPC component, and its JetStream worker when a bus is configured.

Both paths call the same engine object, so a transcription pod loads its model once and serves the
synchronous gRPC call and the pipeline queue from it.
"""

from __future__ import annotations

from collections.abc import Callable

from escriba.bus import NatsSettings
from escriba.common.grpc_server import Component
from escriba.common.settings import load
from escriba.db.settings import DatabaseSettings
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.settings import WorkerSettings
from escriba.pipeline.stage import StageHandler, StageWorkerComponent

HandlerFactory = Callable[[PipelineRuntime], StageHandler]  # type: ignore[type-arg]


def stage_components(
    service: Component,
    handler_factory: HandlerFactory,
    *,
    name: str,
    default_in_flight: int,
    nats_settings: NatsSettings | None = None,
    worker_settings: WorkerSettings | None = None,
) -> list[Component]:
    nats_settings = nats_settings or load(NatsSettings)
    worker_settings = worker_settings or WorkerSettings.from_env()
    if not worker_settings.enabled or not nats_settings.servers:
        return [service]
    runtime = PipelineRuntime(nats_settings, load(DatabaseSettings), client_name=name)
    worker = StageWorkerComponent(
        runtime,
        handler_factory(runtime),
        max_in_flight=worker_settings.max_in_flight or default_in_flight,
    )
    # Started in this order, stopped in reverse: the worker hands back its jobs first, then the
    # service drains its RPCs, and the connections close last.
    return [runtime, service, worker]
