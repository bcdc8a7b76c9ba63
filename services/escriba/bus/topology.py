"""Create the streams, consumers and buckets at start-up, idempotently.

Every service calls :func:`ensure_topology` when it starts, so there is no ordering between deployments and
no separate set-up job; several replicas doing it at once is fine because JetStream accepts a create with
an identical configuration. When a setting changed (a TTL, the ack wait) the existing stream or consumer
is updated in place; a change JetStream cannot apply in place (a retention policy) is reported as a
:class:`TopologyError` instead of being papered over.

Every stream and bucket has a size cap (``ESCRIBA_NATS_*_MAX_BYTES``), applied on create and on
update. What happens at the cap is chosen per use: the work queues (jobs, webhooks) and the object
stores discard *new* messages, so a full queue refuses the publisher (a transient ``nats_full``
error: the gateway answers UNAVAILABLE, a stage naks and retries its hand-on) and never drops work
already queued or a chunk of an object being read; the events stream discards *old* events, which
are best-effort (a watcher re-reads PostgreSQL); the KV caches refuse new entries, which
:class:`~escriba.bus.kv.KvCache` turns into "not cached". A cap lowered below what a discard-new
stream already holds is refused rather than applied: JetStream would make room by deleting the
oldest messages, i.e. queued jobs.

Retry backoff is applied by the worker with ``nak(delay=...)``, not with the consumer's ``backoff`` list:
JetStream's ``backoff`` replaces ``ack_wait`` for each delivery (so heartbeats would have to beat the
shortest retry delay) and stretches every ``nak`` delay by the difference between the two.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats.errors
from nats.js import api
from nats.js.client import KV_STREAM_TEMPLATE, JetStreamContext
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.object_store import OBJ_STREAM_TEMPLATE

from escriba.bus.errors import BusUnavailableError, TopologyError
from escriba.bus.names import BusNames, Stage
from escriba.bus.settings import NatsSettings

log = logging.getLogger(__name__)

# JetStream's "stream name already in use with a different configuration".
_ERR_STREAM_CONFIG_DIFFERS = 10058
# The KV client's own default dedupe window (it lowers it to the TTL when that is shorter).
_KV_DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class Topology:
    """What :func:`ensure_topology` made sure exists (for logs and tests)."""

    streams: tuple[str, ...]
    consumers: tuple[str, ...]
    object_buckets: tuple[str, ...]
    kv_buckets: tuple[str, ...]


def jobs_stream_config(names: BusNames, settings: NatsSettings) -> api.StreamConfig:
    return api.StreamConfig(
        name=names.jobs_stream,
        description="Escriba jobs for every pipeline stage (work queue: removed once acknowledged)",
        subjects=list(names.job_subjects),
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.NEW,
        max_bytes=settings.jobs_max_bytes,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
    )


def events_stream_config(names: BusNames, settings: NatsSettings) -> api.StreamConfig:
    return api.StreamConfig(
        name=names.events_stream,
        description="Escriba task events, kept briefly so a late watcher sees recent progress",
        subjects=[names.events_wildcard],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        max_bytes=settings.events_max_bytes,
        max_age=settings.events_max_age_s,
        num_replicas=settings.replicas,
        duplicate_window=min(settings.duplicate_window_s, settings.events_max_age_s),
    )


def webhooks_stream_config(names: BusNames, settings: NatsSettings) -> api.StreamConfig:
    return api.StreamConfig(
        name=names.webhooks_stream,
        description="Escriba webhook deliveries (work queue: removed once delivered or given up)",
        subjects=[names.webhook_subject],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.NEW,
        max_bytes=settings.webhooks_max_bytes,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
    )


def consumer_config(
    names: BusNames, stage: Stage, settings: NatsSettings, route: str | None = None
) -> api.ConsumerConfig:
    consumer = names.consumer(stage, route)
    return api.ConsumerConfig(
        name=consumer,
        durable_name=consumer,
        description=f"Escriba {stage.value} workers" + (f" of model {route}" if route else ""),
        filter_subject=names.job_subject(stage, route),
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_ack_pending,
        replay_policy=api.ReplayPolicy.INSTANT,
        num_replicas=settings.replicas,
    )


def _ttl(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


async def ensure_topology(
    js: JetStreamContext, names: BusNames, settings: NatsSettings, routes: Sequence[str] = ()
) -> Topology:
    """Create or update every stream, consumer and bucket of ``names``, and a transcription consumer
    per model route (``routes``: the catalogue's models but the default); safe to call concurrently."""
    try:
        await _ensure_stream(js, jobs_stream_config(names, settings))
        await _ensure_stream(js, events_stream_config(names, settings))
        await _ensure_stream(js, webhooks_stream_config(names, settings))
        for stage in Stage:
            await ensure_consumer(js, names.jobs_stream, consumer_config(names, stage, settings))
        for route in routes:
            await ensure_consumer(
                js, names.jobs_stream, consumer_config(names, Stage.TRANSCRIPTION, settings, route)
            )
        for bucket, ttl_s, max_bytes in (
            (names.audio_bucket, settings.audio_ttl_s, settings.audio_max_bytes),
            (names.normalized_bucket, settings.normalized_ttl_s, settings.normalized_max_bytes),
        ):
            await _ensure_object_store(js, bucket, _Limits(ttl_s, max_bytes, settings.replicas))
        for bucket, ttl_s, max_bytes in (
            (names.transcripts_bucket, settings.transcripts_ttl_s, settings.transcripts_max_bytes),
            (names.corrections_bucket, settings.corrections_ttl_s, settings.corrections_max_bytes),
        ):
            await _ensure_kv(js, bucket, _Limits(ttl_s, max_bytes, settings.replicas))
    except TimeoutError as exc:
        raise BusUnavailableError(f"JetStream did not answer while creating {names.prefix} topology") from exc
    except nats.errors.ConnectionClosedError as exc:
        raise BusUnavailableError("the NATS connection closed while creating the topology") from exc
    topology = Topology(
        streams=(names.jobs_stream, names.events_stream, names.webhooks_stream),
        consumers=(
            *(names.consumer(stage) for stage in Stage),
            *(names.consumer(Stage.TRANSCRIPTION, route) for route in routes),
        ),
        object_buckets=(names.audio_bucket, names.normalized_bucket),
        kv_buckets=(names.transcripts_bucket, names.corrections_bucket),
    )
    log.info("jetstream topology ready", extra={"nats_prefix": names.prefix})
    return topology


async def delete_topology(js: JetStreamContext, names: BusNames) -> None:
    """Delete every stream and bucket of ``names`` with their data (tests, ``escriba`` clean-ups)."""
    streams = [
        names.jobs_stream,
        names.events_stream,
        names.webhooks_stream,
        *(OBJ_STREAM_TEMPLATE.format(bucket=b) for b in (names.audio_bucket, names.normalized_bucket)),
        *(KV_STREAM_TEMPLATE.format(bucket=b) for b in (names.transcripts_bucket, names.corrections_bucket)),
    ]
    for stream in streams:
        try:
            await js.delete_stream(stream)
        except NotFoundError:
            continue


@dataclass(frozen=True)
class _Limits:
    """A bucket's TTL (0 = none), size cap and replicas."""

    ttl_s: float
    max_bytes: int
    replicas: int

    @property
    def ttl(self) -> float | None:
        return _ttl(self.ttl_s)


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    async def update() -> None:
        info = await js.stream_info(config.name or "")
        _check_cap_keeps_messages(f"stream {config.name}", config, info)
        await js.update_stream(config)

    await _create_or_update(f"stream {config.name}", lambda: js.add_stream(config), update)


def _check_cap_keeps_messages(what: str, config: api.StreamConfig, info: api.StreamInfo) -> None:
    """Refuse a cap below what a discard-new stream holds: JetStream would delete its oldest
    messages (queued jobs, chunks of stored objects) to fit, whatever the discard policy."""
    held = info.state.bytes or 0
    cap = config.max_bytes or -1
    if config.discard == api.DiscardPolicy.NEW and 0 < cap < held:
        raise TopologyError(
            f"{what} holds {held} bytes, more than its new cap of {cap}: lowering it would delete queued"
            " messages; raise the cap or let the stream drain first"
        )


async def ensure_consumer(js: JetStreamContext, stream: str, config: api.ConsumerConfig) -> None:
    # JetStream's consumer create is already create-or-update; a refused update is a topology error.
    try:
        await js.add_consumer(stream, config)
    except ServiceUnavailableError as exc:
        raise BusUnavailableError(f"JetStream is not available to create consumer {config.name}") from exc
    except APIError as exc:
        raise TopologyError(
            f"consumer {config.name} on {stream} cannot be created or updated: {exc}"
        ) from exc


async def _ensure_object_store(js: JetStreamContext, bucket: str, limits: _Limits) -> None:
    async def create() -> object:
        # nats-py creates object stores with DiscardNew: a full store refuses a new object (whose
        # chunks it then purges) instead of dropping chunks of objects being read.
        config = api.ObjectStoreConfig(
            ttl=limits.ttl,
            max_bytes=limits.max_bytes,
            replicas=limits.replicas,
            storage=api.StorageType.FILE,
            description="Escriba audio",
        )
        return await js.create_object_store(bucket, config=config)

    async def update() -> None:
        what = f"object store {bucket}"
        info = await js.stream_info(OBJ_STREAM_TEMPLATE.format(bucket=bucket))
        config = info.config.evolve(
            max_age=limits.ttl, max_bytes=limits.max_bytes, num_replicas=limits.replicas
        )
        _check_cap_keeps_messages(what, config, info)
        await js.update_stream(config)

    await _create_or_update(f"object store {bucket}", create, update)


async def _ensure_kv(js: JetStreamContext, bucket: str, limits: _Limits) -> None:
    ttl = limits.ttl

    async def create() -> object:
        return await js.create_key_value(
            bucket=bucket,
            ttl=ttl,
            max_bytes=limits.max_bytes,
            history=1,
            replicas=limits.replicas,
            storage=api.StorageType.FILE,
            description="Escriba cache",
        )

    async def update() -> None:
        info = await js.stream_info(KV_STREAM_TEMPLATE.format(bucket=bucket))
        window = min(_KV_DUPLICATE_WINDOW_S, ttl) if ttl else _KV_DUPLICATE_WINDOW_S
        # A cache may shrink: losing its oldest entries costs recomputation, nothing else.
        config = info.config.evolve(
            max_age=ttl, max_bytes=limits.max_bytes, duplicate_window=window, num_replicas=limits.replicas
        )
        await js.update_stream(config)

    await _create_or_update(f"KV bucket {bucket}", create, update)


async def _create_or_update(
    what: str, create: Callable[[], Awaitable[object]], update: Callable[[], Awaitable[None]]
) -> None:
    try:
        await create()
        return
    except ServiceUnavailableError as exc:
        raise BusUnavailableError(f"JetStream is not available to create {what} (is it enabled?)") from exc
    except BadRequestError as exc:
        if exc.err_code != _ERR_STREAM_CONFIG_DIFFERS:
            raise TopologyError(f"{what} cannot be created: {exc}") from exc
    except APIError as exc:
        raise TopologyError(f"{what} cannot be created: {exc}") from exc
    try:
        await update()
    except ServiceUnavailableError as exc:
        raise BusUnavailableError(f"JetStream is not available to update {what}") from exc
    except APIError as exc:
        raise TopologyError(f"{what} exists with settings that cannot be changed in place: {exc}") from exc
    log.info("updated %s to the current settings", what)
