"""Streams, consumers and buckets are created idempotently, concurrently, and follow changed settings."""

from __future__ import annotations

import asyncio

import pytest
from nats.js import api

from escriba.bus import KvCache, Stage, TopologyError, connect, ensure_topology
from escriba.bus.topology import delete_topology
from escriba.local.nats import EmbeddedNats
from tests.support.nats_fixtures import Bus, bus_settings


@pytest.mark.timeout(60)
async def test_topology_from_four_services_at_once_then_again(nats_server: EmbeddedNats) -> None:
    settings = bus_settings(nats_server.url)
    names = settings.names
    clients = [await connect(settings, name=f"service-{i}") for i in range(4)]
    try:
        jss = [nc.jetstream() for nc in clients]
        results = await asyncio.gather(*(ensure_topology(js, names, settings) for js in jss))
        assert len(set(results)) == 1
        await ensure_topology(jss[0], names, settings)  # and once more, sequentially

        js = jss[0]
        jobs = await js.stream_info(names.jobs_stream)
        assert jobs.config.retention == api.RetentionPolicy.WORK_QUEUE
        assert sorted(jobs.config.subjects or []) == sorted(names.job_subjects)
        events = await js.stream_info(names.events_stream)
        assert events.config.retention == api.RetentionPolicy.LIMITS
        assert events.config.max_age == settings.events_max_age_s
        assert events.config.subjects == [names.events_wildcard]
        for stage in Stage:
            info = await js.consumer_info(names.jobs_stream, names.consumer(stage))
            assert info.config.durable_name == stage.value
            assert info.config.filter_subject == names.job_subject(stage)
            assert info.config.ack_policy == api.AckPolicy.EXPLICIT
            assert info.config.max_deliver == settings.max_deliver
            assert info.config.ack_wait == settings.ack_wait_s
            assert info.config.max_ack_pending == settings.max_ack_pending
        audio = await (await js.object_store(names.audio_bucket)).status()
        assert audio.ttl == settings.audio_ttl_s
        normalized = await (await js.object_store(names.normalized_bucket)).status()
        assert normalized.ttl == settings.normalized_ttl_s
        assert len(await js.streams_info()) >= 6
    finally:
        await delete_topology(clients[0].jetstream(), names)
        for nc in clients:
            await nc.close()


async def test_changed_settings_update_the_existing_topology(bus: Bus) -> None:
    settings = await bus.reconfigure(
        ack_wait_s=3.0,
        max_deliver=4,
        events_max_age_s=120.0,
        transcripts_ttl_s=3600.0,
        audio_ttl_s=0.0,
    )
    consumer = await bus.js.consumer_info(bus.names.jobs_stream, bus.names.consumer(Stage.CORRECTION))
    assert consumer.config.ack_wait == 3.0 and consumer.config.max_deliver == 4
    events = await bus.js.stream_info(bus.names.events_stream)
    assert events.config.max_age == 120.0
    transcripts = await KvCache.open(bus.js, bus.names.transcripts_bucket)
    assert await transcripts.ttl_s() == settings.transcripts_ttl_s
    audio = await (await bus.js.object_store(bus.names.audio_bucket)).status()
    assert not audio.ttl  # 0 = kept until deleted


async def test_a_change_jetstream_cannot_apply_is_reported(bus: Bus) -> None:
    # The events stream becomes a work queue behind our back: retention cannot be changed in place.
    await bus.js.delete_stream(bus.names.events_stream)
    await bus.js.add_stream(
        name=bus.names.events_stream,
        subjects=[bus.names.events_wildcard],
        retention=api.RetentionPolicy.WORK_QUEUE,
    )
    with pytest.raises(TopologyError, match=bus.names.events_stream):
        await ensure_topology(bus.js, bus.names, bus.settings)
