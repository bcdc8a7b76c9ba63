"""The connections a pipeline process holds: NATS (JetStream, object stores, KV caches) and PostgreSQL.

Opened once per process by :class:`PipelineRuntime`, a server component that starts first and stops
last, so workers and servicers can rely on it for their whole life and the shutdown order is: workers
hand back their jobs, then NATS drains, then the database pool closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import grpc
from nats.aio.client import Client
from nats.js import JetStreamContext

from escriba.bus import AudioStore, BusNames, KvCache, NatsSettings, connect, ensure_topology
from escriba.db.pool import create_pool
from escriba.db.settings import DatabaseSettings
from escriba.db.tasks import TaskRepository
from escriba.models import ModelCatalogue, ModelSettings
from escriba.pipeline.events import EventPublisher

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """Everything a stage handler or the gateway needs to reach the bus and the task table."""

    nc: Client
    js: JetStreamContext
    names: BusNames
    nats_settings: NatsSettings
    pool: asyncpg.Pool
    repo: TaskRepository
    events: EventPublisher
    uploads: AudioStore
    normalized: AudioStore
    transcripts: KvCache
    corrections: KvCache
    #: The models this install serves (routes transcription jobs; the gateway checks requests).
    models: ModelCatalogue


class PipelineRuntime:
    """A gRPC-server component (no services of its own) owning the pipeline's connections."""

    service_names: Sequence[str] = ()

    def __init__(
        self,
        nats_settings: NatsSettings,
        db_settings: DatabaseSettings,
        *,
        client_name: str,
        nats_url: str | None = None,
        database_url: str | None = None,
        models: ModelCatalogue | None = None,
    ) -> None:
        self.models = models or ModelSettings.from_env().models()
        self.nats_settings = nats_settings
        self.db_settings = db_settings
        self.client_name = client_name
        self.nats_url = nats_url
        self.database_url = database_url
        self._pipeline: Pipeline | None = None

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("the pipeline runtime has not started")
        return self._pipeline

    def register(self, server: grpc.aio.Server) -> None:
        return None

    async def start(self) -> None:
        names = self.nats_settings.names
        nc = await connect(self.nats_settings, url=self.nats_url, name=self.client_name)
        pool: asyncpg.Pool | None = None
        try:
            js = nc.jetstream(timeout=self.nats_settings.request_timeout_s)
            routes = tuple(entry.token for entry in self.models.entries[1:])
            await ensure_topology(js, names, self.nats_settings, routes)
            pool = await create_pool(self.db_settings, self.database_url)
            # Stores open inside the guard too: a missing bucket must not leak the connection or pool.
            self._pipeline = Pipeline(
                nc=nc,
                js=js,
                names=names,
                nats_settings=self.nats_settings,
                pool=pool,
                repo=TaskRepository(pool),
                events=EventPublisher(js, names),
                uploads=await AudioStore.open(js, names.audio_bucket),
                normalized=await AudioStore.open(js, names.normalized_bucket),
                transcripts=await KvCache.open(js, names.transcripts_bucket),
                corrections=await KvCache.open(js, names.corrections_bucket),
                models=self.models,
            )
        except BaseException:
            if pool is not None:
                await pool.close()
            await nc.close()
            raise

    async def stop(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is None:
            return
        try:
            await asyncio.wait_for(pipeline.nc.drain(), timeout=10)
        except Exception:
            log.warning("nats drain did not finish cleanly", exc_info=True)
            await pipeline.nc.close()
        await pipeline.pool.close()
