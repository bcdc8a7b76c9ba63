"""The whole pipeline on the local stack: real NATS, PostgreSQL, gRPC and the Whisper model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from bench.load import tagged_wav
from escriba.audio.pcm import to_int16
from escriba.client import EscribaClient, make_spec
from escriba.local.stack import LocalStack
from escriba.pipeline.taskpb import status_from_pb
from escriba.v1 import tasks_pb2
from tests.support import media
from tests.support.recordings import missing_sentences, multi_window
from tests.support.stack import run_task, run_tasks, status_name
from tests.support.text import JFK_REFERENCE, wer
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real speech in several containers, plus a bad file."""
    folder = tmp_path_factory.mktemp("audio")
    jfk, rate = media.speech("jfk.flac")
    mono = jfk.mean(axis=0)
    files = {
        "jfk.flac": media.JFK.read_bytes(),
        "jfk.mp3": media.to_mp3(jfk, rate),
        "jfk.opus": media.to_ogg_opus(jfk, rate),
        "jfk.m4a": media.to_m4a_aac(jfk, rate),
        # JFK in the left channel only, silence in the right: the mixdown must keep the speech.
        "stereo.wav": media.to_wav(media.one_sided(mono, channels=2, channel=0), rate),
        "broken.mp3": media.random_bytes(),
    }
    return {name: media.write(folder / name, data) for name, data in files.items()}


async def test_jfk_through_the_whole_pipeline(client: EscribaClient, audio_files: dict[str, Path]) -> None:
    task = await run_task(client, audio_files["jfk.flac"])
    assert status_name(task) == "completed", task.error
    assert wer(JFK_REFERENCE, task.result.corrected_text) <= 0.10, task.result.corrected_text
    assert task.result.language == "en"
    assert task.result.duration_s == pytest.approx(11.0, abs=0.1)
    assert task.result.segments and task.result.segments[0].words
    timings = task.timings
    assert timings.preprocess_ms > 0 and timings.transcription_ms > 0 and timings.total_ms > 0


async def test_every_sentence_of_a_long_recording_comes_through_the_pipeline(
    client: EscribaClient, tmp_path: Path
) -> None:
    """About 136 s of real speech in five windows, uploaded as a user would (MP3, 44.1 kHz stereo): every
    sentence of the references is in the corrected text, and the segments run to the recording's end."""
    built = multi_window()
    stereo = np.stack([built.samples, built.samples])
    path = media.write(
        tmp_path / "multi-window.mp3", media.to_mp3(media.resample(stereo, 16000, 44100), 44100)
    )
    task = await run_task(client, path)
    assert status_name(task) == "completed", task.error
    result = task.result
    assert not missing_sentences(built.sentences, result.corrected_text), result.corrected_text
    assert result.segments[-1].end_s > built.duration_s - 3.0
    assert all(s.words for s in result.segments)


async def test_watch_streams_every_stage(
    client: EscribaClient, stack: LocalStack, audio_files: dict[str, Path]
) -> None:
    spec = make_spec("jfk.mp3", output_formats=["srt", "vtt"])
    created = await client.create_task(audio_files["jfk.mp3"], spec)
    pipeline = stack.runtime.pipeline  # type: ignore[union-attr]
    statuses = []
    final = None
    async for event in client.watch(created.id):
        status = status_from_pb(event.status)
        assert status is not None
        if event.HasField("progress"):
            assert status.value == "transcribing"  # progress within the stage, not a new status
            continue
        statuses.append(status.value)
        if len(statuses) == 1:
            # A watcher is a plain subscription: no JetStream consumer per watcher.
            events = await pipeline.js.stream_info(pipeline.names.events_stream)
            assert events.state.consumer_count == 0
        if event.HasField("task"):
            final = event.task
    # Watching starts at the current status: queued, or a stage if the worker already took the job.
    order = ["queued", "preprocessing", "transcribing", "correcting", "completed"]
    assert statuses == order[order.index(statuses[0]) :]
    assert statuses[0] in ("queued", "preprocessing")
    assert final is not None and final.result.srt.startswith("1\n") and final.result.vtt.startswith("WEBVTT")


