"""Progress events on a real NATS and PostgreSQL: a long backlog of finished segments goes out in
bounded parts, numbered without gaps; the task row keeps the furthest progress only while the task
transcribes."""

from __future__ import annotations

import uuid

import pytest

from escriba.db.models import NewTask
from escriba.db.states import Stage
from escriba.pipeline.runtime import Pipeline
from escriba.transcript import Progress, Segment, Word
from escriba.transcription.progress import (
    MAX_SEGMENTS_PER_EVENT,
    MAX_TEXT_BYTES_PER_EVENT,
    ProgressReporter,
)
from escriba.v1 import tasks_pb2
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


async def _transcribing_task(pipeline: Pipeline) -> str:
    task_id = str(uuid.uuid4())
    await pipeline.repo.create(NewTask(id=task_id, owner_id="alice", audio_object="x"))
    for stage in (Stage.PREPROCESS, Stage.TRANSCRIPTION):
        assert (await pipeline.repo.start_stage(task_id, stage)).applied
    return task_id


def _segments(count: int, *, text: str) -> tuple[Segment, ...]:
    return tuple(
        Segment(id=i, start_s=i, end_s=i + 1, text=text, words=(Word(i, i + 1, text, 0.9),))
        for i in range(count)
    )


async def test_a_backlog_goes_out_in_bounded_parts(pipeline: Pipeline) -> None:
    task_id = await _transcribing_task(pipeline)
    sub = await pipeline.nc.subscribe(pipeline.names.event_subject(task_id))
    events: list[tasks_pb2.TaskEvent] = []

    async def received(count: int) -> bool:
        while len(events) < count:
            try:
                events.append(tasks_pb2.TaskEvent.FromString((await sub.next_msg(timeout=0.2)).data))
            except TimeoutError:
                return False
        return True

    first = _segments(MAX_SEGMENTS_PER_EVENT * 2 + 5, text=" short one")
    long_text = " " + "word " * 200  # 1 KB a segment: the byte bound cuts before the count bound
    more = (*first, *_segments(40, text=long_text))
    async with ProgressReporter(pipeline, task_id, interval_s=0.01) as reporter:
        reporter(Progress(done_s=30.0, total_s=100.0, segments=first))
        await eventually(lambda: received(3), "the first report in three parts")
        reporter(Progress(done_s=60.0, total_s=100.0, segments=more))

    async def tail_complete() -> bool:
        while sum(len(e.segments) for e in events[3:]) < 40:
            if not await received(len(events) + 1):
                return False
        return True

    await eventually(tail_complete, "the second report's parts")
    head, tail = events[:3], events[3:]
    assert [len(e.segments) for e in head] == [MAX_SEGMENTS_PER_EVENT, MAX_SEGMENTS_PER_EVENT, 5]
    assert [e.first_segment for e in head] == [0, MAX_SEGMENTS_PER_EVENT, 2 * MAX_SEGMENTS_PER_EVENT]
    assert all(e.status == tasks_pb2.TASK_STATUS_TRANSCRIBING for e in events)
    assert all(e.progress.audio_done_s == 30 for e in head) and all(
        e.progress.audio_done_s == 60 for e in tail
    )
    assert all(not s.words for e in events for s in e.segments)
    assert sum(len(e.segments) for e in tail) == 40 and len(tail) > 1
    assert tail[0].first_segment == len(first)
    for event in tail:
        assert sum(len(s.text.encode()) for s in event.segments) <= MAX_TEXT_BYTES_PER_EVENT
    task = await pipeline.repo.get(task_id, owner_id=None)
    assert task.progress_audio_s == 60.0


async def test_progress_never_moves_back_or_outlives_transcription(pipeline: Pipeline) -> None:
    task_id = await _transcribing_task(pipeline)
    await pipeline.repo.record_progress(task_id, 50.0)
    await pipeline.repo.record_progress(task_id, 20.0)
    assert (await pipeline.repo.get(task_id, owner_id=None)).progress_audio_s == 50.0
    assert (await pipeline.repo.start_stage(task_id, Stage.CORRECTION)).applied
    await pipeline.repo.record_progress(task_id, 90.0)  # a late report after the stage moved on
    assert (await pipeline.repo.get(task_id, owner_id=None)).progress_audio_s == 50.0
