"""escriba.stages is the one list of stages: everything else derives from it and agrees with it."""

from __future__ import annotations

import importlib

import pytest

from escriba.bus import BusNames
from escriba.cli import SERVICES
from escriba.db.states import ACTIVE, TaskStatus, stage_status
from escriba.pipeline.stage import StageHandler
from escriba.stages import FIRST, GATEWAY, STAGES, Stage, in_order
from escriba.v1 import jobs_pb2


def test_a_task_passes_every_stage_once_in_order() -> None:
    order = [spec.stage for spec in in_order()]
    assert order[0] is FIRST
    assert sorted(order) == sorted(Stage) and len(set(order)) == len(order)
    assert STAGES[order[-1]].next is None


def test_every_entry_names_things_that_exist() -> None:
    names = BusNames("t")
    subjects = {names.job_subject(stage) for stage in Stage}
    assert len(subjects) == len(Stage)  # one work queue per stage
    for stage, spec in STAGES.items():
        assert spec.stage is stage and spec.name == stage.value == BusNames.consumer(stage)
        assert stage_status(stage) is TaskStatus(spec.status)
        assert hasattr(jobs_pb2, spec.job_message)
        module = importlib.import_module(spec.server_module)
        assert callable(module.build) and callable(module.serve)
        assert SERVICES[spec.name] == spec.server_module
    assert set(SERVICES) == {GATEWAY, *(s.value for s in Stage)}


def test_task_statuses_follow_the_stage_order() -> None:
    assert (TaskStatus.QUEUED, *(TaskStatus(spec.status) for spec in in_order())) == ACTIVE


def test_a_handler_taking_another_stage_job_fails_at_import() -> None:
    with pytest.raises(TypeError, match="CorrectJob"):

        class Mismatched(StageHandler[jobs_pb2.PreprocessJob]):
            stage = Stage.CORRECTION
            job_type = jobs_pb2.PreprocessJob
