"""Live progress: WatchTask shows audio-seconds decoded and the text finished so far before the task
completes; GetTask shows the same progress; the events stay bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from escriba.client import EscribaClient, make_spec
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from escriba.transcription.progress import MAX_SEGMENTS_PER_EVENT
from escriba.v1 import tasks_pb2
from tests.support import media
from tests.support.stack import stack_config

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

SECONDS = 100.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    env = {
        # One window a model call, one call at a time, so a 100 s recording reports progress several
        # times (two workers finish windows in pairs, and progress is the finished prefix).
        "ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CPU": "inf:1",
        "ESCRIBA_TRANSCRIPTION_NUM_WORKERS": "1",
        "ESCRIBA_TRANSCRIPTION_PROGRESS_INTERVAL_S": "0.05",
    }
    async with LocalStack(stack_config(nats_server.url, postgres_dsn, env=env)) as running:
        yield running


async def test_watch_shows_progress_and_text_before_completion(client: EscribaClient, tmp_path: Path) -> None:
    path = media.write(tmp_path / "long.flac", media.long_speech_flac(SECONDS))
    task = await client.create_task(path, make_spec(path.name))
    events: list[tasks_pb2.TaskEvent] = []
    async for event in client.watch(task.id):
        events.append(event)
    progress = [e for e in events if e.HasField("progress")]
    final = events[-1]
    assert final.status == tasks_pb2.TASK_STATUS_COMPLETED
    assert len(progress) >= 3, [e.status for e in events]
    assert all(e.status == tasks_pb2.TASK_STATUS_TRANSCRIBING for e in progress)
    assert events.index(progress[-1]) < len(events) - 1  # all of it before the terminal event
    done = [e.progress.audio_done_s for e in progress]
    assert done == sorted(done) and done[0] < done[-1]
    assert all(e.progress.audio_total_s == pytest.approx(SECONDS, abs=0.5) for e in progress)
    assert done[-1] == pytest.approx(SECONDS, abs=0.5)
    # The segments arrive in order, numbered without gaps, each event bounded.
    expected = 0
    for event in progress:
        assert event.first_segment == expected
        assert len(event.segments) <= MAX_SEGMENTS_PER_EVENT
        assert all(not s.words for s in event.segments)
        expected += len(event.segments)
    partial = " ".join(s.text for e in progress for s in e.segments)
    assert partial.split()[:5] == ["And", "so", "my", "fellow", "Americans"]  # real text, in order
    assert len(partial.split()) > 40
    first_text = next(e for e in progress if e.segments)
    assert first_text.progress.audio_done_s < SECONDS / 2
    got = await client.get(task.id)
    assert got.progress.audio_done_s == pytest.approx(got.progress.audio_total_s)
    assert got.progress.audio_total_s == pytest.approx(SECONDS, abs=0.5)


async def test_a_cached_transcript_has_no_progress_events_but_is_complete(
    client: EscribaClient, tmp_path: Path
) -> None:
    path = media.write(tmp_path / "jfk.flac", media.JFK.read_bytes())
    for _ in range(2):
        task = await client.create_task(path, make_spec(path.name))
        events = [e async for e in client.watch(task.id)]
    assert events[-1].task.result.transcript_from_cache
    assert not [e for e in events if e.HasField("progress")]
    assert events[-1].task.progress.audio_done_s == pytest.approx(11.0, abs=0.1)
