"""PostgreSQL for tests: one embedded server per session, one fresh schema per test.

Starting a server costs about a second; a schema costs milliseconds. So the server lives for the
session (non-durable: fsync off) and every test gets its own schema with the migrations applied and
dropped afterwards, which keeps tests independent without truncating tables.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from escriba.common.settings import load
from escriba.db.migrate import migrate
from escriba.db.pool import create_pool, quote_ident
from escriba.db.settings import DatabaseSettings
from escriba.db.tasks import TaskRepository
from escriba.local.postgres import EmbeddedPostgres


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data", durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: EmbeddedPostgres) -> str:
    return postgres_server.dsn


@pytest.fixture
def db_settings(postgres_dsn: str) -> DatabaseSettings:
    """Settings for a schema no other test uses (not created yet: ``db_pool`` migrates it)."""
    return load(
        DatabaseSettings,
        {
            "ESCRIBA_DATABASE_URL": postgres_dsn,
            "ESCRIBA_DATABASE_SCHEMA": f"test_{uuid.uuid4().hex[:16]}",
            "ESCRIBA_DATABASE_POOL_MIN_SIZE": "1",
            "ESCRIBA_DATABASE_POOL_MAX_SIZE": "4",
            "ESCRIBA_DATABASE_CONNECT_ATTEMPTS": "3",
            "ESCRIBA_DATABASE_COMMAND_TIMEOUT_S": "60",
        },
    )


@pytest.fixture
async def db_pool(db_settings: DatabaseSettings) -> AsyncIterator[Any]:
    """An asyncpg pool on ``db_settings.schema`` with every migration applied; the schema is dropped after."""
    pool = await create_pool(db_settings)
    try:
        await migrate(pool, db_settings.schema, db_settings.resolved_migrations_dir())
        yield pool
    finally:
        try:
            await pool.execute(f"DROP SCHEMA IF EXISTS {quote_ident(db_settings.schema)} CASCADE")
        finally:
            await pool.close()


@pytest.fixture
def task_repository(db_pool: Any) -> TaskRepository:
    return TaskRepository(db_pool)
