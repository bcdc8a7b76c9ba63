"""The embedded PostgreSQL launcher: real binaries, a loopback port, data kept across restarts."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from escriba.local.postgres import EmbeddedPostgres, EmbeddedPostgresError, free_port

pytestmark = pytest.mark.timeout(120)


async def test_start_stop_restart_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    server = EmbeddedPostgres(data_dir, durable=False)
    async with server:
        assert server.running and server.dsn.startswith("postgresql://postgres@127.0.0.1:")
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute("CREATE TABLE kept (note text)")
            await conn.execute("INSERT INTO kept VALUES ('survives a restart')")
        finally:
            await conn.close()
        # A second launcher must not start another server on the same files.
        with pytest.raises(EmbeddedPostgresError, match="already running"):
            EmbeddedPostgres(data_dir).start()
        first_dsn = server.dsn
    assert not server.running
    server.stop()  # stopping a stopped server is a no-op
    with pytest.raises(OSError):
        await asyncpg.connect(first_dsn, timeout=5)

    async with EmbeddedPostgres(data_dir, durable=False) as again:
        conn = await asyncpg.connect(again.dsn)
        try:
            assert await conn.fetchval("SELECT note FROM kept") == "survives a restart"
        finally:
            await conn.close()
    assert (data_dir / "postgresql.log").exists()


def test_fixed_port_and_sync_context(tmp_path: Path) -> None:
    port = free_port()
    with EmbeddedPostgres(tmp_path / "pg", port=port, durable=False) as server:
        assert server.port == port and server.dsn.endswith(f":{port}/postgres")
    with pytest.raises(EmbeddedPostgresError):
        _ = server.dsn
