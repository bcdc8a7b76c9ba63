"""ListTasks against a real PostgreSQL: filters, keyset pages without gaps or repeats, page tokens."""

from __future__ import annotations

import base64
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from escriba.common.errors import InvalidInputError
from escriba.db import (
    InvalidCursor,
    NewTask,
    Stage,
    TaskFilter,
    TaskRecord,
    TaskRepository,
    TaskResult,
    TaskStatus,
)
from escriba.db.list_query import encode_cursor

pytestmark = pytest.mark.timeout(60)

OWNERS = ("alice", "bob")
RESULT = TaskResult(text="hello", corrected_text="Hello.", language="en")


async def _populate(repo: TaskRepository, pool: Any) -> list[TaskRecord]:
    """42 tasks over two owners and every status; many share a created_at to exercise the id tie-break."""
    statuses = itertools.cycle(TaskStatus)
    ids = []
    for n in range(42):
        owner = OWNERS[n % 2]
        task_id = (await repo.create(NewTask(owner_id=owner, filename=f"f{n}.wav"))).id
        status = next(statuses)
        if status is not TaskStatus.QUEUED:
            await repo.start_stage(task_id, Stage.PREPROCESS)
        if status in (TaskStatus.TRANSCRIBING, TaskStatus.CORRECTING):
            await repo.start_stage(task_id, Stage.TRANSCRIPTION)
        if status is TaskStatus.CORRECTING:
            await repo.start_stage(task_id, Stage.CORRECTION)
        if status is TaskStatus.COMPLETED:
            await repo.complete(task_id, RESULT)
        if status is TaskStatus.FAILED:
            await repo.fail(task_id, "boom", "it broke")
        if status is TaskStatus.CANCELLED:
            await repo.cancel(task_id, owner_id=owner)
        if status.terminal and n % 3 == 0:
            assert (await repo.archive(task_id, owner_id=owner)).applied
        ids.append(task_id)
    # Ten groups of (mostly) identical creation times.
    await pool.execute(
        "UPDATE transcription_tasks SET created_at ="
        " date_trunc('second', now()) - (abs(hashtext(id::text)) % 10) * interval '1 minute'"
    )
    return [await repo.get(task_id, owner_id=None) for task_id in ids]


def _expected(tasks: list[TaskRecord], task_filter: TaskFilter) -> list[str]:
    chosen = [
        t
        for t in tasks
        if (task_filter.owner_id is None or t.owner_id == task_filter.owner_id)
        and (not task_filter.statuses or t.status in task_filter.statuses)
        and (task_filter.archived is None or t.is_archived is task_filter.archived)
    ]
    chosen.sort(key=lambda t: (t.created_at, t.id), reverse=True)
    return [t.id for t in chosen]


async def _all_pages(repo: TaskRepository, task_filter: TaskFilter, limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = await repo.list_tasks(task_filter, cursor=cursor, limit=limit)
        pages += 1
        assert len(page.tasks) <= limit
        ids.extend(t.id for t in page.tasks)
        if not page.next_cursor:
            return ids, pages
        assert len(page.tasks) == limit
        cursor = page.next_cursor


FILTERS = [
    TaskFilter(),
    TaskFilter(owner_id="alice"),
    TaskFilter(owner_id="bob", archived=False),
    TaskFilter(owner_id="alice", archived=True),
    TaskFilter(owner_id="bob", statuses=(TaskStatus.COMPLETED,)),
    TaskFilter(owner_id="alice", statuses=(TaskStatus.QUEUED, TaskStatus.PREPROCESSING, TaskStatus.FAILED)),
    TaskFilter(statuses=(TaskStatus.CANCELLED,), archived=False),
    TaskFilter(owner_id="nobody"),
]


async def test_filters_and_pages_have_no_gaps_or_repeats(
    task_repository: TaskRepository, db_pool: Any
) -> None:
    tasks = await _populate(task_repository, db_pool)
    assert len({t.created_at for t in tasks}) < len(tasks)  # ties exist
    for task_filter in FILTERS:
        expected = _expected(tasks, task_filter)
        assert expected or task_filter.owner_id == "nobody"
        for limit in (1, 4, 7, 50):
            got, pages = await _all_pages(task_repository, task_filter, limit)
            assert got == expected, (task_filter, limit)
            # No empty trailing page: the last page never carries a token.
            assert pages == max(1, -(-len(expected) // limit))


async def test_last_page_has_no_token_when_exactly_full(task_repository: TaskRepository) -> None:
    for _ in range(4):
        await task_repository.create(NewTask(owner_id="carol"))
    page = await task_repository.list_tasks(TaskFilter(owner_id="carol"), limit=4)
    assert len(page.tasks) == 4 and page.next_cursor == ""
    page = await task_repository.list_tasks(TaskFilter(owner_id="carol"), limit=3)
    assert len(page.tasks) == 3 and page.next_cursor
    rest = await task_repository.list_tasks(TaskFilter(owner_id="carol"), cursor=page.next_cursor, limit=3)
    assert len(rest.tasks) == 1 and rest.next_cursor == ""


async def test_tasks_created_between_pages_do_not_shift_later_pages(task_repository: TaskRepository) -> None:
    first_ids = [(await task_repository.create(NewTask(owner_id="dave"))).id for _ in range(6)]
    page1 = await task_repository.list_tasks(TaskFilter(owner_id="dave"), limit=3)
    newer = [(await task_repository.create(NewTask(owner_id="dave"))).id for _ in range(3)]
    page2 = await task_repository.list_tasks(TaskFilter(owner_id="dave"), cursor=page1.next_cursor, limit=3)
    seen = [t.id for t in page1.tasks + page2.tasks]
    assert sorted(seen) == sorted(first_ids) and len(set(seen)) == 6
    assert not set(newer) & set(seen)


async def test_results_only_when_asked(task_repository: TaskRepository) -> None:
    task_id = (await task_repository.create(NewTask(owner_id="erin"))).id
    await task_repository.start_stage(task_id, Stage.CORRECTION)
    await task_repository.complete(task_id, RESULT)
    light = await task_repository.list_tasks(TaskFilter(owner_id="erin"))
    assert light.tasks[0].result is None and light.tasks[0].status is TaskStatus.COMPLETED
    full = await task_repository.list_tasks(TaskFilter(owner_id="erin"), include_results=True)
    assert full.tasks[0].result == RESULT
    assert full.tasks[0] == await task_repository.get(task_id, owner_id="erin")


async def test_bad_page_tokens_and_sizes(task_repository: TaskRepository) -> None:
    valid = encode_cursor(datetime.now(UTC), uuid.uuid4())
    tampered = base64.urlsafe_b64encode(b'{"v": 1, "t": "yesterday", "i": "00"}').decode()
    for token in ("garbage", "e30", valid[:-3], tampered, "\u00e9t\u00e9"):
        with pytest.raises(InvalidCursor):
            await task_repository.list_tasks(TaskFilter(owner_id="x"), cursor=token)
    for size in (0, -1, 501):
        with pytest.raises(InvalidInputError):
            await task_repository.list_tasks(TaskFilter(owner_id="x"), limit=size)
