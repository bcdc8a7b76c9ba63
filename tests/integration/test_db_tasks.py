"""The task repository against a real PostgreSQL: guarded transitions, idempotent stage writes, owners."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from escriba.common.errors import InvalidInputError
from escriba.db import (
    NewTask,
    Stage,
    TaskAlreadyExists,
    TaskFilter,
    TaskNotFound,
    TaskRepository,
    TaskResult,
    TaskStatus,
    Transition,
)
from escriba.transcript import Edit, Segment, Word

pytestmark = pytest.mark.timeout(60)

OWNER = "team-a"
OTHER = "team-b"

RESULT = TaskResult(
    text=" and so my fellow americans",
    corrected_text="And so, my fellow Americans.",
    language="en",
    language_probability=0.98,
    segments=(
        Segment(
            id=0,
            start_s=0.0,
            end_s=2.5,
            text="And so, my fellow Americans.",
            words=(Word(0.0, 0.4, " And", 0.9), Word(0.4, 0.8, " so,", 0.8)),
            avg_logprob=-0.2,
            no_speech_prob=0.01,
            compression_ratio=1.1,
        ),
    ),
    edits=(Edit(rule="casing", original="americans", replacement="Americans", segment_id=0, offset=20),),
    formats={"srt": "1\n00:00:00,000 --> 00:00:02,500\nAnd so, my fellow Americans.\n"},
    model="tiny.en",
    rules_version="3",
)


async def _new(repo: TaskRepository, owner: str = OWNER, **kwargs: Any) -> str:
    task = await repo.create(NewTask(owner_id=owner, **kwargs))
    return task.id


async def _bring_to(repo: TaskRepository, status: TaskStatus) -> str:
    """A fresh task moved to ``status`` through the repository's own transitions."""
    task_id = await _new(repo)
    path = {
        TaskStatus.QUEUED: [],
        TaskStatus.PREPROCESSING: [Stage.PREPROCESS],
        TaskStatus.TRANSCRIBING: [Stage.PREPROCESS, Stage.TRANSCRIPTION],
        TaskStatus.CORRECTING: [Stage.PREPROCESS, Stage.TRANSCRIPTION, Stage.CORRECTION],
    }
    for stage in path.get(status, [Stage.PREPROCESS, Stage.TRANSCRIPTION, Stage.CORRECTION]):
        assert (await repo.start_stage(task_id, stage)).applied
    if status is TaskStatus.COMPLETED:
        assert (await repo.complete(task_id, RESULT)).applied
    elif status is TaskStatus.FAILED:
        assert (await repo.fail(task_id, "not_audio", "the upload is not audio")).applied
    elif status is TaskStatus.CANCELLED:
        assert (await repo.cancel(task_id, owner_id=OWNER)).applied
    assert (await repo.get(task_id, owner_id=OWNER)).status is status
    return task_id


Action = Callable[[TaskRepository, str], Awaitable[Transition]]

ACTIONS: dict[str, tuple[Action, TaskStatus | None]] = {
    # name: (call, status after it when applied; None: status unchanged)
    "start_preprocess": (lambda r, t: r.start_stage(t, Stage.PREPROCESS), TaskStatus.PREPROCESSING),
    "start_transcription": (lambda r, t: r.start_stage(t, Stage.TRANSCRIPTION), TaskStatus.TRANSCRIBING),
    "start_correction": (lambda r, t: r.start_stage(t, Stage.CORRECTION), TaskStatus.CORRECTING),
    "complete": (lambda r, t: r.complete(t, RESULT), TaskStatus.COMPLETED),
    "fail": (lambda r, t: r.fail(t, "model_error", "boom"), TaskStatus.FAILED),
    "cancel": (lambda r, t: r.cancel(t, owner_id=OWNER), TaskStatus.CANCELLED),
    "archive": (lambda r, t: r.archive(t, owner_id=OWNER), None),
}

