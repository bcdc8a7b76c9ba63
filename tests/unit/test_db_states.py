"""The transition table: terminal is final, stages only move forward, archive only finished work."""

from __future__ import annotations

import pytest

from escriba.db.states import (
    ACTIVE,
    TERMINAL,
    Stage,
    TaskStatus,
    allowed_sources,
    archivable,
    can_transition,
    stage_status,
)

Q, P, T, C = TaskStatus.QUEUED, TaskStatus.PREPROCESSING, TaskStatus.TRANSCRIBING, TaskStatus.CORRECTING
DONE, FAILED, CANCELLED = TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED

# (current, target) pairs that are allowed; every other pair is refused. Written out by hand.
ALLOWED = {
    (Q, P), (Q, T), (Q, C), (Q, DONE), (Q, FAILED), (Q, CANCELLED),
    (P, P), (P, T), (P, C), (P, DONE), (P, FAILED), (P, CANCELLED),
    (T, T), (T, C), (T, DONE), (T, FAILED), (T, CANCELLED),
    (C, C), (C, DONE), (C, FAILED), (C, CANCELLED),
}  # fmt: skip


@pytest.mark.parametrize("current", list(TaskStatus), ids=str)
@pytest.mark.parametrize("target", list(TaskStatus), ids=str)
def test_transition_table(current: TaskStatus, target: TaskStatus) -> None:
    assert can_transition(current, target) is ((current, target) in ALLOWED)


def test_terminal_statuses_never_change() -> None:
    for status in TERMINAL:
        assert status.terminal
        assert not any(can_transition(status, target) for target in TaskStatus)
    assert not any(s.terminal for s in ACTIVE)


def test_nothing_returns_to_queued() -> None:
    assert allowed_sources(Q) == frozenset()


def test_stages_map_to_their_running_status() -> None:
    assert [stage_status(s) for s in Stage] == [P, T, C]
    assert [s.value for s in Stage] == ["preprocess", "transcription", "correction"]


def test_only_finished_tasks_are_archivable() -> None:
    assert {s for s in TaskStatus if archivable(s)} == {DONE, FAILED, CANCELLED}
