"""`escriba purge` against a real PostgreSQL and NATS: finished tasks past their retention go, with their
stage results and any upload they still name; unfinished and recent ones stay; concurrent purges share
the work; a purge that cannot reach its database exits non-zero with a readable message."""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import pytest

from escriba.bus import AudioStore
from escriba.cli import main
from escriba.db import NewTask, Stage, TaskRepository, TaskResult
from escriba.db.settings import DatabaseSettings, RetentionSettings
from escriba.local.nats import EmbeddedNats
from escriba.pipeline.retention import purge
from tests.support.nats_fixtures import Bus

pytestmark = pytest.mark.timeout(120)

OWNER = "team-a"
RESULT = TaskResult(text="hello", corrected_text="Hello.", language="en", model="tiny.en")


async def finished(
    repo: TaskRepository, db_pool: Any, *, days_ago: float, archived: bool = False, **new: Any
) -> str:
    """A completed task that ended ``days_ago`` days ago."""
    task = await repo.create(NewTask(owner_id=OWNER, **new))
    for stage in (Stage.PREPROCESS, Stage.TRANSCRIPTION, Stage.CORRECTION):
        assert (await repo.start_stage(task.id, stage)).applied
    await repo.record_stage_result(task.id, Stage.CORRECTION, {"x": 1})
    assert (await repo.complete(task.id, RESULT)).applied
    if archived:
        assert (await repo.archive(task.id, owner_id=OWNER)).applied
    await db_pool.execute(
        "UPDATE transcription_tasks SET completed_at = now() - make_interval(secs => $2) WHERE id = $1::uuid",
        task.id,
        days_ago * 86_400,
    )
    return task.id


async def ids(db_pool: Any) -> set[str]:
    return {str(r["id"]) for r in await db_pool.fetch("SELECT id FROM transcription_tasks")}


async def test_purge_deletes_finished_tasks_past_retention_and_their_uploads(
    task_repository: TaskRepository, db_pool: Any, bus: Bus
) -> None:
    uploads = await AudioStore.open(bus.js, bus.names.audio_bucket)
    await uploads.put_bytes("uploads/left-behind", b"audio whose deletion failed when its task ended")
    old = await finished(task_repository, db_pool, days_ago=40, audio_object="uploads/left-behind")
    old_archived = await finished(task_repository, db_pool, days_ago=8, archived=True)
    recent = await finished(task_repository, db_pool, days_ago=8)
    recent_archived = await finished(task_repository, db_pool, days_ago=2, archived=True)
    unfinished = (await task_repository.create(NewTask(owner_id=OWNER))).id
    await db_pool.execute(
        "UPDATE transcription_tasks SET created_at = now() - interval '90 days' WHERE id = $1::uuid",
        unfinished,
    )
    cancelled = (await task_repository.create(NewTask(owner_id=OWNER))).id
    assert (await task_repository.cancel(cancelled, owner_id=OWNER)).applied
    await db_pool.execute(
        "UPDATE transcription_tasks SET completed_at = now() - interval '31 days' WHERE id = $1::uuid",
        cancelled,
    )

    settings = RetentionSettings(retention_days=30, archived_retention_days=7, batch_size=2)
    report = await purge(db_pool, uploads, settings)

    assert (report.tasks, report.archived_tasks, report.audio_objects) == (3, 1, 1)
    assert await ids(db_pool) == {recent, recent_archived, unfinished}
    assert not await uploads.exists("uploads/left-behind")
    assert await task_repository.get_stage_result(old, Stage.CORRECTION) is None
    assert old_archived not in await ids(db_pool)
    # Nothing left to do: a second run deletes nothing.
    again = await purge(db_pool, uploads, settings)
    assert again.tasks == 0


async def test_concurrent_purges_share_the_work_without_errors(
    task_repository: TaskRepository, db_pool: Any
) -> None:
    for _ in range(12):
        await finished(task_repository, db_pool, days_ago=60)
    kept = await finished(task_repository, db_pool, days_ago=1)
    settings = RetentionSettings(retention_days=30, archived_retention_days=7, batch_size=2)
    reports = await asyncio.gather(*(purge(db_pool, None, settings) for _ in range(4)))
    assert sum(r.tasks for r in reports) == 12
    assert await ids(db_pool) == {kept}


def run_cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["purge"])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli_env(db_settings: DatabaseSettings, nats_server: EmbeddedNats, bus: Bus) -> dict[str, str]:
    return {
        "ESCRIBA_DATABASE_URL": db_settings.url,
        "ESCRIBA_DATABASE_SCHEMA": db_settings.schema,
        "ESCRIBA_NATS_URL": nats_server.url,
        "ESCRIBA_NATS_PREFIX": bus.names.prefix,
        "ESCRIBA_PURGE_RETENTION_DAYS": "30",
    }


async def test_escriba_purge_reports_what_it_deleted(
    task_repository: TaskRepository, db_pool: Any, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await finished(task_repository, db_pool, days_ago=45)
    recent = await finished(task_repository, db_pool, days_ago=3)
    # main() runs its own event loop: off this test's loop, in a thread.
    code, out, err = await asyncio.to_thread(run_cli, monkeypatch, cli_env)
    assert code == 0, err
    assert out.strip() == "purged 1 finished tasks (0 archived) and 0 stored uploads"
    assert await ids(db_pool) == {recent}
    assert old not in await ids(db_pool)


def test_escriba_purge_fails_readably_without_its_database(
    monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    env = {
        "ESCRIBA_DATABASE_URL": f"postgresql://escriba@127.0.0.1:{unused_tcp_port}/escriba",
        "ESCRIBA_DATABASE_CONNECT_ATTEMPTS": "1",
        "ESCRIBA_NATS_URL": "",
    }
    code, out, err = run_cli(monkeypatch, env)
    assert code == 1 and out == ""
    assert err.startswith("escriba: ") and "PostgreSQL" in err and "Traceback" not in err


def test_escriba_purge_refuses_an_archived_retention_longer_than_the_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"ESCRIBA_PURGE_RETENTION_DAYS": "7", "ESCRIBA_PURGE_ARCHIVED_RETENTION_DAYS": "30"}
    code, _, err = run_cli(monkeypatch, env)
    assert code == 2 and "ESCRIBA_PURGE_ARCHIVED_RETENTION_DAYS" in err
