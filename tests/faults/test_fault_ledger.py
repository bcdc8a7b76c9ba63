"""The audit behind the summary line can fail: it sees lost, silently failed and duplicated tasks."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from escriba.db.models import NewTask, TaskResult
from escriba.db.settings import DatabaseSettings
from escriba.db.states import Stage
from escriba.db.tasks import TaskRepository
from tests.support.ledger import Ledger, Tally, audit, wait_terminal

pytestmark = pytest.mark.timeout(60)


async def new_task(repo: TaskRepository) -> str:
    return (await repo.create(NewTask(owner_id="tester"))).id


async def completed_task(repo: TaskRepository) -> str:
    task_id = await new_task(repo)
    for stage in Stage:
        await repo.start_stage(task_id, stage)
        await repo.record_stage_result(task_id, stage, {"ok": True})
    await repo.complete(task_id, TaskResult(text="hi", corrected_text="Hi.", language="en"))
    return task_id


async def test_every_kind_of_outcome_is_counted(
    task_repository: TaskRepository, db_settings: DatabaseSettings, db_pool: Any
) -> None:
    repo = task_repository
    before = {await completed_task(repo)}  # an earlier scenario's task: neither counted nor an orphan
    done = await completed_task(repo)
    twice = await completed_task(repo)
    failed = await new_task(repo)
    await repo.fail(failed, "not_audio", "preprocess: the upload is not audio")
    silent = await new_task(repo)
    await db_pool.execute(
        "UPDATE transcription_tasks SET status = 'failed', completed_at = now() WHERE id = $1",
        uuid.UUID(silent),
    )
    stuck = await new_task(repo)
    await repo.start_stage(stuck, Stage.TRANSCRIPTION)
    missing = str(uuid.uuid4())
    orphan = await new_task(repo)  # created, but no client was told about it
    await repo.cancel(orphan, owner_id=None)
    submitted = [done, twice, failed, silent, stuck, missing]

    left = await wait_terminal(db_settings.url, db_settings.schema, submitted, timeout_s=0)
    assert left == 2  # the stuck and the missing one
    result = await audit(
        "self-test",
        dsn=db_settings.url,
        schema=db_settings.schema,
        submitted=submitted,
        before=before,
        events={twice: {"completed", "failed"}, done: {"completed"}},
    )
    assert result.tally == Tally(submitted=6, completed=2, failed_with_reason=1, lost=3, duplicated=2)
    assert not result.tally.clean
    assert any(stuck in p and "transcribing" in p for p in result.problems)
    assert any(orphan in p for p in result.problems)
    ledger = Ledger()
    ledger.add(result)
    assert ledger.total.line() == "faults: submitted=6 completed=2 failed_with_reason=1 lost=3 duplicated=2"
