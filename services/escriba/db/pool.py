"""Connections to PostgreSQL: retried at start-up, pinned to the configured schema, JSON-aware.

Services start before (or together with) their database in a cluster and in the local stack, so the
first connection is retried with exponential backoff instead of crashing the pod into a restart loop.
Every pooled connection sets ``search_path`` to the configured schema at connect time, which lets the
SQL stay unqualified and lets tests give each test its own schema on one server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg

from escriba.common.settings import SettingsError
from escriba.db.errors import DatabaseError, DatabaseUnavailable, is_transient
from escriba.db.settings import DatabaseSettings

_log = logging.getLogger(__name__)

APPLICATION_NAME = "escriba"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _init_connection(conn: Any) -> None:
    # jsonb and json columns as Python values both ways, instead of strings.
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _dsn(settings: DatabaseSettings, dsn: str | None) -> str:
    url = dsn or settings.url
    if not url:
        raise SettingsError(
            "ESCRIBA_DATABASE_URL", "is empty: set it, or start the local stack (embedded PostgreSQL)"
        )
    return url


async def _with_retries(settings: DatabaseSettings, what: str, attempt_once: Any) -> Any:
    delay = settings.connect_backoff_s
    for attempt in range(1, settings.connect_attempts + 1):
        try:
            return await attempt_once()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            if not is_transient(exc):
                raise DatabaseError(f"{what}: {type(exc).__name__}: {exc}") from exc
            if attempt == settings.connect_attempts:
                raise DatabaseUnavailable(
                    f"{what}: PostgreSQL (ESCRIBA_DATABASE_URL) unreachable after {attempt} attempts: {exc}"
                ) from exc
            _log.warning(
                "PostgreSQL not reachable (attempt %d of %d), retrying in %.1f s: %s",
                attempt,
                settings.connect_attempts,
                delay,
                exc,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.connect_backoff_max_s)
    raise AssertionError("unreachable")  # pragma: no cover


async def create_pool(settings: DatabaseSettings, dsn: str | None = None) -> asyncpg.Pool:
    """A pool on ``dsn`` (default ``ESCRIBA_DATABASE_URL``) whose connections use ``settings.schema``.

    Returns once one query has succeeded, retrying per the connect settings; raises
    :class:`DatabaseUnavailable` when the server stays unreachable.
    """
    url = _dsn(settings, dsn)

    async def attempt() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            command_timeout=settings.command_timeout_s,
            timeout=settings.connect_timeout_s,
            init=_init_connection,
            server_settings={
                "search_path": quote_ident(settings.schema),
                "application_name": APPLICATION_NAME,
            },
        )
        try:
            await pool.fetchval("SELECT 1")
        except BaseException:
            pool.terminate()
            raise
        return pool

    pool: asyncpg.Pool = await _with_retries(settings, "connecting to PostgreSQL", attempt)
    return pool


async def connect(settings: DatabaseSettings, dsn: str | None = None) -> asyncpg.Connection:
    """One connection (for migrations and admin commands), retried like :func:`create_pool`.

    It has no command timeout: a migration may legitimately build an index for minutes.
    """
    url = _dsn(settings, dsn)

    async def attempt() -> asyncpg.Connection:
        return await asyncpg.connect(
            url,
            timeout=settings.connect_timeout_s,
            server_settings={"application_name": APPLICATION_NAME},
        )

    conn: asyncpg.Connection = await _with_retries(settings, "connecting to PostgreSQL", attempt)
    return conn
