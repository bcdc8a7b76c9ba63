"""A started pipeline runtime (real NATS and PostgreSQL, private names) for tests of the task layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from escriba.bus import delete_topology
from escriba.db.settings import DatabaseSettings
from escriba.local.nats import EmbeddedNats
from escriba.pipeline.runtime import Pipeline, PipelineRuntime
from tests.support.nats_fixtures import bus_settings


@pytest.fixture
async def pipeline(
    nats_server: EmbeddedNats, db_settings: DatabaseSettings, db_pool: Any
) -> AsyncIterator[Pipeline]:
    runtime = PipelineRuntime(bus_settings(nats_server.url), db_settings, client_name="pipeline-tests")
    await runtime.start()
    try:
        yield runtime.pipeline
    finally:
        await delete_topology(runtime.pipeline.js, runtime.pipeline.names)
        await runtime.stop()
