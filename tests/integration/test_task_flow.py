"""The task layer on a real NATS and PostgreSQL: a status change and its event go together, a task is
queued once, and a task whose job cannot be queued fails with the reason instead of waiting forever."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from escriba.db.models import NewTask
from escriba.db.states import TaskStatus
from escriba.pipeline.runtime import Pipeline
from escriba.pipeline.tasks import EnqueueError, TaskFlow
from escriba.stages import FIRST
from escriba.v1 import jobs_pb2, tasks_pb2
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


async def _events(pipeline: Pipeline, task_id: str, sub: Any) -> list[tasks_pb2.TaskEvent]:
    events: list[tasks_pb2.TaskEvent] = []
    while True:
        try:
            msg = await sub.next_msg(timeout=0.5)
        except TimeoutError:
            return events
        events.append(tasks_pb2.TaskEvent.FromString(msg.data))


def _new(owner: str = "alice") -> tuple[NewTask, jobs_pb2.PreprocessJob]:
    task_id = str(uuid.uuid4())
    return NewTask(id=task_id, owner_id=owner, audio_object=f"uploads/{task_id}"), jobs_pb2.PreprocessJob(
        task_id=task_id, audio_object=f"uploads/{task_id}"
    )


async def test_a_created_task_is_queued_once_with_its_event(pipeline: Pipeline) -> None:
    new, job = _new()
    assert new.id is not None
    sub = await pipeline.nc.subscribe(pipeline.names.event_subject(new.id))
    record, created = await TaskFlow(pipeline).create(new, job)
    assert created and record.status is TaskStatus.QUEUED
    queued = await pipeline.js.get_last_msg(pipeline.names.jobs_stream, pipeline.names.job_subject(FIRST))
    assert jobs_pb2.PreprocessJob.FromString(queued.data or b"").task_id == new.id
    events = await _events(pipeline, new.id, sub)
    assert [e.status for e in events] == [tasks_pb2.TASK_STATUS_QUEUED]


async def test_a_change_the_database_refuses_publishes_no_event(pipeline: Pipeline) -> None:
    new, job = _new()
    assert new.id is not None
    flow = TaskFlow(pipeline)
    await flow.create(new, job)
    sub = await pipeline.nc.subscribe(pipeline.names.event_subject(new.id))
    first = await flow.transition(pipeline.repo.cancel(new.id, owner_id="alice"), "cancelled")
    again = await flow.transition(pipeline.repo.cancel(new.id, owner_id="alice"), "cancelled")
    assert first.applied and not again.applied
    events = await _events(pipeline, new.id, sub)
    assert [(e.status, e.message) for e in events] == [(tasks_pb2.TASK_STATUS_CANCELLED, "cancelled")]


async def test_a_job_that_cannot_be_queued_fails_its_task_with_the_reason(pipeline: Pipeline) -> None:
    new, job = _new()
    assert new.id is not None
    await pipeline.js.delete_stream(pipeline.names.jobs_stream)  # nothing listens on the subject now
    with pytest.raises(EnqueueError):
        await TaskFlow(pipeline).create(new, job)
    record = await pipeline.repo.get(new.id, owner_id=None)
    assert record.status is TaskStatus.FAILED
    assert record.error_reason == "enqueue_failed" and "could not queue" in record.error


async def test_a_finished_task_releases_its_upload(pipeline: Pipeline) -> None:
    new, job = _new()
    assert new.id is not None
    await pipeline.uploads.put_bytes(new.audio_object, b"audio bytes")
    flow = TaskFlow(pipeline)
    await flow.create(new, job)
    assert await pipeline.uploads.info(new.audio_object) is not None
    await flow.transition(pipeline.repo.cancel(new.id, owner_id="alice"), "cancelled")
    assert await pipeline.uploads.info(new.audio_object) is None


async def test_a_caller_that_goes_away_mid_create_leaves_no_task_without_its_job(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    new, job = _new()
    assert new.id is not None
    flow = TaskFlow(pipeline)
    inserted = asyncio.Event()
    original = flow.enqueue

    async def slow_enqueue(*args: Any, **kwargs: Any) -> None:
        inserted.set()
        await asyncio.sleep(0.3)  # the publish is slow; the caller gives up meanwhile
        await original(*args, **kwargs)

    monkeypatch.setattr(flow, "enqueue", slow_enqueue)
    caller = asyncio.create_task(flow.create(new, job))
    await inserted.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller

    async def queued() -> bool:
        try:
            last = await pipeline.js.get_last_msg(
                pipeline.names.jobs_stream, pipeline.names.job_subject(FIRST)
            )
        except Exception:
            return False
        return jobs_pb2.PreprocessJob.FromString(last.data or b"").task_id == new.id

    await eventually(queued, "the job of the task the caller gave up on")
