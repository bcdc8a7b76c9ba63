"""Every stream and bucket has a size cap, set on create and on update, and a full one refuses new work
with a transient error instead of dropping queued work; at the gateway that is UNAVAILABLE, with the
reason, and the create leaves nothing behind."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import nats
import pytest
import pytest_asyncio
from nats.js import api
from nats.js.client import KV_STREAM_TEMPLATE, JetStreamContext
from nats.js.errors import APIError
from nats.js.object_store import OBJ_STREAM_TEMPLATE

from escriba.bus import (
    AudioStore,
    BusFullError,
    KvCache,
    Stage,
    TopologyError,
    publish_event,
    publish_job,
)
from escriba.bus.settings import MIB, NatsSettings
from escriba.bus.topology import jobs_stream_config, webhooks_stream_config
from escriba.client import EscribaClient, make_spec
from escriba.common.grpc_status import REASON_METADATA
from escriba.local.nats import LOCAL_MAX_FILE_STORE_BYTES, EmbeddedNats
from escriba.local.stack import LocalStack
from tests.support.nats_fixtures import Bus, close_bus, open_bus
from tests.support.stack import stack_config

pytestmark = pytest.mark.timeout(120)

CAP = 4 * MIB
#: Under the server's 1 MiB message limit, with room for headers.
FILLER = b"\0" * (900 * 1024)


def streams_and_caps(settings: NatsSettings) -> dict[str, tuple[int, api.DiscardPolicy]]:
    names = settings.names
    return {
        names.jobs_stream: (settings.jobs_max_bytes, api.DiscardPolicy.NEW),
        names.events_stream: (settings.events_max_bytes, api.DiscardPolicy.OLD),
        names.webhooks_stream: (settings.webhooks_max_bytes, api.DiscardPolicy.NEW),
        OBJ_STREAM_TEMPLATE.format(bucket=names.audio_bucket): (
            settings.audio_max_bytes,
            api.DiscardPolicy.NEW,
        ),
        OBJ_STREAM_TEMPLATE.format(bucket=names.normalized_bucket): (
            settings.normalized_max_bytes,
            api.DiscardPolicy.NEW,
        ),
        KV_STREAM_TEMPLATE.format(bucket=names.transcripts_bucket): (
            settings.transcripts_max_bytes,
            api.DiscardPolicy.NEW,
        ),
        KV_STREAM_TEMPLATE.format(bucket=names.corrections_bucket): (
            settings.corrections_max_bytes,
            api.DiscardPolicy.NEW,
        ),
    }


async def test_every_stream_and_bucket_is_capped_with_its_discard_policy(bus: Bus) -> None:
    expected = streams_and_caps(bus.settings)
    found = {s.config.name: s.config for s in await bus.js.streams_info()}
    ours = {name: config for name, config in found.items() if name in expected}
    assert ours.keys() == expected.keys()
    for name, (cap, discard) in expected.items():
        assert (ours[name].max_bytes, ours[name].discard) == (cap, discard), name
    # The default caps fit the official nats chart's 10 GiB file store (JetStream reserves them).
    defaults = NatsSettings()
    assert sum(cap for cap, _ in streams_and_caps(defaults).values()) < 10 * 1024**3


async def test_an_uncapped_topology_of_an_earlier_version_is_capped_on_update(
    nats_server: EmbeddedNats,
) -> None:
    bus = await open_bus(nats_server)
    try:
        # What the previous release created: no caps, and the work queues discarding old messages.
        names = bus.names
        for config in (jobs_stream_config(names, bus.settings), webhooks_stream_config(names, bus.settings)):
            await bus.js.update_stream(config.evolve(max_bytes=-1, discard=api.DiscardPolicy.OLD))
        for bucket in (names.audio_bucket, names.normalized_bucket):
            info = await bus.js.stream_info(OBJ_STREAM_TEMPLATE.format(bucket=bucket))
            await bus.js.update_stream(info.config.evolve(max_bytes=-1))
        for bucket in (names.transcripts_bucket, names.corrections_bucket):
            info = await bus.js.stream_info(KV_STREAM_TEMPLATE.format(bucket=bucket))
            await bus.js.update_stream(info.config.evolve(max_bytes=-1))

        settings = await bus.reconfigure(
            jobs_max_bytes=CAP, audio_max_bytes=8 * MIB, transcripts_max_bytes=CAP
        )
        found = {s.config.name: s.config for s in await bus.js.streams_info()}
        for name, (cap, discard) in streams_and_caps(settings).items():
            assert (found[name].max_bytes, found[name].discard) == (cap, discard), name
    finally:
        await close_bus(bus)


@pytest.fixture
async def small_bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    opened = await open_bus(
        nats_server,
        jobs_max_bytes=CAP,
        audio_max_bytes=CAP,
        transcripts_max_bytes=CAP,
        events_max_bytes=CAP,
    )
    try:
        yield opened
    finally:
        await close_bus(opened)


async def fill_jobs(js: JetStreamContext, subject: str, *, smallest: int = len(FILLER)) -> int:
    """Publish filler jobs until the stream refuses one, then smaller ones down to ``smallest``
    bytes; the number stored."""
    stored = 0
    size = len(FILLER)
    while size >= smallest:
        try:
            await publish_job(
                js, subject, FILLER[:size], task_id=f"filler-{stored}", stage="filler", audio_duration_s=0
            )
        except BusFullError as exc:
            assert "ESCRIBA_NATS_" in str(exc) and "full" in str(exc)
            assert exc.transient and exc.reason == "nats_full"
            size //= 4
            continue
        stored += 1
        assert stored < 1000, "the job stream never refused a publish"
    return stored


async def test_a_full_job_queue_refuses_new_jobs_and_keeps_the_queued_ones(small_bus: Bus) -> None:
    subject = small_bus.names.job_subject(Stage.CORRECTION)
    stored = await fill_jobs(small_bus.js, subject)
    assert stored == CAP // len(FILLER)
    info = await small_bus.js.stream_info(small_bus.names.jobs_stream)
    # Every queued job is still there, the first one included: nothing was discarded to make room.
    assert info.state.messages == stored and info.state.first_seq == 1
    # Once a worker has taken a job, there is room again.
    consumer = small_bus.names.consumer(Stage.CORRECTION)
    sub = await small_bus.js.pull_subscribe_bind(consumer, small_bus.names.jobs_stream)
    (msg,) = await sub.fetch(1, timeout=5)
    await msg.ack_sync()
    await publish_job(small_bus.js, subject, FILLER, task_id="after", stage="filler", audio_duration_s=0)


async def test_a_full_object_store_refuses_an_upload_and_keeps_nothing_of_it(small_bus: Bus) -> None:
    store = await AudioStore.open(small_bus.js, small_bus.names.audio_bucket)
    await store.put_bytes("kept", os.urandom(3 * MIB))
    with pytest.raises(BusFullError, match="full"):
        await store.put_bytes("too-much", os.urandom(2 * MIB))
    assert not await store.exists("too-much")
    assert len(await store.get_bytes("kept")) == 3 * MIB
    info = await small_bus.js.stream_info(OBJ_STREAM_TEMPLATE.format(bucket=small_bus.names.audio_bucket))
    assert (info.state.bytes or 0) < 3 * MIB + 64 * 1024  # the refused object's chunks were purged


async def test_a_full_cache_stops_caching_without_failing(small_bus: Bus) -> None:
    cache = await KvCache.open(small_bus.js, small_bus.names.transcripts_bucket)
    results = [await cache.put(f"key-{i}", FILLER) for i in range(6)]
    assert results[0] is True and results[-1] is False
    assert await cache.get("key-0") == FILLER


async def test_a_full_event_stream_drops_its_oldest_events(small_bus: Bus) -> None:
    for i in range(6):
        await publish_event(small_bus.js, small_bus.names, "task-1", FILLER, msg_id=f"e{i}")
    info = await small_bus.js.stream_info(small_bus.names.events_stream)
    assert info.state.first_seq > 1 and info.state.last_seq == 6


async def test_a_cap_below_what_a_queue_holds_is_refused(small_bus: Bus) -> None:
    subject = small_bus.names.job_subject(Stage.PREPROCESS)
    for i in range(3):
        await publish_job(small_bus.js, subject, FILLER, task_id=f"t{i}", stage="filler", audio_duration_s=0)
    with pytest.raises(TopologyError, match="would delete queued"):
        await small_bus.reconfigure(jobs_max_bytes=CAP // 2)
    info = await small_bus.js.stream_info(small_bus.names.jobs_stream)
    assert info.state.messages == 3 and info.config.max_bytes == CAP


# At the gateway --------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    env = {"ESCRIBA_NATS_JOBS_MAX_BYTES": str(CAP), "ESCRIBA_NATS_AUDIO_MAX_BYTES": str(CAP)}
    async with LocalStack(stack_config(nats_server.url, postgres_dsn, env=env)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(stack: LocalStack) -> AsyncIterator[EscribaClient]:
    async with EscribaClient(stack.address) as c:
        yield c


async def refusal(client: EscribaClient, path: Path) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create_task(path, make_spec(path.name))
    return err.value


def reason(error: grpc.aio.AioRpcError) -> str:
    return str(dict(error.trailing_metadata() or ()).get(REASON_METADATA, ""))


@pytest.mark.asyncio(loop_scope="module")
async def test_an_upload_into_a_full_audio_store_is_unavailable_and_stores_nothing(
    client: EscribaClient, stack: LocalStack, tmp_path: Path
) -> None:
    assert stack.runtime is not None
    pipeline = stack.runtime.pipeline
    rows = await pipeline.pool.fetchval("SELECT count(*) FROM transcription_tasks")
    path = tmp_path / "big.wav"
    path.write_bytes(os.urandom(CAP + MIB))
    error = await refusal(client, path)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(error) == "nats_full" and "full" in (error.details() or "")
    assert await pipeline.pool.fetchval("SELECT count(*) FROM transcription_tasks") == rows
    info = await pipeline.js.stream_info(OBJ_STREAM_TEMPLATE.format(bucket=pipeline.names.audio_bucket))
    assert (info.state.bytes or 0) < MIB
    # The OpenAI-compatible HTTP API says the same: 503, a server error worth retrying, and why.
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field(
        "file", io.BytesIO(path.read_bytes()), filename="big.wav", content_type="application/octet-stream"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.http_url + "/audio/transcriptions", data=form) as response,
    ):
        body = await response.json()
    assert response.status == 503, body
    assert body["error"]["code"] == "nats_full" and body["error"]["type"] == "server_error"


@pytest.mark.asyncio(loop_scope="module")
async def test_a_create_into_a_full_job_queue_is_unavailable_and_says_why(
    client: EscribaClient, stack: LocalStack, data_dir: Path
) -> None:
    assert stack.runtime is not None
    pipeline = stack.runtime.pipeline
    # A model route no worker serves: its jobs stay queued and fill the stream.
    subject = pipeline.names.job_subject(Stage.TRANSCRIPTION, "nobody")
    await fill_jobs(pipeline.js, subject, smallest=1)
    try:
        error = await refusal(client, data_dir / "jfk.flac")
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "full" in (error.details() or ""), error.details()
        failed = await pipeline.pool.fetchrow(
            "SELECT status, error_reason, error FROM transcription_tasks ORDER BY created_at DESC LIMIT 1"
        )
        assert failed["status"] == "failed" and failed["error_reason"] == "enqueue_failed"
        assert "full" in failed["error"]
    finally:
        await pipeline.js.purge_stream(pipeline.names.jobs_stream, subject=subject)
    # Transient: with room again, the same create goes through.
    task = await client.create_task(data_dir / "jfk.flac", make_spec("jfk.flac"))
    assert task.id


async def test_the_local_stacks_server_takes_caps_beyond_three_quarters_of_the_free_disk(
    tmp_path: Path,
) -> None:
    """JetStream reserves a stream's cap against its store limit, 75% of the free disk by default: on a
    full laptop the default caps would be refused, so the local stack's server raises the limit."""
    beyond = shutil.disk_usage(tmp_path).free  # more than a default server has room for
    for limit, refused in ((None, True), (LOCAL_MAX_FILE_STORE_BYTES, False)):
        server = EmbeddedNats(tmp_path / f"nats-{limit}", max_file_store_bytes=limit)
        server.start()
        try:
            nc = await nats.connect(server.url)
            try:
                create = nc.jetstream().add_stream(name="BIG", subjects=["big"], max_bytes=beyond)
                if refused:
                    with pytest.raises(APIError, match="insufficient storage"):
                        await create
                else:
                    await create
            finally:
                await nc.close()
        finally:
            server.close()
