"""Task statuses and the transitions between them, as data the SQL guards are built from.

Delivery is at-least-once and a cancel can arrive at any moment, so every status change is a guarded
``UPDATE ... WHERE status = ANY(allowed sources)``: the rules live here once, the database enforces
them atomically, and the unit tests check the table without a server. The invariants:

* a terminal task (completed, failed, cancelled) never changes status again;
* a task only moves forward through the stages (a stage may be re-entered by a redelivered job, and a
  stage may be skipped), never back, and never back to ``queued``;
* archiving applies to terminal tasks only (it hides finished work from listings).
"""

from __future__ import annotations

from enum import StrEnum

from escriba.stages import STAGES, Stage, in_order

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Stage",
    "TaskStatus",
    "allowed_sources",
    "archivable",
    "can_transition",
    "stage_status",
]


class TaskStatus(StrEnum):
    QUEUED = "queued"
    PREPROCESSING = "preprocessing"
    TRANSCRIBING = "transcribing"
    CORRECTING = "correcting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


def stage_status(stage: Stage) -> TaskStatus:
    """The status a task is in while ``stage`` runs."""
    return _STAGE_STATUS[stage]


_STAGE_STATUS = {stage: TaskStatus(spec.status) for stage, spec in STAGES.items()}

#: Non-terminal statuses in pipeline order.
ACTIVE: tuple[TaskStatus, ...] = (TaskStatus.QUEUED, *(TaskStatus(spec.status) for spec in in_order()))
TERMINAL: frozenset[TaskStatus] = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


def allowed_sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """The statuses a task may be in for a change to ``target`` to apply."""
    if target in TERMINAL:
        return frozenset(ACTIVE)
    if target is TaskStatus.QUEUED:
        return frozenset()
    rank = ACTIVE.index(target)
    return frozenset(ACTIVE[: rank + 1])


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    return current in allowed_sources(target)


def archivable(status: TaskStatus) -> bool:
    return status in TERMINAL
