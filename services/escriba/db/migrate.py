"""``escriba migrate``: apply the numbered SQL files of ``migrations/`` to one schema, once each.

Several replicas may run it at the same time (an init container per pod), so the whole run holds a
session advisory lock keyed by the schema: the second runner waits, then finds nothing left to do.
Each file runs in its own transaction together with its ``schema_migrations`` row, so a failing file
leaves no half-applied state and the next run retries exactly that file. A file that was applied and
then edited is refused (its checksum changed): schema history is append-only, a fix is a new file.
Files must not contain statements that cannot run in a transaction (``CREATE INDEX CONCURRENTLY``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from escriba.db.errors import MigrationChecksumMismatch, MigrationError, database_errors, is_transient
from escriba.db.pool import connect, quote_ident
from escriba.db.settings import DatabaseSettings, schema_problem

_log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_]+)\.sql$")
_LOCK_NAMESPACE = b"escriba.migrate:"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    checksum: str


def load_migrations(directory: Path) -> list[Migration]:
    """The ``NNNN_name.sql`` files of ``directory`` in version order; other ``*.sql`` names are errors."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_case_name.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{path.name} and {found[version].path.name} share version {version}")
        data = path.read_bytes()
        found[version] = Migration(
            version=version,
            name=match["name"],
            path=path,
            sql=data.decode("utf-8"),
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [found[v] for v in sorted(found)]


def advisory_lock_key(schema: str) -> int:
    """A stable signed 64-bit key per schema, so migrations of different schemas do not wait on each other."""
    digest = hashlib.sha256(_LOCK_NAMESPACE + schema.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(
    target: Any, schema: str, migrations_dir: Path, *, lock_timeout_s: float | None = None
) -> list[Migration]:
    """Apply the pending migrations of ``migrations_dir`` to ``schema``; return those applied now.

    ``target`` is an asyncpg pool or connection. ``lock_timeout_s`` bounds the wait for a concurrent
    run (``None``: the connection's command timeout).
    """
    problem = schema_problem(schema)
    if problem:
        raise MigrationError(f"schema {problem}")
    migrations = load_migrations(migrations_dir)
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as conn:
            return await _migrate_locked(conn, schema, migrations, lock_timeout_s)
    return await _migrate_locked(target, schema, migrations, lock_timeout_s)


async def _migrate_locked(
    conn: Any, schema: str, migrations: list[Migration], lock_timeout_s: float | None
) -> list[Migration]:
    key = advisory_lock_key(schema)
    with database_errors(f"waiting for the migration lock of schema {schema}"):
        await conn.execute("SELECT pg_advisory_lock($1)", key, timeout=lock_timeout_s)
    try:
        return await _apply_pending(conn, schema, migrations)
    finally:
        with database_errors("releasing the migration lock"):
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def _apply_pending(conn: Any, schema: str, migrations: list[Migration]) -> list[Migration]:
    qschema = quote_ident(schema)
    with database_errors(f"preparing schema {schema}"):
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {qschema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {qschema}.schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch(f"SELECT version, name, checksum FROM {qschema}.schema_migrations")
    applied = {row["version"]: row for row in rows}

    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None and row["checksum"] != migration.checksum:
            raise MigrationChecksumMismatch(
                f"{migration.path.name} changed after it was applied to schema {schema} "
                f"(checksum {row['checksum'][:12]} in the database, {migration.checksum[:12]} on disk): "
                "restore it and put the change in a new migration"
            )
    latest = max(applied, default=0)
    pending = [m for m in migrations if m.version not in applied]
    for migration in pending:
        if migration.version < latest:
            raise MigrationError(
                f"{migration.path.name} is older than migration {latest}, already applied to schema "
                f"{schema}: renumber it after {latest}"
            )

    done: list[Migration] = []
    for migration in pending:
        with database_errors(f"applying {migration.path.name} to schema {schema}"):
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {qschema}")
                    await conn.execute(migration.sql)
                    await conn.execute(
                        f"INSERT INTO {qschema}.schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                if is_transient(exc):
                    raise
                raise MigrationError(
                    f"{migration.path.name} failed on schema {schema} and was rolled back: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        _log.info("applied migration %s to schema %s", migration.path.name, schema)
        done.append(migration)
    return done


async def run_migrations(settings: DatabaseSettings, dsn: str | None = None) -> list[Migration]:
    """The body of ``escriba migrate``: connect (with retries) to ``dsn`` or ``ESCRIBA_DATABASE_URL``
    and bring ``ESCRIBA_DATABASE_SCHEMA`` up to date."""
    migrations_dir = settings.resolved_migrations_dir()
    conn = await connect(settings, dsn)
    try:
        return await migrate(
            conn, settings.schema, migrations_dir, lock_timeout_s=settings.migrate_lock_timeout_s
        )
    finally:
        await conn.close()