async def test_concurrent_tasks_and_a_bad_file(
    client: EscribaClient, stack: LocalStack, audio_files: dict[str, Path]
) -> None:
    good = [n for n in audio_files if n != "broken.mp3"]
    names = [good[i % len(good)] for i in range(20)] + ["broken.mp3"]
    tasks = await run_tasks(client, [audio_files[n] for n in names])
    for name, task in zip(names, tasks, strict=True):
        if name == "broken.mp3":
            assert status_name(task) == "failed"
            assert task.error_reason == "not_audio", task.error
            assert "not" in task.error.lower() and "audio" in task.error.lower()
            continue
        assert status_name(task) == "completed", (name, task.error)
        assert wer(JFK_REFERENCE, task.result.corrected_text) <= 0.10, (name, task.result.corrected_text)
    # Exactly one result per task: one row each, one stored result per stage.
    pipeline = stack.runtime.pipeline  # type: ignore[union-attr]
    ids = [t.id for t in tasks]
    rows = await pipeline.pool.fetch(
        "SELECT id::text, status FROM transcription_tasks WHERE id = ANY($1::uuid[])", ids
    )
    assert len(rows) == len(ids)
    results = await pipeline.pool.fetch(
        "SELECT task_id::text, stage, count(*) AS n FROM task_stage_results"
        " WHERE task_id = ANY($1::uuid[]) GROUP BY task_id, stage",
        ids,
    )
    assert all(r["n"] == 1 for r in results)


async def test_same_audio_again_comes_from_the_cache(
    client: EscribaClient, stack: LocalStack, audio_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await run_task(client, audio_files["jfk.flac"])
    calls = _model_calls(stack, monkeypatch)
    second = await run_task(client, audio_files["jfk.flac"])
    assert status_name(second) == "completed"
    assert calls() == 0, "the model ran for audio it had already transcribed"
    assert second.result.transcript_from_cache
    assert second.result.corrected_text == first.result.corrected_text


async def test_the_same_new_audio_several_times_at_once_runs_the_model_once(
    client: EscribaClient, stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four uploads of different bytes (their own comment each) and the same speech, sent together:
    they reach the transcription stage before the first transcript is stored, and share it."""
    jfk, rate = media.speech("jfk.flac")
    clip = to_int16(0.7 * jfk.mean(axis=0)[: 6 * rate])  # not in the cache yet
    paths = [media.write(tmp_path / f"same-{i}.wav", tagged_wav(clip, rate, f"upload {i}")) for i in range(4)]
    calls = _model_calls(stack, monkeypatch)
    before = {r: _transcript_lookups(r) for r in ("hit", "miss", "shared")}
    tasks = await run_tasks(client, paths)
    assert [status_name(t) for t in tasks] == ["completed"] * 4, [t.error for t in tasks]
    assert calls() == 1, f"the model ran {calls()} times for one recording"
    assert len({t.result.corrected_text for t in tasks}) == 1 and tasks[0].result.corrected_text
    assert sum(t.result.transcript_from_cache for t in tasks) == 3
    counted = {r: _transcript_lookups(r) - before[r] for r in before}
    assert counted["miss"] >= 1 and sum(counted.values()) == 4, counted


def _model_calls(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many times the stack's engine has transcribed since this call."""
    engine = stack.transcription_engine
    assert engine is not None
    calls = 0
    original = engine.transcribe

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "transcribe", counting)
    return lambda: calls


def _transcript_lookups(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "escriba_cache_requests_total", {"cache": "transcript", "result": result}
    )
    return value or 0.0


async def test_cancel_wins_over_later_stages(
    client: EscribaClient, stack: LocalStack, audio_files: dict[str, Path]
) -> None:
    created = await client.create_task(audio_files["stereo.wav"])
    cancelled = await client.cancel(created.id)
    assert status_name(cancelled) == "cancelled"
    pipeline = stack.runtime.pipeline  # type: ignore[union-attr]

    async def queue_drained() -> bool:
        # The work queue empties once each job was taken and acked: skipped, or run and handed on.
        info = await pipeline.js.stream_info(pipeline.names.jobs_stream)
        return info.state.messages == 0

    await eventually(queue_drained, what="the cancelled task's jobs to leave the queue", timeout_s=60)
    again = await client.get(created.id)
    assert status_name(again) == "cancelled"
    assert not again.result.corrected_text


async def test_list_get_archive(client: EscribaClient, audio_files: dict[str, Path]) -> None:
    task = await run_task(client, audio_files["jfk.opus"])
    listed = await client.list(tasks_pb2.ListTasksRequest(statuses=[tasks_pb2.TASK_STATUS_COMPLETED]))
    assert task.id in {t.id for t in listed.tasks}
    archived = await client.archive(task.id)
    assert archived.is_archived
    visible = await client.list(tasks_pb2.ListTasksRequest(archived=False, page_size=500))
    assert task.id not in {t.id for t in visible.tasks}
