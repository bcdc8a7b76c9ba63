"""The in-process local stack most end-to-end tests run against, one per test module.

A module that needs other settings defines its own ``stack`` fixture; ``client`` then follows it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from escriba.client import EscribaClient
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from tests.support.stack import stack_config


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    async with LocalStack(stack_config(nats_server.url, postgres_dsn)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(stack: LocalStack) -> AsyncIterator[EscribaClient]:
    async with EscribaClient(stack.address) as c:
        yield c
