"""NATS fixtures: one real nats-server for the session, and a fresh prefix with its topology per test.

Every test gets its own ``BusNames`` prefix (streams ``T<hex>_JOBS``, buckets ``t<hex>-audio``...), so
tests share one server without seeing each other's jobs, and the topology is deleted afterwards. The
settings use short ack waits and backoff so redelivery paths run in seconds. A test that restarts or
kills the server takes ``nats_server_private`` instead of the shared one.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from escriba.bus import BusNames, NatsSettings, connect, delete_topology, ensure_topology
from escriba.local.nats import EmbeddedNats

#: Short enough that redelivery paths run in seconds, long enough for a loaded 2-core machine.
TEST_SETTINGS: dict[str, Any] = {
    "ack_wait_s": 2.0,
    "heartbeat_s": 0.4,
    "max_deliver": 3,
    "backoff_s": "0.1,0.2",
    "fetch_wait_s": 0.5,
    "stop_grace_s": 5.0,
    "startup_timeout_s": 10.0,
    "reconnect_wait_s": 0.2,
    "request_timeout_s": 5.0,
    # JetStream reserves every stream's cap against its store (75% of the free disk): tests hold several
    # topologies at once, so each gets small caps (about 1 GiB together) instead of the 7.5 GiB defaults.
    **{
        f"{name}_max_bytes": mib * 1024**2
        for name, mib in (
            ("jobs", 64),
            ("events", 32),
            ("webhooks", 16),
            ("audio", 512),
            ("normalized", 256),
            ("transcripts", 64),
            ("corrections", 32),
        )
    },
}


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def bus_settings(url: str, prefix: str | None = None, **overrides: Any) -> NatsSettings:
    """Settings for tests: the given server and prefix, short timings, ``overrides`` on top."""
    values = {**TEST_SETTINGS, **overrides}
    return NatsSettings(url=url, prefix=prefix or unique_prefix(), **values)


@dataclass
class Bus:
    """A connected client and a private, ready topology."""

    server: EmbeddedNats
    nc: Client
    js: JetStreamContext
    settings: NatsSettings

    @property
    def names(self) -> BusNames:
        return self.settings.names

    async def reconfigure(self, **overrides: Any) -> NatsSettings:
        """Apply other settings to this topology (consumers are updated in place)."""
        self.settings = dataclasses.replace(self.settings, **overrides)
        await ensure_topology(self.js, self.names, self.settings)
        return self.settings


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A real nats-server with JetStream, shared by the whole session (never restart this one)."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def nats_server_private(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A server of the test's own, for tests that restart or stop it."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.close()


async def open_bus(server: EmbeddedNats, **overrides: Any) -> Bus:
    settings = bus_settings(server.url, **overrides)
    nc = await connect(settings, name="escriba-tests")
    js = nc.jetstream(timeout=settings.request_timeout_s)
    await ensure_topology(js, settings.names, settings)
    return Bus(server=server, nc=nc, js=js, settings=settings)


async def close_bus(bus: Bus) -> None:
    if bus.nc.is_connected:
        await delete_topology(bus.js, bus.names)
    await bus.nc.close()


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    """A client on the shared server with a fresh prefix and its topology, deleted afterwards."""
    opened = await open_bus(nats_server)
    try:
        yield opened
    finally:
        await close_bus(opened)
