"""The pipeline's stages, and everything each one is called elsewhere: the one registry.

A stage has a name (its durable consumer, its stage-results key and its metric label), a work-queue
subject, the task status it sets while it runs, the column that keeps its time, the cache it consults,
its job message, its gRPC service and the stage after it. The bus, the task table, metrics, the
gateway, the local stack and the CLI all read them here, so a new stage (or one more transcription
stage for another model) is one entry in :data:`STAGES`, and nothing else lists the stages.

Plain data: this module imports nothing of Escriba's, so every layer may read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Stage(StrEnum):
    """A pipeline stage; its value is the name of its durable consumer and of its stage results."""

    PREPROCESS = "preprocess"
    TRANSCRIPTION = "transcription"
    CORRECTION = "correction"


@dataclass(frozen=True, slots=True)
class StageSpec:
    stage: Stage
    #: Last token of its jobs subject (a verb, as in the design's subject names).
    subject_token: str
    #: The task's status while the stage runs (a ``TaskStatus`` value).
    status: str
    #: Column of ``transcription_tasks`` that keeps the stage's wall time (milliseconds).
    timing_column: str
    #: ``cache`` label of its content-addressed cache's hits and misses.
    cache: str
    #: Whether its work is measured in seconds of audio (audio-seconds and real-time-factor metrics).
    measures_audio: bool
    #: Name of its job message in ``escriba.v1.jobs_pb2``.
    job_message: str
    #: Its gRPC service (``escriba.v1``), for the synchronous path and the ``stage`` label of errors.
    grpc_service: str
    #: Module whose ``build(env)`` composes the service and ``serve(port)`` runs it.
    server_module: str
    #: The stage that takes the task after this one; None: the task is complete.
    next: Stage | None

    @property
    def name(self) -> str:
        return self.stage.value


STAGES: Final[dict[Stage, StageSpec]] = {
    spec.stage: spec
    for spec in (
        StageSpec(
            stage=Stage.PREPROCESS,
            subject_token="preprocess",
            status="preprocessing",
            timing_column="preprocess_ms",
            cache="normalized_audio",
            measures_audio=True,
            job_message="PreprocessJob",
            grpc_service="PreprocessService",
            server_module="escriba.preprocess.server",
            next=Stage.TRANSCRIPTION,
        ),
        StageSpec(
            stage=Stage.TRANSCRIPTION,
            subject_token="transcribe",
            status="transcribing",
            timing_column="transcription_ms",
            cache="transcript",
            measures_audio=True,
            job_message="TranscribeJob",
            grpc_service="TranscriptionService",
            server_module="escriba.transcription.server",
            next=Stage.CORRECTION,
        ),
        StageSpec(
            stage=Stage.CORRECTION,
            subject_token="correct",
            status="correcting",
            timing_column="correction_ms",
            cache="correction",
            measures_audio=False,
            job_message="CorrectJob",
            grpc_service="CorrectionService",
            server_module="escriba.correction.server",
            next=None,
        ),
    )
}

#: Where every task starts.
FIRST: Final = Stage.PREPROCESS


def spec(stage: Stage) -> StageSpec:
    return STAGES[stage]


def in_order() -> Iterator[StageSpec]:
    """The stages in the order a task passes through them."""
    stage: Stage | None = FIRST
    while stage is not None:
        yield STAGES[stage]
        stage = STAGES[stage].next


#: The public API's service: not a stage, but served and named like one.
GATEWAY: Final = "gateway"
GATEWAY_MODULE: Final = "escriba.gateway.server"
GATEWAY_GRPC_SERVICE: Final = "TaskService"
