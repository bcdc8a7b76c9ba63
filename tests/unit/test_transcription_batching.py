"""The batch-size table lookup and its validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escriba.transcription.batching import (
    MAX_BATCH_SIZE,
    BatchTable,
    check_batch_table,
    choose_batch_size,
    table_for_device,
)

TABLE: BatchTable = ((60.0, 4), (600.0, 8), (math.inf, 16))


@pytest.mark.parametrize(
    ("duration_s", "expected"),
    [(0.0, 4), (11.0, 4), (60.0, 4), (60.001, 8), (600.0, 8), (601.0, 16), (7200.0, 16)],
)
def test_first_row_whose_bound_covers_the_duration(duration_s: float, expected: int) -> None:
    assert choose_batch_size(duration_s, TABLE) == expected


def test_audio_past_the_last_bound_uses_the_last_size() -> None:
    assert choose_batch_size(5000.0, ((60.0, 2), (300.0, 6))) == 6


def test_empty_table_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        choose_batch_size(10.0, ())


tables = st.lists(
    st.tuples(st.floats(min_value=0.5, max_value=1e5), st.integers(min_value=1, max_value=MAX_BATCH_SIZE)),
    min_size=1,
    max_size=6,
    unique_by=lambda row: row[0],
).map(lambda rows: tuple(sorted(rows)))


@given(table=tables, duration_s=st.floats(min_value=0.0, max_value=2e5))
def test_lookup_matches_a_linear_scan(table: BatchTable, duration_s: float) -> None:
    assert check_batch_table(table) is None
    covering = [size for bound, size in table if duration_s <= bound]
    expected = covering[0] if covering else table[-1][1]
    assert choose_batch_size(duration_s, table) == expected


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ((), "at least one"),
        (((0.0, 4),), "> 0"),
        (((math.nan, 4),), "> 0"),
        (((60.0, 4), (60.0, 8)), "ascending"),
        (((600.0, 4), (60.0, 8)), "ascending"),
        (((60.0, 0),), "between 1"),
        (((60.0, MAX_BATCH_SIZE + 1),), "between 1"),
    ],
)
def test_bad_tables_are_explained(table: BatchTable, problem: str) -> None:
    message = check_batch_table(table)
    assert message is not None
    assert problem in message


def test_table_per_resolved_device() -> None:
    cpu: BatchTable = ((math.inf, 4),)
    cuda: BatchTable = ((math.inf, 32),)
    assert table_for_device("cpu", cpu=cpu, cuda=cuda) is cpu
    assert table_for_device("cuda", cpu=cpu, cuda=cuda) is cuda
    with pytest.raises(ValueError, match="resolve"):
        table_for_device("auto", cpu=cpu, cuda=cuda)
