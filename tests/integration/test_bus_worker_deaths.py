"""A job that kills its workers fails its task after a bounded number of deaths (issue 15, class 2).

A recording that needs more memory than a pod has is killed with the pod, redelivered after the ack
wait, and kills the next one. ``JobWorker(max_deaths=N)`` counts the deliveries that ended with no
settlement at all (JetStream's delivery count, less the naks every worker hears as advisories) and fails
the task with ``worker_died`` once N of them died, without running the job again. A dead worker is played
here by a pull subscription that takes the job and never answers, as a killed process does; retries
after ordinary failures are naks, and never count as deaths, whichever worker of the group made them.
"""

from __future__ import annotations

import asyncio

import pytest

from escriba.bus import Job, JobWorker, Stage, WorkerDiedError, publish_job
from escriba.common.errors import TransientError
from tests.support.nats_fixtures import Bus
from tests.support.waiting import eventually

STAGE = Stage.PREPROCESS


class Recorder:
    def __init__(self) -> None:
        self.ran: list[int] = []
        self.gave_up: list[tuple[Job, BaseException]] = []

    async def on_give_up(self, job: Job, error: BaseException) -> None:
        self.gave_up.append((job, error))


def make_worker(bus: Bus, handler, recorder: Recorder, *, max_deaths: int) -> JobWorker:
    return JobWorker(
        bus.nc,
        stream=bus.names.jobs_stream,
        consumer=bus.names.consumer(STAGE),
        handler=handler,
        on_give_up=recorder.on_give_up,
        settings=bus.settings,
        max_deaths=max_deaths,
    )


async def publish(bus: Bus, task_id: str) -> int:
    ack = await publish_job(
        bus.js, bus.names.job_subject(STAGE), b"job", task_id=task_id, stage=STAGE.value, audio_duration_s=0.0
    )
    return ack.seq


async def die_on(bus: Bus, deliveries: int) -> None:
    """Take the job ``deliveries`` times and never settle it: each wait is the ack wait running out."""
    sub = await bus.js.pull_subscribe_bind(durable=bus.names.consumer(STAGE), stream=bus.names.jobs_stream)
    try:
        for delivery in range(1, deliveries + 1):
            msg = (await sub.fetch(1, timeout=bus.settings.ack_wait_s + 5))[0]
            assert msg.metadata.num_delivered == delivery
    finally:
        await sub.unsubscribe()


async def stream_messages(bus: Bus) -> int:
    return (await bus.js.stream_info(bus.names.jobs_stream)).state.messages


@pytest.mark.timeout(40)
async def test_a_job_that_killed_its_workers_fails_its_task_and_is_not_run_again(bus: Bus) -> None:
    assert bus.settings.max_deliver > 2  # the delivery bound alone would hand it out once more
    seq = await publish(bus, "task-oom")
    await die_on(bus, 2)
    recorder = Recorder()

    async def handler(job: Job) -> None:
        recorder.ran.append(job.meta.delivery_count)

    async with make_worker(bus, handler, recorder, max_deaths=2):
        await eventually(lambda: len(recorder.gave_up) == 1, what="the task to be failed")

        async def settled() -> bool:
            return await stream_messages(bus) == 0

        await eventually(settled, what="the job to be terminated")
    assert recorder.ran == []
    job, error = recorder.gave_up[0]
    assert isinstance(error, WorkerDiedError) and error.reason == "worker_died"
    assert job.task_id == "task-oom" and job.meta.stream_seq == seq and job.meta.delivery_count == 3
    assert "the preprocess worker died 2 times on this task" in error.message
    assert "out of memory?" in error.message


@pytest.mark.timeout(40)
async def test_fewer_deaths_than_the_bound_run_the_job_again(bus: Bus) -> None:
    await publish(bus, "task-unlucky")
    await die_on(bus, 1)
    recorder = Recorder()

    async def handler(job: Job) -> None:
        recorder.ran.append(job.meta.delivery_count)

    async with make_worker(bus, handler, recorder, max_deaths=2):
        await eventually(lambda: recorder.ran == [2], what="the second delivery to run")
    assert recorder.gave_up == []


@pytest.mark.timeout(40)
async def test_retries_after_failures_are_not_deaths_whichever_worker_made_them(bus: Bus) -> None:
    # Two workers of the group, each allowing a single death: every delivery before the last fails
    # transiently (a nak), so however the deliveries fall between them, none is a death.
    recorders = [Recorder(), Recorder()]
    done = asyncio.Event()

    def handler_for(recorder: Recorder):
        async def handler(job: Job) -> None:
            recorder.ran.append(job.meta.delivery_count)
            if job.meta.delivery_count < bus.settings.max_deliver:
                raise TransientError("object store busy")
            done.set()

        return handler

    workers = [make_worker(bus, handler_for(r), r, max_deaths=1) for r in recorders]
    for worker in workers:
        await worker.start()
    try:
        await publish(bus, "task-flaky")
        await asyncio.wait_for(done.wait(), 20)
    finally:
        for worker in workers:
            await worker.stop()
    assert sorted(d for r in recorders for d in r.ran) == list(range(1, bus.settings.max_deliver + 1))
    assert [g for r in recorders for g in r.gave_up] == []


@pytest.mark.timeout(40)
async def test_a_nak_heard_from_another_worker_is_not_a_death(bus: Bus) -> None:
    # The first delivery is retried by "another worker" (a plain subscription that naks it); the worker
    # that gets the redelivery knows of that nak only from the server's advisory.
    await publish(bus, "task-retried-elsewhere")
    sub = await bus.js.pull_subscribe_bind(durable=bus.names.consumer(STAGE), stream=bus.names.jobs_stream)
    first = (await sub.fetch(1, timeout=5))[0]
    recorder = Recorder()

    async def handler(job: Job) -> None:
        recorder.ran.append(job.meta.delivery_count)

    async with make_worker(bus, handler, recorder, max_deaths=1):
        await first.nak(delay=0.3)
        await sub.unsubscribe()
        await eventually(lambda: recorder.ran == [2], what="the redelivery to run")
    assert recorder.gave_up == []
