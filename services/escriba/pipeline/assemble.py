"""How a stage service is put together, once, for every way it runs.

Each stage's ``server.build(env)`` is its one composition root: it reads the service's settings and
returns a :class:`StageService` (its gRPC component, how to make its JetStream handler on a set of
connections, and how many jobs it takes at once by default). ``escriba serve`` runs one with its own
connections (:func:`stage_components`); the local stack runs all of them on shared ones
(:meth:`StageService.worker`); tests call the same ``build``. Both paths call the same engine object,
so a transcription pod loads its model once and serves the synchronous gRPC call and the pipeline
queue from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from escriba.bus import NatsSettings
from escriba.common import metrics
from escriba.common.grpc_server import Component
from escriba.common.settings import load
from escriba.db.settings import DatabaseSettings
from escriba.models import ModelSettings
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.settings import WorkerSettings
from escriba.pipeline.stage import StageHandler, StageWorkerComponent
from escriba.stages import STAGES, Stage

HandlerFactory = Callable[[PipelineRuntime], StageHandler]  # type: ignore[type-arg]


@dataclass(frozen=True)
class StageService:
    stage: Stage
    #: The stage's gRPC service (the synchronous path), owning the engine.
    component: Component
    #: The stage's JetStream handler over a set of connections, calling the component's engine.
    handler: HandlerFactory
    #: Jobs taken at once when ``ESCRIBA_WORKER_MAX_IN_FLIGHT`` is unset (the service's own measure).
    default_in_flight: int
    #: The model route this service works (transcription of a non-default model); ``None``: the
    #: stage's plain subject and consumer.
    route: str | None = None

    def __post_init__(self) -> None:
        spec = STAGES[self.stage]
        metrics.init_stage_metrics(spec.name, cache=spec.cache, measures_audio=spec.measures_audio)

    def worker(self, runtime: PipelineRuntime, settings: WorkerSettings) -> StageWorkerComponent:
        slots = settings.max_in_flight or self.default_in_flight
        metrics.JOB_SLOTS.labels(STAGES[self.stage].name).set(slots)  # what the autoscaler sizes with
        return StageWorkerComponent(runtime, self.handler(runtime), max_in_flight=slots, route=self.route)


def stage_components(service: StageService, env: Mapping[str, str] | None = None) -> list[Component]:
    """One stage service as its own process: its gRPC component, and its worker when a bus is set."""
    nats_settings = load(NatsSettings, env)
    worker_settings = load(WorkerSettings, env)
    if not worker_settings.enabled or not nats_settings.servers:
        return [service.component]
    runtime = PipelineRuntime(
        nats_settings,
        load(DatabaseSettings, env),
        client_name=service.stage.value,
        models=load(ModelSettings, env).models(),
    )
    # Started in this order, stopped in reverse: the worker hands back its jobs first, then the
    # service drains its RPCs, and the connections close last.
    return [runtime, service.component, service.worker(runtime, worker_settings)]
