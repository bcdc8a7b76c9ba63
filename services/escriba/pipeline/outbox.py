"""Publishing first jobs that a create stored but did not queue: creation is atomic in effect.

A task row and its first job cannot be written in one transaction (PostgreSQL and JetStream), so the
job is written *with* the row (``outbox_job``) and cleared once published. A gateway killed between
the INSERT and the publish, a NATS outage after the INSERT, or a database error on the clearing
UPDATE all leave the job in the row, and :class:`OutboxReconciler`, which every gateway replica runs,
publishes it once ``outbox_after_s`` have passed. Without this such a task stayed ``queued`` forever,
holding one of its owner's slots.

Running on every replica is safe: a claim takes rows with ``FOR UPDATE SKIP LOCKED`` and restarts
their clock, so replicas do not take the same row twice within the grace period, and a publish that
happened after all (the row was only not cleared) carries the same ``Nats-Msg-Id`` as the first one,
which JetStream drops as a duplicate within its window (``ESCRIBA_NATS_DUPLICATE_WINDOW_S``, longer
than the grace period by default). A task no longer ``queued`` (cancelled, failed, or already in a
stage) only has its entry cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Counter

from escriba.common.errors import EscribaError
from escriba.common.logging import task_context
from escriba.db.states import TaskStatus
from escriba.pipeline.runtime import Pipeline
from escriba.pipeline.tasks import TaskFlow
from escriba.stages import FIRST, STAGES
from escriba.v1 import jobs_pb2

log = logging.getLogger(__name__)

OUTBOX_PUBLISHED = Counter(
    "escriba_outbox_published_total",
    "first jobs published by the outbox reconciler (a create that stored its task but did not queue it)",
)
_FIRST_JOB = {"PreprocessJob": jobs_pb2.PreprocessJob}[STAGES[FIRST].job_message]


class OutboxReconciler:
    """One replica's loop over the outbox; :meth:`run_once` is one pass (what tests and the loop call)."""

    def __init__(self, pipeline: Pipeline, *, after_s: float, interval_s: float, batch: int = 100) -> None:
        self._pipeline = pipeline
        self._after_s = after_s
        self._interval_s = interval_s
        self._batch = batch
        self._loop: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """Publish what is due; returns how many jobs were published."""
        repo = self._pipeline.repo
        flow = TaskFlow(self._pipeline)
        published = 0
        for entry in await repo.claim_outbox(older_than_s=self._after_s, limit=self._batch):
            with task_context(entry.task_id):
                if entry.status is TaskStatus.QUEUED:
                    job = _FIRST_JOB.FromString(entry.job)
                    await flow.enqueue(FIRST, job, task_id=entry.task_id, audio_duration_s=0.0)
                    published += 1
                    OUTBOX_PUBLISHED.inc()
                    log.warning("published a first job its create had left in the outbox")
                await repo.outbox_published(entry.task_id)
        return published

    async def start(self) -> None:
        if self._interval_s > 0 and self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="outbox-reconciler")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.run_once()
            except EscribaError as exc:  # NATS or PostgreSQL away: the next pass tries again
                log.warning("outbox pass failed; retrying next pass", extra={"error": str(exc)})
            except Exception:
                log.exception("outbox pass failed; retrying next pass")
