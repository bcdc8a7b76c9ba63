"""Pools reach the configured schema only, decode jsonb, and report an unreachable server as transient."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from escriba.common.settings import SettingsError, load
from escriba.db import (
    DatabaseError,
    DatabaseSettings,
    DatabaseUnavailable,
    NewTask,
    TaskRepository,
    create_pool,
)
from escriba.db.settings import CHECKOUT_MIGRATIONS_DIR
from escriba.local.postgres import free_port

pytestmark = pytest.mark.timeout(60)


async def test_each_schema_sees_only_its_own_tasks(
    db_pool: Any, db_settings: DatabaseSettings, postgres_dsn: str
) -> None:
    await TaskRepository(db_pool).create(NewTask(owner_id="x", options={"nested": {"list": [1, 2]}}))
    other = load(
        DatabaseSettings,
        {"ESCRIBA_DATABASE_URL": postgres_dsn, "ESCRIBA_DATABASE_SCHEMA": f"other_{uuid.uuid4().hex[:8]}"},
    )
    pool = await create_pool(other)
    try:
        # search_path points at an empty schema: the table is not visible at all.
        assert await pool.fetchval("SELECT to_regclass('transcription_tasks')") is None
        assert await pool.fetchval("SHOW search_path") == f'"{other.schema}"'
    finally:
        await pool.close()
    assert await db_pool.fetchval("SELECT options FROM transcription_tasks") == {"nested": {"list": [1, 2]}}
    assert await db_pool.fetchval("SHOW search_path") == f'"{db_settings.schema}"'


async def test_unreachable_server_is_transient_after_retries() -> None:
    settings = load(
        DatabaseSettings,
        {
            "ESCRIBA_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
            "ESCRIBA_DATABASE_CONNECT_ATTEMPTS": "2",
            "ESCRIBA_DATABASE_CONNECT_BACKOFF_S": "0.05",
            "ESCRIBA_DATABASE_CONNECT_TIMEOUT_S": "2",
        },
    )
    with pytest.raises(DatabaseUnavailable, match="after 2 attempts") as err:
        await create_pool(settings)
    assert err.value.transient and isinstance(err.value.__cause__, OSError)


async def test_wrong_database_is_not_retried(postgres_dsn: str) -> None:
    settings = load(
        DatabaseSettings,
        {
            "ESCRIBA_DATABASE_URL": postgres_dsn.rsplit("/", 1)[0] + "/no_such_database",
            "ESCRIBA_DATABASE_CONNECT_ATTEMPTS": "5",
            "ESCRIBA_DATABASE_CONNECT_BACKOFF_S": "30",
        },
    )
    # Retrying cannot create the database: fail at once (a retry would wait 30 s here).
    with pytest.raises(DatabaseError, match="no_such_database") as err:
        await create_pool(settings)
    assert not err.value.transient


async def test_empty_url_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="ESCRIBA_DATABASE_URL"):
        await create_pool(load(DatabaseSettings, {}))


def test_migrations_dir_resolution(tmp_path: Path) -> None:
    # In a checkout the packaged path is a symlink to migrations/ at the top; a wheel holds copies.
    default = load(DatabaseSettings, {}).resolved_migrations_dir()
    assert default.resolve() == CHECKOUT_MIGRATIONS_DIR.resolve()
    assert sorted(p.name for p in default.glob("*.sql")) == sorted(
        p.name for p in CHECKOUT_MIGRATIONS_DIR.glob("*.sql")
    )
    explicit = load(DatabaseSettings, {"ESCRIBA_DATABASE_MIGRATIONS_DIR": str(tmp_path)})
    assert explicit.resolved_migrations_dir() == tmp_path
    missing = load(DatabaseSettings, {"ESCRIBA_DATABASE_MIGRATIONS_DIR": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="ESCRIBA_DATABASE_MIGRATIONS_DIR"):
        missing.resolved_migrations_dir()