# Which actions apply from each status (written out, not derived from escriba.db.states).
APPLIES: dict[TaskStatus, set[str]] = {
    TaskStatus.QUEUED: {
        "start_preprocess",
        "start_transcription",
        "start_correction",
        "complete",
        "fail",
        "cancel",
    },
    TaskStatus.PREPROCESSING: {
        "start_preprocess",
        "start_transcription",
        "start_correction",
        "complete",
        "fail",
        "cancel",
    },
    TaskStatus.TRANSCRIBING: {"start_transcription", "start_correction", "complete", "fail", "cancel"},
    TaskStatus.CORRECTING: {"start_correction", "complete", "fail", "cancel"},
    TaskStatus.COMPLETED: {"archive"},
    TaskStatus.FAILED: {"archive"},
    TaskStatus.CANCELLED: {"archive"},
}


@pytest.mark.parametrize("start", list(TaskStatus), ids=str)
async def test_transition_table(task_repository: TaskRepository, start: TaskStatus) -> None:
    for name, (action, target) in ACTIONS.items():
        task_id = await _bring_to(task_repository, start)
        before = await task_repository.get(task_id, owner_id=OWNER)
        outcome = await action(task_repository, task_id)
        expected = name in APPLIES[start]
        assert outcome.applied is expected, f"{name} from {start}"
        after = await task_repository.get(task_id, owner_id=OWNER)
        assert outcome.task == after
        if expected and target is not None:
            assert after.status is target
        else:
            assert after.status is start
        if name == "archive":
            assert after.is_archived is expected
        if not expected:
            # A refused transition leaves the row exactly as it was.
            assert after == before


async def test_completed_task_never_goes_back(task_repository: TaskRepository) -> None:
    task_id = await _bring_to(task_repository, TaskStatus.COMPLETED)
    done = await task_repository.get(task_id, owner_id=None)
    for stage in Stage:
        assert not (await task_repository.start_stage(task_id, stage)).applied
    assert not (await task_repository.fail(task_id, "late", "a late failure")).applied
    assert not (await task_repository.cancel(task_id, owner_id=OWNER)).applied
    other = TaskResult(text="different", corrected_text="Different.", language="de")
    assert not (await task_repository.complete(task_id, other)).applied
    assert await task_repository.get(task_id, owner_id=None) == done
    assert done.result == RESULT


async def test_cancel_wins_over_a_later_stage(task_repository: TaskRepository) -> None:
    task_id = await _new(task_repository)
    assert (await task_repository.start_stage(task_id, Stage.PREPROCESS)).applied
    cancelled = await task_repository.cancel(task_id, owner_id=OWNER)
    assert cancelled.applied and cancelled.task.status is TaskStatus.CANCELLED
    assert cancelled.task.completed_at is not None

    late = await task_repository.start_stage(task_id, Stage.TRANSCRIPTION)
    assert not late.applied and late.task.status is TaskStatus.CANCELLED
    write = await task_repository.record_stage_result(task_id, Stage.TRANSCRIPTION, {"text": "x"})
    assert not write.applied and write.stored is None and write.status is TaskStatus.CANCELLED
    assert not (await task_repository.complete(task_id, RESULT)).applied
    final = await task_repository.get(task_id, owner_id=OWNER)
    assert final.status is TaskStatus.CANCELLED and final.result is None


@pytest.mark.parametrize("rounds", [20])
async def test_racing_cancel_and_complete_apply_exactly_once(
    task_repository: TaskRepository, rounds: int
) -> None:
    outcomes: set[TaskStatus] = set()
    for _ in range(rounds):
        task_id = await _bring_to(task_repository, TaskStatus.CORRECTING)
        cancel, complete = await asyncio.gather(
            task_repository.cancel(task_id, owner_id=OWNER), task_repository.complete(task_id, RESULT)
        )
        assert cancel.applied != complete.applied
        # The refused side reports the state the winner left, not the one it started from.
        assert cancel.task.status is complete.task.status
        final = await task_repository.get(task_id, owner_id=OWNER)
        winner = TaskStatus.CANCELLED if cancel.applied else TaskStatus.COMPLETED
        assert final.status is winner
        assert (final.result is not None) is (winner is TaskStatus.COMPLETED)
        outcomes.add(winner)
    assert outcomes  # at least one round ran; which side wins each race is up to the server


