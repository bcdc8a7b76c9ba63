"""The task application layer: create and enqueue a task, change its state and tell its watchers,
hand it to its next stage, and watch it.

Every change of a task's status goes through :meth:`TaskFlow.transition`, which publishes the task's
event exactly when the guarded change applied, so a watcher never misses a status and never sees one
the database refused. Every job is published by :meth:`TaskFlow.enqueue`. The gateway's servicer and
the stage workers are transports over this module: they read requests and deliveries, and call it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable

from google.protobuf.message import DecodeError, Message

from escriba.bus import publish_job
from escriba.common.errors import EscribaError, TransientError
from escriba.db.models import NewTask, TaskRecord, Transition
from escriba.db.states import TaskStatus
from escriba.pipeline import codec
from escriba.pipeline.runtime import Pipeline
from escriba.pipeline.taskpb import status_from_pb, status_to_pb, task_to_pb
from escriba.stages import FIRST, Stage, in_order
from escriba.v1 import jobs_pb2, tasks_pb2

log = logging.getLogger(__name__)


#: The ``stage`` a webhook delivery travels under (headers, message ids, metrics).
WEBHOOK_STAGE = "webhook"


class EnqueueError(TransientError):
    reason = "enqueue_failed"


class TaskFlow:
    """A task's life over one process's connections (the bus, the task table, the events)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    # Changing state ---------------------------------------------------------------------------------

    async def transition(self, change: Awaitable[Transition], message: str = "") -> Transition:
        """Apply a guarded status change; publish the task's event when it applied, and queue its
        webhook when that change ended a task that asked for one."""
        transition = await change
        if transition.applied:
            await self._pipeline.events.publish(transition.task, message)
            if transition.task.status.terminal:
                await self._queue_webhook(transition.task)
                await self._release_upload(transition.task)
        return transition

    async def _release_upload(self, record: TaskRecord) -> None:
        """A finished task's upload is no longer needed (its normalized audio and transcript stay in
        their caches, by their own TTLs): delete it now rather than hold the bytes for days."""
        if not record.audio_object:
            return
        try:
            await self._pipeline.uploads.delete(record.audio_object)
        except Exception:  # the bucket's TTL removes it in the end; the task's end stands
            log.warning(
                "could not delete the finished task's upload", extra={"task_id": record.id}, exc_info=True
            )

    async def _queue_webhook(self, record: TaskRecord) -> None:
        url = str(record.options.get("webhook_url") or "")
        if not url:
            return
        pipeline = self._pipeline
        job = jobs_pb2.WebhookJob(task_id=record.id, url=url, event=f"task.{record.status.value}")
        try:
            # Deduplicated by task: a retried stage that ends the task again queues one delivery.
            await publish_job(
                pipeline.js,
                pipeline.names.webhook_subject,
                job.SerializeToString(),
                task_id=record.id,
                stage=WEBHOOK_STAGE,
                audio_duration_s=0.0,
            )
        except Exception:
            # The task's end is already stored and told to its watchers; a lost webhook is logged
            # with the task, never allowed to undo that.
            log.exception("could not queue the task's webhook", extra={"task_id": record.id})

    async def fail(self, task_id: str, reason: str, message: str) -> Transition:
        return await self.transition(self._pipeline.repo.fail(task_id, reason, message), message)

    # Queueing ---------------------------------------------------------------------------------------

    async def enqueue(self, stage: Stage, job: Message, *, task_id: str, audio_duration_s: float) -> None:
        """Publish ``stage``'s job, deduplicated by task and stage (a retried delivery publishes once).
        The duration header lets the autoscaler size the backlog without decoding the job."""
        body, headers = codec.encode(job)
        pipeline = self._pipeline
        route = None
        if stage is Stage.TRANSCRIPTION and isinstance(job, jobs_pb2.TranscribeJob):
            # Each model has its own subject and consumer, so each scales on its own backlog.
            route = pipeline.models.route(job.transcription.model)
        await publish_job(
            pipeline.js,
            pipeline.names.job_subject(stage, route),
            body,
            task_id=task_id,
            stage=stage.value,
            audio_duration_s=audio_duration_s,
            headers=headers,
        )

    async def create(self, task: NewTask, first_job: Message) -> tuple[TaskRecord, bool]:
        """Record a ``queued`` task and queue its first stage's job; ``False`` when the task's
        idempotency key was taken meanwhile (the earlier task is returned, nothing is queued).

        A job that cannot be queued fails the task with the reason rather than leave it queued forever.
        A caller that goes away meanwhile (a cancelled RPC, a deadline) does not cut this short: the
        insert and the publish run to their end together, so no task is left queued without its job.
        """
        return await asyncio.shield(self._create(task, first_job))

    async def _create(self, task: NewTask, first_job: Message) -> tuple[TaskRecord, bool]:
        pipeline = self._pipeline
        # The job travels with the row until it is published (escriba.pipeline.outbox): a process
        # that dies between the two leaves it for a reconciler, not a task queued forever.
        task = dataclasses.replace(task, outbox_job=first_job.SerializeToString())
        record, created = await pipeline.repo.create_once(task)
        if not created:
            return record, False
        await pipeline.events.publish(record)
        try:
            # The duration is unknown before decoding; the autoscaler only sizes transcription, whose
            # jobs carry the exact duration.
            await self.enqueue(FIRST, first_job, task_id=record.id, audio_duration_s=0.0)
        except Exception as exc:
            await self.fail(record.id, "enqueue_failed", f"could not queue the task: {exc}")
            # Say why (a full queue reads differently from an outage): both are worth a retry.
            why = exc.message if isinstance(exc, EscribaError) else "the job queue is unavailable"
            raise EnqueueError(f"{why}; the task was marked failed") from exc
        try:
            await pipeline.repo.outbox_published(record.id)
        except EscribaError:
            # The job is queued; the reconciler clears the entry (its publish is a dropped duplicate).
            log.warning("could not clear the task's outbox entry", extra={"task_id": record.id})
        return record, True

    # Watching ---------------------------------------------------------------------------------------

    async def watch(self, record: TaskRecord, *, poll_s: float) -> AsyncIterator[tasks_pb2.TaskEvent]:
        """The current state, then each later status, ending with the terminal one (full task).

        Events arrive on a plain NATS subscription to the task's event subject (the events stream
        stores the same messages): a watcher needs no replay, because it subscribes first and then
        re-reads the task, so a change between the two still arrives as an event. No JetStream
        consumer per watcher: a thousand watchers cost the server a thousand interests, not a
        thousand consumers, and nothing waits on consumer creation. The database is re-read every
        ``poll_s`` and on every terminal event, so a lost event delays a watcher, never strands it.
        """
        pipeline = self._pipeline
        if record.status.terminal:
            yield task_event(record)
            return
        subscription = await pipeline.nc.subscribe(pipeline.names.event_subject(record.id))
        try:
            record = await pipeline.repo.get(record.id, owner_id=None)
            yield task_event(record)
            if record.status.terminal:
                return
            last = _rank(record.status)
            while True:
                status: TaskStatus | None = None
                message = ""
                try:
                    msg = await subscription.next_msg(timeout=poll_s)
                    event = tasks_pb2.TaskEvent.FromString(msg.data)
                    status, message = status_from_pb(event.status), event.message
                    if event.HasField("progress") and status is not None and not status.terminal:
                        if _rank(status) >= last:  # a late progress event after a later status: old news
                            last = _rank(status)
                            yield event
                        continue
                except (TimeoutError, DecodeError):
                    pass  # nothing new, or not an event we can read: the re-read below decides
                current: TaskRecord | None = None
                if status is None or status.terminal:
                    # Periodic re-read, and the full task for the terminal event.
                    current = await pipeline.repo.get(record.id, owner_id=None)
                    status = current.status
                if _rank(status) <= last:
                    continue
                last = _rank(status)
                if current is None:
                    event = tasks_pb2.TaskEvent(
                        task_id=record.id, status=status_to_pb(status), message=message
                    )
                    event.at.GetCurrentTime()
                    yield event
                else:
                    yield task_event(current, message)
                if status.terminal:
                    return
        finally:
            await subscription.unsubscribe()

    async def wait(self, record: TaskRecord, *, timeout_s: float, poll_s: float) -> TaskRecord:
        """The task once terminal, or as it is when ``timeout_s`` runs out (callers check the status)."""
        try:
            async with asyncio.timeout(timeout_s):
                async for event in self.watch(record, poll_s=poll_s):
                    if status_from_pb(event.status) in _TERMINAL:
                        break
        except TimeoutError:
            pass
        return await self._pipeline.repo.get(record.id, owner_id=None)


def task_event(record: TaskRecord, message: str = "") -> tasks_pb2.TaskEvent:
    """The event of ``record``'s status now; a terminal one carries the whole task."""
    event = tasks_pb2.TaskEvent(task_id=record.id, status=status_to_pb(record.status), message=message)
    event.at.GetCurrentTime()
    if record.status.terminal:
        event.task.CopyFrom(task_to_pb(record))
    return event


#: Statuses in the order a task passes through them (terminal ones rank last, together).
_ORDER = (TaskStatus.QUEUED, *(TaskStatus(spec.status) for spec in in_order()))


_TERMINAL = frozenset(s for s in TaskStatus if s.terminal)


def _rank(status: TaskStatus) -> int:
    return len(_ORDER) if status.terminal else _ORDER.index(status)
