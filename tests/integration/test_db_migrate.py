"""The migration runner against a real PostgreSQL: once per file, serialized, append-only."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from escriba.common.settings import load
from escriba.db import (
    DatabaseSettings,
    DatabaseUnavailable,
    MigrationChecksumMismatch,
    MigrationError,
    migrate,
    run_migrations,
)
from escriba.db.migrate import advisory_lock_key, load_migrations
from escriba.db.settings import CHECKOUT_MIGRATIONS_DIR

pytestmark = pytest.mark.timeout(60)

REPO_MIGRATIONS = load_migrations(CHECKOUT_MIGRATIONS_DIR)
#: The version a new migration file would take after the repository's.
NEXT = REPO_MIGRATIONS[-1].version + 1


@pytest.fixture
async def schema(postgres_dsn: str) -> AsyncIterator[str]:
    name = f"mig_{uuid.uuid4().hex[:16]}"
    yield name
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def conn(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(CHECKOUT_MIGRATIONS_DIR, target)
    return target


async def _versions(conn: asyncpg.Connection, schema: str) -> list[int]:
    rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations ORDER BY version')
    return [row["version"] for row in rows]


async def _table_exists(conn: asyncpg.Connection, schema: str, table: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".{table}'))


def test_repository_migrations_are_numbered_and_cover_the_task_table() -> None:
    versions = [m.version for m in REPO_MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))
    assert "transcription_tasks" in REPO_MIGRATIONS[0].sql


async def test_first_run_applies_all_and_second_run_nothing(conn: asyncpg.Connection, schema: str) -> None:
    applied = await migrate(conn, schema, CHECKOUT_MIGRATIONS_DIR)
    assert [m.version for m in applied] == [m.version for m in REPO_MIGRATIONS]
    assert await _versions(conn, schema) == [m.version for m in REPO_MIGRATIONS]
    assert await _table_exists(conn, schema, "transcription_tasks")
    assert await _table_exists(conn, schema, "task_stage_results")
    # Objects went to the target schema only, and the connection's own search_path is untouched.
    assert not await _table_exists(conn, "public", "transcription_tasks")
    assert await conn.fetchval("SHOW search_path") == '"$user", public'

    assert await migrate(conn, schema, CHECKOUT_MIGRATIONS_DIR) == []
    assert await _versions(conn, schema) == [m.version for m in REPO_MIGRATIONS]
    checksums = await conn.fetch(f'SELECT version, checksum FROM "{schema}".schema_migrations')
    assert {r["version"]: r["checksum"] for r in checksums} == {
        m.version: m.checksum for m in REPO_MIGRATIONS
    }


async def test_concurrent_runs_both_succeed_and_apply_each_file_once(postgres_dsn: str, schema: str) -> None:
    conns = [await asyncpg.connect(postgres_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, schema, CHECKOUT_MIGRATIONS_DIR) for c in conns))
        applied = sorted(m.version for result in results for m in result)
        assert applied == [m.version for m in REPO_MIGRATIONS]
        assert await _versions(conns[0], schema) == applied
    finally:
        for c in conns:
            await c.close()


async def test_a_run_waits_for_the_lock_holder(
    postgres_dsn: str, conn: asyncpg.Connection, schema: str
) -> None:
    await conn.execute("SELECT pg_advisory_lock($1)", advisory_lock_key(schema))
    other = await asyncpg.connect(postgres_dsn)
    try:
        other_pid = other.get_server_pid()
        waiting = asyncio.create_task(migrate(other, schema, CHECKOUT_MIGRATIONS_DIR))
        for _ in range(500):
            blocked = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = $1",
                other_pid,
            )
            if blocked:
                break
            await asyncio.sleep(0.01)
        assert blocked == 1
        assert not waiting.done()
        assert not await _table_exists(conn, schema, "transcription_tasks")
        await conn.execute("SELECT pg_advisory_unlock($1)", advisory_lock_key(schema))
        applied = await asyncio.wait_for(waiting, timeout=30)
        assert [m.version for m in applied] == [m.version for m in REPO_MIGRATIONS]
    finally:
        await other.close()


async def test_lock_wait_is_bounded(postgres_dsn: str, conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute("SELECT pg_advisory_lock($1)", advisory_lock_key(schema))
    other = await asyncpg.connect(postgres_dsn)
    try:
        with pytest.raises(DatabaseUnavailable):
            await migrate(other, schema, CHECKOUT_MIGRATIONS_DIR, lock_timeout_s=0.2)
    finally:
        await other.close()
    assert not await _table_exists(conn, schema, "transcription_tasks")


async def test_edited_applied_file_is_refused(
    conn: asyncpg.Connection, schema: str, migrations_copy: Path
) -> None:
    await migrate(conn, schema, migrations_copy)
    (migrations_copy / f"{NEXT:04d}_later.sql").write_text("CREATE TABLE later (id integer);\n")
    first = migrations_copy / REPO_MIGRATIONS[0].path.name
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationChecksumMismatch, match=re.escape(first.name)):
        await migrate(conn, schema, migrations_copy)
    # Refused before anything ran: the new file was not applied either.
    assert not await _table_exists(conn, schema, "later")
    assert NEXT not in await _versions(conn, schema)


async def test_failing_file_is_rolled_back_and_retried(
    conn: asyncpg.Connection, schema: str, migrations_copy: Path
) -> None:
    bad = migrations_copy / f"{NEXT:04d}_add_things.sql"
    bad.write_text("CREATE TABLE things (id integer);\nSELECT 1 / 0;\n")
    with pytest.raises(MigrationError, match=re.escape(bad.name)):
        await migrate(conn, schema, migrations_copy)
    assert await _versions(conn, schema) == [m.version for m in REPO_MIGRATIONS]
    assert not await _table_exists(conn, schema, "things")

    bad.write_text("CREATE TABLE things (id integer);\n")
    applied = await migrate(conn, schema, migrations_copy)
    assert [m.version for m in applied] == [NEXT]
    assert await _table_exists(conn, schema, "things")


async def test_out_of_order_and_misnamed_files_are_refused(
    conn: asyncpg.Connection, schema: str, migrations_copy: Path
) -> None:
    # Numbers past the repository's own migrations: one applied, then one older than it appears.
    (migrations_copy / "0050_fifty.sql").write_text("CREATE TABLE fifty (id integer);\n")
    await migrate(conn, schema, migrations_copy)
    (migrations_copy / "0045_forty_five.sql").write_text("CREATE TABLE forty_five (id integer);\n")
    with pytest.raises(MigrationError, match="older than migration 50"):
        await migrate(conn, schema, migrations_copy)

    (migrations_copy / "0045_forty_five.sql").unlink()
    (migrations_copy / "11-eleven.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="NNNN_snake_case_name"):
        await migrate(conn, schema, migrations_copy)
    (migrations_copy / "11-eleven.sql").unlink()
    (migrations_copy / "0050_also_fifty.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="share version 50"):
        await migrate(conn, schema, migrations_copy)
    with pytest.raises(MigrationError, match="schema"):
        await migrate(conn, "Bad-Schema", migrations_copy)


async def test_run_migrations_from_settings(postgres_dsn: str, conn: asyncpg.Connection, schema: str) -> None:
    settings = load(
        DatabaseSettings, {"ESCRIBA_DATABASE_URL": postgres_dsn, "ESCRIBA_DATABASE_SCHEMA": schema}
    )
    applied = await run_migrations(settings)
    assert [m.version for m in applied] == [m.version for m in REPO_MIGRATIONS]
    assert await run_migrations(settings) == []
    assert await _versions(conn, schema) == [m.version for m in REPO_MIGRATIONS]
