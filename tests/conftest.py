"""Fixtures shared by every test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


# Fixture modules shared across suites (real servers started on free ports with temporary storage).
pytest_plugins: list[str] = [
    "tests.support.postgres_fixtures",
    "tests.support.nats_fixtures",
    "tests.support.stack_fixtures",
    "tests.support.s3",
    "tests.support.pipeline_fixtures",
]
