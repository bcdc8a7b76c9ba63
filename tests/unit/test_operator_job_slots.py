"""The workers' job-slots gauge the operator sizes replicas with: it is the worker's real in-flight limit."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from escriba.bus import NatsSettings
from escriba.common.settings import load
from escriba.correction import server
from escriba.db.settings import DatabaseSettings
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.settings import WorkerSettings


@pytest.mark.parametrize(("env", "expected"), [({"ESCRIBA_WORKER_MAX_IN_FLIGHT": "3"}, 3.0), ({}, None)])
def test_a_worker_publishes_the_jobs_it_takes_at_once(env: dict[str, str], expected: float | None) -> None:
    service = server.build({})
    runtime = PipelineRuntime(load(NatsSettings, {}), load(DatabaseSettings, {}), client_name="test")
    service.worker(runtime, load(WorkerSettings, env))
    slots = REGISTRY.get_sample_value("escriba_job_slots", {"stage": "correction"})
    assert slots == (expected if expected is not None else float(service.default_in_flight))
