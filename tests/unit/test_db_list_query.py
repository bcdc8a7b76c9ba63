"""The ListTasks statement builder and its page tokens, without a server."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escriba.db.errors import InvalidCursor
from escriba.db.list_query import Cursor, build_list_query, decode_cursor, encode_cursor
from escriba.db.models import TaskFilter
from escriba.db.states import TaskStatus

# PostgreSQL's timestamptz keeps microseconds; tokens must reproduce them exactly or a page would
# repeat or skip the rows sharing the boundary's second.
timestamps = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(created_at=timestamps, task_id=st.uuids())
def test_cursor_round_trips_exactly(created_at: datetime, task_id: uuid.UUID) -> None:
    token = encode_cursor(created_at, task_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)  # safe in a URL or a proto string, no padding
    assert decode_cursor(token) == Cursor(created_at=created_at, id=task_id)


def test_cursor_accepts_other_timezones_and_string_ids() -> None:
    local = datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=UTC).astimezone()
    task_id = uuid.uuid4()
    decoded = decode_cursor(encode_cursor(local, str(task_id)))
    assert decoded.created_at == local and decoded.id == task_id


#: A fixed id, so the parameters (and the test ids) are the same in every collection.
_SOME_ID = "5b89efbb350e467c869c026373b1e1b7"


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not base64 at all!",
        "%%%",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _token([1, 2]),
        _token({"v": 2, "t": 0, "i": _SOME_ID}),
        _token({"v": 1, "t": "0", "i": _SOME_ID}),
        _token({"v": 1, "t": True, "i": _SOME_ID}),
        _token({"v": 1, "t": 0, "i": "zz"}),
        _token({"v": 1, "t": 10**30, "i": _SOME_ID}),
        _token({"v": 1, "i": _SOME_ID}),
    ],
)
def test_foreign_tokens_are_rejected(token: str) -> None:
    with pytest.raises(InvalidCursor) as err:
        decode_cursor(token)
    assert err.value.reason == "invalid_page_token"


def _placeholders(sql: str) -> list[int]:
    return sorted({int(n) for n in re.findall(r"\$(\d+)", sql)})


@pytest.mark.parametrize(
    ("task_filter", "fragments"),
    [
        (TaskFilter(), []),
        (TaskFilter(owner_id="o"), ["owner_id = $1"]),
        (TaskFilter(owner_id="o", archived=False), ["owner_id = $1", "is_archived = $2"]),
        (TaskFilter(statuses=(TaskStatus.QUEUED,)), ["status = $1"]),
        (
            TaskFilter(owner_id="o", statuses=(TaskStatus.FAILED, TaskStatus.QUEUED, TaskStatus.FAILED)),
            ["owner_id = $1", "status = ANY($2::text[])"],
        ),
    ],
)
def test_statement_has_only_the_filters_present(task_filter: TaskFilter, fragments: list[str]) -> None:
    sql, args = build_list_query(task_filter, cursor=None, limit=11, include_results=False)
    for fragment in fragments:
        assert fragment in sql
    assert sql.count("$") == len(args) == len(fragments) + 1  # every value is a parameter, LIMIT last
    assert _placeholders(sql) == list(range(1, len(args) + 1))
    assert sql.endswith(f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}")
    assert args[-1] == 11
    assert ("WHERE" in sql) is bool(fragments)


def test_values_never_enter_the_sql_text() -> None:
    owner = "o'; DROP TABLE transcription_tasks; --"
    position = Cursor(created_at=datetime(2026, 1, 1, tzinfo=UTC), id=uuid.uuid4())
    task_filter = TaskFilter(
        owner_id=owner, statuses=(TaskStatus.COMPLETED, TaskStatus.FAILED), archived=True
    )
    sql, args = build_list_query(task_filter, cursor=position, limit=5, include_results=True)
    assert "'" not in sql and "2026" not in sql and "DROP" not in sql  # no literal of any kind
    assert args == [owner, ["completed", "failed"], True, position.created_at, position.id, 5]
    assert "(created_at, id) < ($4, $5)" in sql


def test_results_columns_only_when_asked() -> None:
    light, _ = build_list_query(TaskFilter(), cursor=None, limit=1, include_results=False)
    full, _ = build_list_query(TaskFilter(), cursor=None, limit=1, include_results=True)
    for column in ("segments", "corrected_text", "formats", "edits"):
        assert column not in light and column in full


def test_same_filter_shape_gives_the_same_statement() -> None:
    # One prepared statement per shape: values differ, the text must not.
    a, _ = build_list_query(TaskFilter(owner_id="a"), cursor=None, limit=5, include_results=False)
    b, _ = build_list_query(TaskFilter(owner_id="b"), cursor=None, limit=50, include_results=False)
    later = Cursor(created_at=datetime.now(UTC) - timedelta(days=1), id=uuid.uuid4())
    c, _ = build_list_query(TaskFilter(owner_id="c"), cursor=later, limit=5, include_results=False)
    assert a == b != c
