"""What every stage worker shares: task guards, attempts, failure reporting, and the worker component.

A stage handler only implements :meth:`StageHandler.process`. Around it, the task must still want the
stage (a cancelled or finished task is skipped: a cancel wins over a later stage), each delivery is
counted, and when JetStream gives up on a job (permanent error, or deliveries exhausted after backoff)
the task is marked ``failed`` with a readable reason, so no task is ever silently lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Generic, TypeVar

import grpc
from google.protobuf.message import Message

from escriba.bus import DeliveriesExhaustedError, Job, JobWorker
from escriba.common import metrics
from escriba.common.errors import EscribaError
from escriba.common.logging import task_context
from escriba.pipeline import codec
from escriba.pipeline.runtime import Pipeline, PipelineRuntime
from escriba.pipeline.tasks import TaskFlow
from escriba.stages import STAGES, Stage

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class StageHandler(Generic[M]):
    stage: Stage
    job_type: type[M]
    #: Worker deaths one job may cause before its task fails (0: only the delivery bound applies).
    max_worker_deaths: int = 0

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A handler's job message is the registry's: a mismatch fails at import, not on a job."""
        super().__init_subclass__(**kwargs)
        expected = STAGES[cls.stage].job_message
        if cls.job_type.DESCRIPTOR.name != expected:
            raise TypeError(
                f"{cls.__name__} takes {cls.job_type.DESCRIPTOR.name}; stage {cls.stage} is {expected}"
            )

    def __init__(self, runtime: PipelineRuntime) -> None:
        self.runtime = runtime

    @property
    def pipeline(self) -> Pipeline:
        return self.runtime.pipeline

    @property
    def tasks(self) -> TaskFlow:
        return TaskFlow(self.pipeline)

    async def __call__(self, job: Job) -> None:
        waited = job.meta.waited_s()
        if waited is not None and job.meta.delivery_count == 1:
            # Only the first delivery measures the queue: a redelivery's age includes failed attempts.
            metrics.QUEUE_WAIT.labels(self.stage.value).observe(waited)
        message = codec.decode(self.job_type, job.data, job.headers)
        task_id: str = message.task_id  # type: ignore[attr-defined]
        with task_context(task_id):
            repo = self.pipeline.repo
            transition = await self.tasks.transition(repo.start_stage(task_id, self.stage))
            if not transition.applied:
                log.info(
                    "skipping job: task no longer wants this stage",
                    extra={"stage": self.stage.value, "status": transition.task.status.value},
                )
                return
            await repo.record_attempt(task_id, self.stage)
            stage = self.stage.value
            started = time.perf_counter()
            with metrics.IN_FLIGHT.labels(stage).track_inprogress():
                await self.process(message, job)
            metrics.STAGE_LATENCY.labels(stage).observe(time.perf_counter() - started)

    async def process(self, message: M, job: Job) -> None:
        raise NotImplementedError

    async def give_up(self, job: Job, error: BaseException) -> None:
        """Fail the task with the reason; called once when JetStream will not deliver the job again."""
        task_id = job.task_id or _task_id_from_body(self.job_type, job)
        if not task_id:
            log.error("dropping a job without a task id", extra={"subject": job.subject})
            return
        if isinstance(error, DeliveriesExhaustedError):
            reason, message = "deliveries_exhausted", str(error)
        elif isinstance(error, EscribaError):
            reason, message = error.reason, error.message
        else:
            reason, message = "internal", f"{type(error).__name__}: {error}"
        attempts = job.meta.delivery_count
        if attempts > 1:
            message = f"{message} (after {attempts} attempts)"
        metrics.ERRORS.labels(self.stage.value, reason).inc()
        with task_context(task_id):
            transition = await self.tasks.transition(
                self.pipeline.repo.fail(task_id, reason, f"{self.stage.value}: {message}"), message
            )
            if transition.applied:
                log.warning("task failed", extra={"stage": self.stage.value, "reason": reason})

    async def hand_on(self, message: Message, *, task_id: str, audio_duration_s: float) -> None:
        """Queue the next stage's job (the registry says which stage follows this one)."""
        next_stage = STAGES[self.stage].next
        if next_stage is None:
            raise RuntimeError(f"{self.stage} is the last stage: its task completes, nothing follows")
        await self.tasks.enqueue(next_stage, message, task_id=task_id, audio_duration_s=audio_duration_s)


def _task_id_from_body(job_type: type[Message], job: Job) -> str:
    try:
        message = codec.decode(job_type, job.data, job.headers)
    except EscribaError:
        return ""
    return str(getattr(message, "task_id", ""))


class StageWorkerComponent:
    """Runs a stage handler on its durable consumer for as long as the server runs."""

    service_names: Sequence[str] = ()

    def __init__(
        self,
        runtime: PipelineRuntime,
        handler: StageHandler[M],
        *,
        max_in_flight: int,
        route: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.handler = handler
        self.max_in_flight = max_in_flight
        #: A model's own transcription consumer (``None``: the stage's plain one).
        self.route = route
        self._worker: JobWorker | None = None

    def register(self, server: grpc.aio.Server) -> None:
        return None

    async def start(self) -> None:
        pipeline = self.runtime.pipeline
        stage = self.handler.stage
        self._worker = JobWorker(
            pipeline.nc,
            stream=pipeline.names.jobs_stream,
            consumer=pipeline.names.consumer(stage, self.route),
            handler=self.handler,
            on_give_up=self.handler.give_up,
            settings=pipeline.nats_settings,
            max_in_flight=self.max_in_flight,
            max_deaths=self.handler.max_worker_deaths,
        )
        await self._worker.start()

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()
