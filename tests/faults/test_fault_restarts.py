"""NATS (JetStream on disk) and PostgreSQL restarted in the middle of a run: every task still completes.

The scenarios own their servers (a private nats-server with its store directory and a PostgreSQL
cluster on a fixed port), so they can stop and start them on the same address while the services keep
running; the services must reconnect by themselves and finish every task they had accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from escriba.client import EscribaClient
from escriba.local.nats import EmbeddedNats
from escriba.local.postgres import EmbeddedPostgres, free_port
from escriba.local.stack import LocalStack
from tests.faults.scenario import FaultRun, assert_clean, distinct_clips, fault_config, write_clips
from tests.support.ledger import Ledger

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

#: How long each server stays down: longer than a reconnect attempt, shorter than the retry budget.
DOWN_S = 2.0


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("fault-nats"))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    # A fixed port: a restarted server must come back where the services' URL points.
    data_dir = tmp_path_factory.mktemp("fault-postgres") / "data"
    server = EmbeddedPostgres(data_dir, port=free_port(), durable=False)
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(own_nats: EmbeddedNats, own_postgres: EmbeddedPostgres) -> AsyncIterator[LocalStack]:
    async with LocalStack(fault_config(own_nats.url, own_postgres.dsn, mode="processes")) as running:
        yield running


async def test_nats_restart_during_50_tasks(
    stack: LocalStack, own_nats: EmbeddedNats, fault_ledger: Ledger, tmp_path: Path
) -> None:
    paths = write_clips(tmp_path, distinct_clips(50, seed=31))
    run = FaultRun("nats-restart", stack, fault_ledger)
    async with EscribaClient(stack.address) as client, run:
        await run.submit_all(client, paths)
        await run.wait_for_terminal(5)
        await asyncio.to_thread(own_nats.stop)
        await asyncio.sleep(DOWN_S)
        assert await asyncio.to_thread(own_nats.start) == stack.nats_url
        assert await run.terminal_count() < len(paths), "the run was over before the restart"
        result = await run.settle(timeout_s=240)
    assert_clean(result, completed=len(paths))


async def test_postgres_restart_during_a_run(
    stack: LocalStack, own_postgres: EmbeddedPostgres, fault_ledger: Ledger, tmp_path: Path
) -> None:
    paths = write_clips(tmp_path, distinct_clips(30, seed=41))
    run = FaultRun("postgres-restart", stack, fault_ledger)
    async with EscribaClient(stack.address) as client, run:
        await run.submit_all(client, paths)
        await run.wait_for_terminal(3)
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.sleep(DOWN_S)
        assert await asyncio.to_thread(own_postgres.start) == stack.database_url
        assert await run.terminal_count() < len(paths), "the run was over before the restart"
        result = await run.settle(timeout_s=240)
        assert_clean(result, completed=len(paths))
        # The gateway takes new work again now that the database is back.
        more = write_clips(tmp_path, distinct_clips(3, seed=42), prefix="after")
        await run.submit_all(client, more)
        result = await run.settle(timeout_s=120)
    assert_clean(result, completed=len(paths) + len(more))