async def test_create_and_get_round_trip(task_repository: TaskRepository) -> None:
    options = {"transcription": {"language": "en", "beam_size": 5}, "output_formats": ["srt"]}
    created = await task_repository.create(
        NewTask(
            owner_id=OWNER,
            filename="jfk.flac",
            audio_object="uploads/abc",
            audio_sha256="ab" * 32,
            options=options,
            upload_ms=12.5,
        )
    )
    assert created.status is TaskStatus.QUEUED and not created.is_archived
    assert created.result is None and created.started_at is None and created.completed_at is None
    got = await task_repository.get(created.id, owner_id=OWNER)
    assert got == created
    assert got.options == options and got.filename == "jfk.flac" and got.timings.upload_ms == 12.5

    await task_repository.record_audio(
        created.id, duration_s=11.0, info={"sha256": "ab" * 32, "duration_s": 11.0}
    )
    started = await task_repository.start_stage(created.id, Stage.PREPROCESS)
    assert started.task.started_at is not None and started.task.timings.queue_ms is not None
    assert started.task.audio_duration_s == 11.0 and started.task.audio["duration_s"] == 11.0

    done = await task_repository.complete(created.id, RESULT)
    assert done.applied and done.task.result == RESULT
    assert done.task.completed_at is not None and done.task.timings.total_ms is not None
    assert done.task.timings.total_ms >= 12.5


async def test_explicit_ids_and_bad_ids(task_repository: TaskRepository) -> None:
    task_id = "8d6c4f0e-5a43-4e0b-9a53-3c1f7f0c2b11"
    created = await task_repository.create(NewTask(owner_id=OWNER, id=task_id))
    assert created.id == task_id
    with pytest.raises(TaskAlreadyExists):
        await task_repository.create(NewTask(owner_id=OWNER, id=task_id))
    with pytest.raises(InvalidInputError):
        await task_repository.create(NewTask(owner_id=OWNER, id="not-a-uuid"))
    with pytest.raises(InvalidInputError):
        await task_repository.create(NewTask(owner_id=""))
    with pytest.raises(TaskNotFound):
        await task_repository.get("not-a-uuid", owner_id=OWNER)
    with pytest.raises(TaskNotFound):
        await task_repository.get("00000000-0000-4000-8000-000000000000", owner_id=None)
    with pytest.raises(TaskNotFound):
        await task_repository.start_stage("00000000-0000-4000-8000-000000000000", Stage.PREPROCESS)


async def test_an_idempotency_key_creates_one_task_per_owner(task_repository: TaskRepository) -> None:
    first, created = await task_repository.create_once(NewTask(owner_id=OWNER, idempotency_key="upload-1"))
    again, created_again = await task_repository.create_once(
        NewTask(owner_id=OWNER, idempotency_key="upload-1", filename="retry.mp3")
    )
    assert created and not created_again and again.id == first.id and again.filename == first.filename
    other, other_created = await task_repository.create_once(
        NewTask(owner_id="bob", idempotency_key="upload-1")
    )
    assert other_created and other.id != first.id  # keys are per owner
    assert await task_repository.find_by_idempotency_key(OWNER, "upload-1") == first
    assert await task_repository.find_by_idempotency_key(OWNER, "upload-2") is None
    plain = [await task_repository.create_once(NewTask(owner_id=OWNER)) for _ in range(2)]
    assert all(created for _, created in plain) and plain[0][0].id != plain[1][0].id


