"""Jobs carry their task, stage and audio duration in headers; a repeated publish is stored once."""

from __future__ import annotations

import pytest

from escriba.bus import (
    AUDIO_DURATION_HEADER,
    MSG_ID_HEADER,
    Stage,
    audio_duration_from_headers,
    publish_event,
    publish_job,
)
from tests.support.nats_fixtures import Bus


async def test_a_job_carries_its_headers(bus: Bus) -> None:
    subject = bus.names.job_subject(Stage.TRANSCRIPTION)
    ack = await publish_job(
        bus.js,
        subject,
        b"job-bytes",
        task_id="task-1",
        stage="transcription",
        audio_duration_s=297.25,
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    assert ack.stream == bus.names.jobs_stream and not ack.duplicate
    stored = await bus.js.get_msg(bus.names.jobs_stream, ack.seq)
    assert stored.subject == subject and stored.data == b"job-bytes"
    headers = stored.headers or {}
    assert headers[AUDIO_DURATION_HEADER] == "297.250"
    assert audio_duration_from_headers(headers) == 297.25
    assert headers[MSG_ID_HEADER] == "task-1:transcription"
    assert headers["Escriba-Task-Id"] == "task-1" and headers["Escriba-Stage"] == "transcription"
    assert headers["traceparent"].startswith("00-0af7")


async def test_the_same_task_and_stage_is_stored_once(bus: Bus) -> None:
    subject = bus.names.job_subject(Stage.PREPROCESS)
    first = await publish_job(
        bus.js, subject, b"a", task_id="task-2", stage="preprocess", audio_duration_s=1.0
    )
    again = await publish_job(
        bus.js, subject, b"a", task_id="task-2", stage="preprocess", audio_duration_s=1.0
    )
    other = await publish_job(
        bus.js, subject, b"b", task_id="task-3", stage="preprocess", audio_duration_s=1.0
    )
    assert again.duplicate and again.seq == first.seq
    assert not other.duplicate
    info = await bus.js.stream_info(bus.names.jobs_stream)
    assert info.state.messages == 2


@pytest.mark.parametrize("header", ["Nats-Msg-Id", "escriba-audio-duration-s"])
async def test_reserved_headers_cannot_be_overridden(bus: Bus, header: str) -> None:
    with pytest.raises(ValueError, match="set by publish_job"):
        await publish_job(
            bus.js,
            bus.names.job_subject(Stage.CORRECTION),
            b"x",
            task_id="t",
            stage="correction",
            audio_duration_s=1.0,
            headers={header: "1"},
        )


@pytest.mark.parametrize("duration", [-1.0, float("nan"), float("inf")])
async def test_a_job_without_a_usable_duration_is_refused(bus: Bus, duration: float) -> None:
    with pytest.raises(ValueError, match="audio_duration_s"):
        await publish_job(
            bus.js,
            bus.names.job_subject(Stage.CORRECTION),
            b"x",
            task_id="t",
            stage="correction",
            audio_duration_s=duration,
        )


async def test_task_events_land_in_the_events_stream(bus: Bus) -> None:
    ack = await publish_event(bus.js, bus.names, "task-9", b"queued", msg_id="task-9:queued")
    repeat = await publish_event(bus.js, bus.names, "task-9", b"queued", msg_id="task-9:queued")
    assert ack.stream == bus.names.events_stream and repeat.duplicate
    stored = await bus.js.get_msg(bus.names.events_stream, ack.seq)
    assert stored.subject == f"{bus.names.prefix}.events.task.task-9"
