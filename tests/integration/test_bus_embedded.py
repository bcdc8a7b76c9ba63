"""The embedded nats-server: found in the environment, restartable in place, survived by its clients."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from escriba.bus import BusUnavailableError, Job, JobWorker, Stage, connect, publish_job
from escriba.local.nats import EmbeddedNats, EmbeddedNatsError, find_nats_server
from tests.support.nats_fixtures import bus_settings, close_bus, open_bus
from tests.support.waiting import eventually


def test_the_binary_comes_from_the_environment() -> None:
    binary = find_nats_server()
    assert binary.name == "nats-server" and os.access(binary, os.X_OK)


@pytest.mark.timeout(60)
async def test_restart_keeps_the_url_and_the_streams(nats_server_private: EmbeddedNats) -> None:
    server = nats_server_private
    url = server.url
    bus = await open_bus(server)
    try:
        ack = await publish_job(
            bus.js,
            bus.names.job_subject(Stage.PREPROCESS),
            b"kept",
            task_id="t1",
            stage="preprocess",
            audio_duration_s=2.0,
        )
        await asyncio.to_thread(server.restart)
        assert server.url == url and server.running

        async def reconnected() -> bool:
            return bus.nc.is_connected

        await eventually(reconnected, what="the client to reconnect")
        stored = await bus.js.get_msg(bus.names.jobs_stream, ack.seq)
        assert stored.data == b"kept"
    finally:
        await close_bus(bus)


@pytest.mark.timeout(90)
async def test_a_worker_rides_out_a_server_restart(nats_server_private: EmbeddedNats) -> None:
    server = nats_server_private
    bus = await open_bus(server)
    seen: list[str | None] = []
    gave_up: list[Job] = []

    async def handler(job: Job) -> None:
        seen.append(job.task_id)

    async def on_give_up(job: Job, error: BaseException) -> None:
        gave_up.append(job)

    async def publish(task_id: str) -> None:
        await publish_job(
            bus.js,
            bus.names.job_subject(Stage.CORRECTION),
            b"x",
            task_id=task_id,
            stage="correction",
            audio_duration_s=1.0,
        )

    worker = JobWorker(
        bus.nc,
        stream=bus.names.jobs_stream,
        consumer=bus.names.consumer(Stage.CORRECTION),
        handler=handler,
        on_give_up=on_give_up,
        settings=bus.settings,
    )
    try:
        async with worker:
            await publish("before")
            await eventually(lambda: "before" in seen, what="the first job")
            await asyncio.to_thread(server.restart)
            await eventually(lambda: bus.nc.is_connected, what="the client to reconnect")
            await publish("after")
            await eventually(lambda: "after" in seen, timeout_s=30, what="a job after the restart")
    finally:
        await close_bus(bus)
    assert gave_up == []


@pytest.mark.timeout(30)
async def test_an_unreachable_server_fails_start_up_within_its_bound(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    url = server.url
    server.close()
    settings = bus_settings(url, startup_timeout_s=1.0, connect_timeout_s=0.5)
    with pytest.raises(BusUnavailableError, match=r"not reachable within 1s"):
        await connect(settings)


@pytest.mark.timeout(30)
def test_a_taken_port_is_reported_with_the_server_log(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "a") as first:
        second = EmbeddedNats(tmp_path / "b", port=first.port, start_timeout_s=10)
        with pytest.raises(EmbeddedNatsError, match=r"exited|did not accept"):
            second.start()
        assert not second.running
    assert not first.running


def test_a_server_of_its_own_cleans_up_its_directory() -> None:
    server = EmbeddedNats()
    store = server.store_dir
    with server:
        assert server.url.startswith("nats://127.0.0.1:")
        assert store.exists()
    assert not store.exists()