async def test_racing_creates_with_one_key_insert_one_row(task_repository: TaskRepository) -> None:
    results = await asyncio.gather(
        *(task_repository.create_once(NewTask(owner_id=OWNER, idempotency_key="race")) for _ in range(8))
    )
    assert len({task.id for task, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_owner_isolation(task_repository: TaskRepository) -> None:
    mine = await _bring_to(task_repository, TaskStatus.COMPLETED)
    theirs = await _new(task_repository, owner=OTHER)

    with pytest.raises(TaskNotFound):
        await task_repository.get(mine, owner_id=OTHER)
    with pytest.raises(TaskNotFound):
        await task_repository.cancel(theirs, owner_id=OWNER)
    with pytest.raises(TaskNotFound):
        await task_repository.archive(mine, owner_id=OTHER)
    # Nothing changed for the real owners.
    assert (await task_repository.get(theirs, owner_id=OTHER)).status is TaskStatus.QUEUED
    assert not (await task_repository.get(mine, owner_id=OWNER)).is_archived

    listed = await task_repository.list_tasks(TaskFilter(owner_id=OTHER))
    assert [t.id for t in listed.tasks] == [theirs]
    # Workers act without an owner.
    assert (await task_repository.cancel(theirs, owner_id=None)).applied


async def test_stage_result_write_is_idempotent(task_repository: TaskRepository) -> None:
    task_id = await _bring_to(task_repository, TaskStatus.TRANSCRIBING)
    assert await task_repository.get_stage_result(task_id, Stage.TRANSCRIPTION) is None

    first = await task_repository.record_stage_result(
        task_id, Stage.TRANSCRIPTION, {"text": "first"}, duration_ms=250.0
    )
    assert first.applied and first.stored is not None and first.stored.result == {"text": "first"}
    again = await task_repository.record_stage_result(
        task_id, Stage.TRANSCRIPTION, {"text": "second"}, duration_ms=999.0
    )
    assert not again.applied and again.stored == first.stored and again.status is TaskStatus.TRANSCRIBING
    assert await task_repository.get_stage_result(task_id, Stage.TRANSCRIPTION) == first.stored
    task = await task_repository.get(task_id, owner_id=None)
    assert task.timings.transcription_ms == 250.0

    # Redeliveries racing each other: exactly one write lands.
    writes = await asyncio.gather(
        *(
            task_repository.record_stage_result(task_id, Stage.CORRECTION, {"n": n}, duration_ms=float(n))
            for n in range(6)
        )
    )
    applied = [w for w in writes if w.applied]
    assert len(applied) == 1 and applied[0].stored is not None
    assert all(w.stored == applied[0].stored for w in writes)


async def test_record_attempt_counts_per_stage(task_repository: TaskRepository) -> None:
    task_id = await _new(task_repository)
    assert await task_repository.record_attempt(task_id, Stage.PREPROCESS) == 1
    assert await task_repository.record_attempt(task_id, Stage.TRANSCRIPTION) == 1
    counts = await asyncio.gather(
        *(task_repository.record_attempt(task_id, Stage.TRANSCRIPTION) for _ in range(4))
    )
    assert sorted(counts) == [2, 3, 4, 5]
    task = await task_repository.get(task_id, owner_id=None)
    assert task.attempts == 6
    assert task.stage_attempts == {"preprocess": 1, "transcription": 5}
    with pytest.raises(TaskNotFound):
        await task_repository.record_attempt("00000000-0000-4000-8000-000000000000", Stage.PREPROCESS)


async def test_fail_keeps_reason_and_message(task_repository: TaskRepository) -> None:
    task_id = await _bring_to(task_repository, TaskStatus.PREPROCESSING)
    failed = await task_repository.fail(task_id, "not_audio", "the upload has no audio stream")
    assert failed.applied
    assert failed.task.error_reason == "not_audio" and failed.task.error == "the upload has no audio stream"
    assert not (await task_repository.fail(task_id, "other", "again")).applied
    assert (await task_repository.get(task_id, owner_id=OWNER)).error_reason == "not_audio"
    with pytest.raises(InvalidInputError):
        await task_repository.fail(task_id, "", "no reason")


async def test_purge_archived_deletes_only_old_archived_tasks(
    task_repository: TaskRepository, db_pool: Any
) -> None:
    old_archived = await _bring_to(task_repository, TaskStatus.COMPLETED)
    assert (await task_repository.archive(old_archived, owner_id=OWNER)).applied
    await task_repository.record_stage_result(old_archived, Stage.CORRECTION, {"x": 1})
    kept_unarchived = await _bring_to(task_repository, TaskStatus.FAILED)
    recent_archived = await _bring_to(task_repository, TaskStatus.CANCELLED)
    assert (await task_repository.archive(recent_archived, owner_id=OWNER)).applied
    await db_pool.execute(
        "UPDATE transcription_tasks SET completed_at = completed_at - interval '40 days'"
        " WHERE id = ANY($1::uuid[])",
        [old_archived, kept_unarchived],
    )
    cutoff = datetime.now(UTC) - timedelta(days=30)
    assert await task_repository.purge_archived(completed_before=cutoff) == 1
    assert await task_repository.purge_archived(completed_before=cutoff) == 0
    with pytest.raises(TaskNotFound):
        await task_repository.get(old_archived, owner_id=None)
    assert await task_repository.get_stage_result(old_archived, Stage.CORRECTION) is None
    await task_repository.get(kept_unarchived, owner_id=None)
    await task_repository.get(recent_archived, owner_id=None)
