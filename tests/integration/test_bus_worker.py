"""The job worker against a real JetStream: ack, retry with backoff, give up once, heartbeats, caps, stop."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field

import pytest

from escriba.bus import (
    DeliveriesExhaustedError,
    Job,
    JobTimeoutError,
    JobWorker,
    Stage,
    TopologyError,
    publish_job,
)
from escriba.common.errors import InvalidInputError, TransientError
from tests.support.nats_fixtures import Bus
from tests.support.waiting import eventually

STAGE = Stage.TRANSCRIPTION


@dataclass
class Recorder:
    """What the worker did: every delivery the handler saw, every give-up."""

    deliveries: list[tuple[str | None, int]] = field(default_factory=list)
    gave_up: list[tuple[Job, BaseException]] = field(default_factory=list)

    async def on_give_up(self, job: Job, error: BaseException) -> None:
        self.gave_up.append((job, error))


def make_worker(
    bus: Bus, handler, recorder: Recorder, *, max_in_flight: int = 1, on_give_up=None
) -> JobWorker:
    return JobWorker(
        bus.nc,
        stream=bus.names.jobs_stream,
        consumer=bus.names.consumer(STAGE),
        handler=handler,
        on_give_up=on_give_up or recorder.on_give_up,
        settings=bus.settings,
        max_in_flight=max_in_flight,
    )


async def publish(bus: Bus, task_id: str, payload: bytes = b"job") -> int:
    ack = await publish_job(
        bus.js,
        bus.names.job_subject(STAGE),
        payload,
        task_id=task_id,
        stage=STAGE.value,
        audio_duration_s=12.5,
    )
    return ack.seq


async def stream_messages(bus: Bus) -> int:
    return (await bus.js.stream_info(bus.names.jobs_stream)).state.messages


async def consumer_state(bus: Bus) -> tuple[int, int]:
    """(jobs waiting, jobs delivered and not yet settled)."""
    info = await bus.js.consumer_info(bus.names.jobs_stream, bus.names.consumer(STAGE))
    return info.num_pending or 0, info.num_ack_pending or 0


async def quiet_period(bus: Bus) -> None:
    """Longer than every retry delay and the ack wait: enough for a redelivery to show up if one were due."""
    await asyncio.sleep(bus.settings.ack_wait_s + max(bus.settings.backoff) + 0.5)


@pytest.mark.timeout(30)
async def test_a_successful_job_is_acked_with_its_metadata(bus: Bus) -> None:
    recorder = Recorder()
    seen: list[Job] = []

    async def handler(job: Job) -> None:
        seen.append(job)

    seq = await publish(bus, "task-ok", b"payload")
    async with make_worker(bus, handler, recorder):
        await eventually(lambda: len(seen) == 1, what="the job to run")

        async def settled() -> bool:
            return await stream_messages(bus) == 0

        await eventually(settled, what="the ack to remove the job from the work queue")
    job = seen[0]
    assert job.data == b"payload" and job.task_id == "task-ok" and job.stage == STAGE.value
    assert job.audio_duration_s == 12.5 and job.msg_id == "task-ok:transcription"
    assert job.meta.delivery_count == 1 and job.meta.stream_seq == seq
    assert job.meta.max_deliver == bus.settings.max_deliver and not job.meta.last_attempt
    assert job.subject == bus.names.job_subject(STAGE)
    assert recorder.gave_up == []


@pytest.mark.timeout(30)
async def test_a_transient_failure_is_retried_with_backoff_and_then_succeeds(bus: Bus) -> None:
    recorder = Recorder()
    done = asyncio.Event()

    async def handler(job: Job) -> None:
        recorder.deliveries.append((job.task_id, job.meta.delivery_count))
        if job.meta.delivery_count < 3:
            raise TransientError("model server busy")
        done.set()

    await publish(bus, "task-flaky")
    async with make_worker(bus, handler, recorder):
        await asyncio.wait_for(done.wait(), 15)

        async def settled() -> bool:
            return await stream_messages(bus) == 0

        await eventually(settled, what="the job to be acked")
    assert recorder.deliveries == [("task-flaky", 1), ("task-flaky", 2), ("task-flaky", 3)]
    assert recorder.gave_up == []


@pytest.mark.timeout(30)
async def test_a_job_that_always_fails_gives_up_once_after_max_deliver(bus: Bus) -> None:
    recorder = Recorder()

    async def handler(job: Job) -> None:
        recorder.deliveries.append((job.task_id, job.meta.delivery_count))
        raise TransientError("still broken")

    await publish(bus, "task-doomed")
    async with make_worker(bus, handler, recorder):
        await eventually(lambda: len(recorder.gave_up) == 1, what="the give-up")
        await quiet_period(bus)
        assert await consumer_state(bus) == (0, 0)
    max_deliver = bus.settings.max_deliver
    assert recorder.deliveries == [("task-doomed", n) for n in range(1, max_deliver + 1)]
    assert len(recorder.gave_up) == 1
    job, error = recorder.gave_up[0]
    assert job.task_id == "task-doomed" and job.meta.delivery_count == max_deliver and job.meta.last_attempt
    assert isinstance(error, TransientError) and str(error) == "still broken"
    assert await stream_messages(bus) == 0


@pytest.mark.timeout(30)
async def test_an_unexpected_exception_is_retried_like_a_transient_one(bus: Bus) -> None:
    recorder = Recorder()

    async def handler(job: Job) -> None:
        recorder.deliveries.append((job.task_id, job.meta.delivery_count))
        raise KeyError("bug")

    await publish(bus, "task-bug")
    async with make_worker(bus, handler, recorder):
        await eventually(lambda: len(recorder.gave_up) == 1, what="the give-up")
    assert len(recorder.deliveries) == bus.settings.max_deliver
    assert isinstance(recorder.gave_up[0][1], KeyError)


@pytest.mark.timeout(30)
async def test_a_permanent_error_gives_up_at_once(bus: Bus) -> None:
    recorder = Recorder()

    async def handler(job: Job) -> None:
        recorder.deliveries.append((job.task_id, job.meta.delivery_count))
        raise InvalidInputError("not audio")

    await publish(bus, "task-bad-input")
    async with make_worker(bus, handler, recorder):
        await eventually(lambda: len(recorder.gave_up) == 1, what="the give-up")
        await quiet_period(bus)
    assert recorder.deliveries == [("task-bad-input", 1)]
    job, error = recorder.gave_up[0]
    assert isinstance(error, InvalidInputError) and error.reason == "invalid_input"
    assert job.meta.delivery_count == 1
    assert await stream_messages(bus) == 0


@pytest.mark.timeout(30)
async def test_a_hung_job_is_cancelled_at_its_time_limit_retried_and_then_failed(bus: Bus) -> None:
    """Heartbeats keep a running job alive, so a handler that never returns would hold its task
    forever; the time limit (base plus per audio-second) turns it into retries and a failed task."""
    recorder = Recorder()
    cancelled: list[int] = []

    async def handler(job: Job) -> None:
        recorder.deliveries.append((job.task_id, job.meta.delivery_count))
        try:
            await asyncio.Event().wait()  # never set: an await that never returns
        except asyncio.CancelledError:
            cancelled.append(job.meta.delivery_count)
            raise

    settings = dataclasses.replace(bus.settings, job_timeout_s=0.5, job_timeout_per_audio_s=0.04)
    assert settings.job_time_limit_s(12.5) == pytest.approx(1.0)
    worker = JobWorker(
        bus.nc,
        stream=bus.names.jobs_stream,
        consumer=bus.names.consumer(STAGE),
        handler=handler,
        on_give_up=recorder.on_give_up,
        settings=settings,
    )
    await publish(bus, "task-hung")
    async with worker:
        await eventually(lambda: len(recorder.gave_up) == 1, what="the give-up after the last timeout")
    max_deliver = bus.settings.max_deliver
    assert recorder.deliveries == [("task-hung", n) for n in range(1, max_deliver + 1)]
    assert cancelled == list(range(1, max_deliver + 1))
    job, error = recorder.gave_up[0]
    assert isinstance(error, JobTimeoutError) and error.reason == "job_timeout" and error.transient
    assert "limit of 1 s" in str(error) and job.meta.last_attempt
    assert await stream_messages(bus) == 0


@pytest.mark.timeout(30)
async def test_a_handlers_own_timeout_is_not_taken_for_the_job_limit(bus: Bus) -> None:
    recorder = Recorder()

    async def handler(job: Job) -> None:
        recorder.deliveries.append((job.task_id, job.meta.delivery_count))
        raise TimeoutError("the model server did not answer")

    await publish(bus, "task-own-timeout")
    async with make_worker(bus, handler, recorder):
        await eventually(lambda: len(recorder.gave_up) == 1, what="the give-up")
    error = recorder.gave_up[0][1]
    assert type(error) is TimeoutError and str(error) == "the model server did not answer"


@pytest.mark.timeout(30)
async def test_heartbeats_keep_a_job_longer_than_ack_wait_from_being_redelivered(bus: Bus) -> None:
    recorder = Recorder()
    finished = asyncio.Event()

    async def handler(job: Job) -> None:
        recorder.deliveries.append((job.task_id, job.meta.delivery_count))
        await asyncio.sleep(bus.settings.ack_wait_s * 2.5)
        finished.set()

    await publish(bus, "task-long")
    # Two slots: a redelivery during the long run would reach this worker's free slot.
    async with make_worker(bus, handler, recorder, max_in_flight=2):
        await asyncio.wait_for(finished.wait(), 20)

        async def settled() -> bool:
            return await stream_messages(bus) == 0

        await eventually(settled, what="the long job to be acked")
    assert recorder.deliveries == [("task-long", 1)]
    info = await bus.js.consumer_info(bus.names.jobs_stream, bus.names.consumer(STAGE))
    assert info.num_redelivered == 0


@pytest.mark.timeout(30)
async def test_without_heartbeats_the_same_job_would_be_redelivered(bus: Bus) -> None:
    # The control for the heartbeat test: a consumer that holds a job past ack_wait loses it.
    await publish(bus, "task-silent")
    sub = await bus.js.pull_subscribe_bind(durable=bus.names.consumer(STAGE), stream=bus.names.jobs_stream)
    first = (await sub.fetch(1, timeout=5))[0]
    assert first.metadata.num_delivered == 1
    second = (await sub.fetch(1, timeout=bus.settings.ack_wait_s * 4))[0]
    assert (
        second.metadata.num_delivered == 2
        and second.metadata.sequence.stream == first.metadata.sequence.stream
    )
    await second.ack()
    await sub.unsubscribe()


@pytest.mark.timeout(30)
async def test_jobs_in_flight_never_exceed_the_cap(bus: Bus) -> None:
    recorder = Recorder()
    release = asyncio.Event()
    running = 0
    peak = 0
    finished = 0

    async def handler(job: Job) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1
            finished += 1

    for i in range(8):
        await publish(bus, f"task-{i}")
    async with make_worker(bus, handler, recorder, max_in_flight=3) as worker:
        await eventually(lambda: running == 3, what="three jobs to run")
        await asyncio.sleep(bus.settings.fetch_wait_s * 2)  # several pull rounds with no free slot
        assert running == 3 and worker.in_flight == 3
        assert await consumer_state(bus) == (5, 3)
        release.set()
        await eventually(lambda: finished == 8, what="every job to finish")
    assert peak == 3
    assert await stream_messages(bus) == 0


@pytest.mark.timeout(30)
async def test_stopping_finishes_quick_jobs_and_hands_back_the_rest(bus: Bus) -> None:
    recorder = Recorder()
    started: set[str | None] = set()
    cancelled: list[str | None] = []

    async def handler(job: Job) -> None:
        started.add(job.task_id)
        if job.task_id == "task-slow":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(job.task_id)
                raise
        else:
            await asyncio.sleep(0.3)

    await publish(bus, "task-slow")
    await publish(bus, "task-quick")
    worker = make_worker(bus, handler, recorder, max_in_flight=2)
    await worker.start()
    await eventually(lambda: started == {"task-slow", "task-quick"}, what="both jobs to start")
    await worker.stop(grace_s=1.0)
    assert cancelled == ["task-slow"] and worker.in_flight == 0
    assert recorder.gave_up == []

    # The quick job was acked; the slow one is back in the queue right away for another replica.
    assert await stream_messages(bus) == 1
    taken_over: list[Job] = []

    async def successor(job: Job) -> None:
        taken_over.append(job)

    async with make_worker(bus, successor, recorder):
        await eventually(lambda: len(taken_over) == 1, timeout_s=bus.settings.ack_wait_s / 2 + 5)
    assert taken_over[0].task_id == "task-slow" and taken_over[0].meta.delivery_count == 2


@pytest.mark.timeout(30)
async def test_a_stopped_worker_takes_no_more_jobs(bus: Bus) -> None:
    recorder = Recorder()
    seen: list[Job] = []

    async def handler(job: Job) -> None:
        seen.append(job)

    worker = make_worker(bus, handler, recorder)
    await worker.start()
    await worker.stop()
    await publish(bus, "task-after-stop")
    await asyncio.sleep(bus.settings.fetch_wait_s * 2)
    assert seen == []
    assert await consumer_state(bus) == (1, 0)


@pytest.mark.timeout(40)
async def test_a_job_whose_workers_died_on_its_last_delivery_is_given_up_once(bus: Bus) -> None:
    # Lost workers: deliveries that are never settled. JetStream then reports the job with its
    # max-deliveries advisory, and one worker of the group records the failure.
    seq = await publish(bus, "task-orphan")
    sub = await bus.js.pull_subscribe_bind(durable=bus.names.consumer(STAGE), stream=bus.names.jobs_stream)
    for delivery in range(1, bus.settings.max_deliver + 1):
        msg = (await sub.fetch(1, timeout=10))[0]
        assert msg.metadata.num_delivered == delivery
        await msg.nak()  # as soon as possible: a dead worker would just not answer
    await sub.unsubscribe()

    recorders = [Recorder(), Recorder()]
    ran: list[Job] = []

    async def handler(job: Job) -> None:
        ran.append(job)

    workers = [make_worker(bus, handler, r) for r in recorders]
    for worker in workers:
        await worker.start()
    try:
        await eventually(lambda: sum(len(r.gave_up) for r in recorders) == 1, what="the give-up")
        await quiet_period(bus)
    finally:
        for worker in workers:
            await worker.stop()
    gave_up = [g for r in recorders for g in r.gave_up]
    assert len(gave_up) == 1 and ran == []
    job, error = gave_up[0]
    assert isinstance(error, DeliveriesExhaustedError) and error.reason == "deliveries_exhausted"
    assert job.task_id == "task-orphan" and job.meta.stream_seq == seq and job.data == b"job"
    assert job.meta.delivery_count == bus.settings.max_deliver
    assert await stream_messages(bus) == 0


@pytest.mark.timeout(40)
async def test_a_failure_that_cannot_be_recorded_is_not_dropped(bus: Bus) -> None:
    recorder = Recorder()
    attempts = 0

    async def flaky_give_up(job: Job, error: BaseException) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("database down")
        await recorder.on_give_up(job, error)

    async def handler(job: Job) -> None:
        raise InvalidInputError("not audio")

    await publish(bus, "task-unrecorded")
    async with make_worker(bus, handler, recorder, on_give_up=flaky_give_up):
        await eventually(lambda: len(recorder.gave_up) == 1, what="the give-up to be recorded")

        async def settled() -> bool:
            return await stream_messages(bus) == 0

        await eventually(settled, what="the job to leave the queue")
    assert attempts == 2
    assert isinstance(recorder.gave_up[0][1], InvalidInputError)


async def test_a_worker_needs_its_consumer(bus: Bus) -> None:
    worker = JobWorker(
        bus.nc,
        stream=bus.names.jobs_stream,
        consumer="no-such-consumer",
        handler=Recorder().on_give_up,  # type: ignore[arg-type]
        on_give_up=Recorder().on_give_up,
        settings=bus.settings,
    )
    with pytest.raises(TopologyError, match="ensure_topology"):
        await worker.start()
