"""The task layer on a real NATS and PostgreSQL: a status change and its event go together, a task is
queued once, and a task whose job cannot be queued fails with the reason instead of waiting forever."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest

from escriba.db.models import NewTask
from escriba.db.states import TaskStatus
from escriba.pipeline.outbox import OutboxReconciler
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


async def _outbox(db_pool: Any, task_id: str) -> bytes | None:
    value = await db_pool.fetchval(
        "SELECT outbox_job FROM transcription_tasks WHERE id = $1", uuid.UUID(task_id)
    )
    return None if value is None else bytes(value)


async def _queued_jobs_for(pipeline: Pipeline, task_id: str) -> int:
    """How many first jobs for ``task_id`` the jobs stream holds (read without consuming them)."""
    info = await pipeline.js.stream_info(pipeline.names.jobs_stream)
    found = 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await pipeline.js.get_msg(pipeline.names.jobs_stream, seq)
        except Exception:  # deleted (acked) meanwhile
            continue
        if msg.subject == pipeline.names.job_subject(FIRST):
            found += jobs_pb2.PreprocessJob.FromString(msg.data or b"").task_id == task_id
    return found


async def test_a_create_leaves_nothing_in_the_outbox(pipeline: Pipeline, db_pool: Any) -> None:
    new, job = _new()
    assert new.id is not None
    await TaskFlow(pipeline).create(new, job)
    assert await _outbox(db_pool, new.id) is None
    assert await OutboxReconciler(pipeline, after_s=0, interval_s=0).run_once() == 0


async def test_a_task_stored_by_a_gateway_that_died_before_queueing_is_queued_by_the_reconciler(
    pipeline: Pipeline, db_pool: Any
) -> None:
    # What a gateway killed between the INSERT and the publish leaves: the row with its job, no job.
    new, job = _new()
    assert new.id is not None
    await pipeline.repo.create(dataclasses.replace(new, outbox_job=job.SerializeToString()))
    assert await _queued_jobs_for(pipeline, new.id) == 0
    # Two replicas run the loop at once: the job is published once.
    early = OutboxReconciler(pipeline, after_s=3600, interval_s=0)
    assert await early.run_once() == 0  # not due yet: the create may still be publishing it
    await asyncio.sleep(0.2)
    replicas = [OutboxReconciler(pipeline, after_s=0.1, interval_s=0) for _ in range(2)]
    published = await asyncio.gather(*(r.run_once() for r in replicas))
    assert sorted(published) == [0, 1]
    assert await _queued_jobs_for(pipeline, new.id) == 1
    assert await _outbox(db_pool, new.id) is None
    assert (await pipeline.repo.get(new.id, owner_id=None)).status is TaskStatus.QUEUED


async def test_the_reconciler_republishes_within_the_duplicate_window_without_a_second_job(
    pipeline: Pipeline, db_pool: Any
) -> None:
    # The publish went through but clearing the entry did not (the database blinked): the job is
    # published again with the same message id, and JetStream drops it.
    new, job = _new()
    assert new.id is not None
    flow = TaskFlow(pipeline)
    await flow.create(new, job)
    await db_pool.execute(
        "UPDATE transcription_tasks SET outbox_job = $2, outbox_since = now() - interval '1 minute'"
        " WHERE id = $1",
        uuid.UUID(new.id),
        job.SerializeToString(),
    )
    assert await OutboxReconciler(pipeline, after_s=1, interval_s=0).run_once() == 1
    assert await _queued_jobs_for(pipeline, new.id) == 1


async def test_a_cancelled_task_left_in_the_outbox_is_cleared_not_queued(
    pipeline: Pipeline, db_pool: Any
) -> None:
    new, job = _new()
    assert new.id is not None
    await pipeline.repo.create(dataclasses.replace(new, outbox_job=job.SerializeToString()))
    await TaskFlow(pipeline).transition(pipeline.repo.cancel(new.id, owner_id="alice"))
    await asyncio.sleep(0.2)
    assert await OutboxReconciler(pipeline, after_s=0.1, interval_s=0).run_once() == 0
    assert await _outbox(db_pool, new.id) is None
    assert await _queued_jobs_for(pipeline, new.id) == 0


async def test_the_reconciler_loop_runs_until_stopped(pipeline: Pipeline, db_pool: Any) -> None:
    new, job = _new()
    assert new.id is not None
    await pipeline.repo.create(dataclasses.replace(new, outbox_job=job.SerializeToString()))
    task_id = new.id
    loop = OutboxReconciler(pipeline, after_s=0.1, interval_s=0.1)
    await loop.start()
    try:

        async def cleared() -> bool:
            return await _outbox(db_pool, task_id) is None

        await eventually(cleared, "the reconciler loop to publish the job")
    finally:
        await loop.stop()
    assert await _queued_jobs_for(pipeline, new.id) == 1
