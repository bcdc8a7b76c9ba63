"""TaskService: the public API over the pipeline.

A transport over the task layer (:mod:`escriba.pipeline.tasks`): CreateTask reads the upload, stores
the audio and asks the task layer to record and queue the task; WatchTask streams what the task layer's
watch yields; CancelTask is a guarded transition. What is left here is reading requests, the caller's
identity and limits, and the upload's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc

from escriba.common.errors import (
    EscribaError,
    InvalidInputError,
    LimitExceededError,
    PermanentError,
)
from escriba.common.grpc_status import translate_errors, translate_stream_errors
from escriba.common.logging import task_context
from escriba.db.models import NewTask, TaskFilter, TaskRecord
from escriba.db.states import TaskStatus
from escriba.gateway.auth import Authenticator
from escriba.gateway.settings import GatewaySettings
from escriba.gateway.uploads import EmptyUploadError, UploadStream, output_formats, read_spec
from escriba.pipeline.runtime import Pipeline, PipelineRuntime
from escriba.pipeline.taskpb import spec_to_dict, status_from_pb, status_to_pb, task_to_pb
from escriba.pipeline.tasks import TaskFlow
from escriba.v1 import jobs_pb2, tasks_pb2, tasks_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
DEFAULT_PAGE_SIZE = 50
UNAUTHENTICATED_DRAIN_BYTES = 16 * 1024 * 1024


class TaskStateError(PermanentError):
    reason = "failed_precondition"
    grpc_code = "FAILED_PRECONDITION"


class QueueLimitError(LimitExceededError):
    reason = "too_many_unfinished_tasks"


class TaskServicer(tasks_pb2_grpc.TaskServiceServicer):
    def __init__(self, runtime: PipelineRuntime, settings: GatewaySettings, auth: Authenticator) -> None:
        self.runtime = runtime
        self.settings = settings
        self.auth = auth

    @property
    def pipeline(self) -> Pipeline:
        return self.runtime.pipeline

    @property
    def tasks(self) -> TaskFlow:
        return TaskFlow(self.pipeline)

    # Creating --------------------------------------------------------------------------------------

    async def _create(
        self, requests: AsyncIterator[tasks_pb2.CreateTaskRequest], context: grpc.aio.ServicerContext
    ) -> TaskRecord:
        stream = UploadStream(requests, self.settings.max_upload_bytes)
        try:
            owner = self.auth.owner(context)
        except EscribaError:
            # Nothing is stored for an unknown caller. A little of its upload is read and discarded so
            # that an honest client with a bad token reads UNAUTHENTICATED rather than the INTERNAL
            # error grpc's asyncio client reports when refused while writing (escriba.common.upload).
            await stream.drain(UNAUTHENTICATED_DRAIN_BYTES)
            raise
        pipeline = self.pipeline
        task_id = str(uuid.uuid4())
        object_name = f"uploads/{task_id}"
        started = time.perf_counter()
        try:
            spec = await read_spec(requests)
            key = spec.idempotency_key or None
            if key is not None:
                earlier = await pipeline.repo.find_by_idempotency_key(owner, key)
                if earlier is not None:
                    # A retry of a create that already happened: the same task, nothing stored again.
                    await stream.drain()
                    log.info("create replayed by its idempotency key", extra={"task_id": earlier.id})
                    return earlier
            await self._check_queue_limit(owner)
            await pipeline.uploads.put_chunks(object_name, stream.chunks())
        except EscribaError:
            await stream.drain()
            await pipeline.uploads.delete(object_name)
            raise
        if stream.size == 0:
            await pipeline.uploads.delete(object_name)
            raise EmptyUploadError("the upload has no audio bytes")
        upload_ms = (time.perf_counter() - started) * 1000
        new = NewTask(
            id=task_id,
            owner_id=owner,
            filename=spec.filename,
            audio_object=object_name,
            audio_sha256=stream.sha256,
            options=spec_to_dict(spec),
            upload_ms=upload_ms,
            idempotency_key=key,
        )
        first_job = jobs_pb2.PreprocessJob(
            task_id=task_id,
            audio_object=object_name,
            audio_sha256=stream.sha256,
            filename=spec.filename,
            transcription=spec.transcription,
            correction=spec.correction,
            output_formats=output_formats(spec),
        )
        with task_context(task_id):
            record, created = await self.tasks.create(new, first_job)
            if not created:
                # The same key raced this create and won: keep its task, drop this copy of the audio.
                await pipeline.uploads.delete(object_name)
                return record
            log.info("task created", extra={"owner": owner, "bytes": stream.size})
        return record

    async def _check_queue_limit(self, owner: str) -> None:
        """Refuse before any byte is stored (the upload is drained like any refused one, so the
        client reads this status). Concurrent creates may overshoot by a few: a soft cap."""
        limit = self.settings.max_queued_per_owner
        if limit and await self.pipeline.repo.count_unfinished(owner, up_to=limit) >= limit:
            raise QueueLimitError(
                f"{limit} of your tasks are already queued or running; wait for some to finish"
            )

    @translate_errors
    async def CreateTask(
        self, request_iterator: AsyncIterator[tasks_pb2.CreateTaskRequest], context: grpc.aio.ServicerContext
    ) -> tasks_pb2.Task:
        return task_to_pb(await self._create(request_iterator, context))

    @translate_errors
    async def Transcribe(
        self, request_iterator: AsyncIterator[tasks_pb2.CreateTaskRequest], context: grpc.aio.ServicerContext
    ) -> tasks_pb2.Task:
        record = await self._create(request_iterator, context)
        remaining = context.time_remaining()
        timeout = self.settings.transcribe_timeout_s if remaining is None else remaining
        final = record
        try:
            async with asyncio.timeout(timeout):
                async for event in self.tasks.watch(record, poll_s=self.settings.watch_poll_s):
                    if event.status in _TERMINAL_PB:
                        return event.task
        except TimeoutError:
            pass
        final = await self.pipeline.repo.get(record.id, owner_id=record.owner_id)
        return task_to_pb(final)

    # Reading ---------------------------------------------------------------------------------------

    @translate_errors
    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.Task:
        record = await self.pipeline.repo.get(_task_id(request.task_id), owner_id=self.auth.owner(context))
        return task_to_pb(record)

    @translate_errors
    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        owner = self.auth.owner(context)  # before anything about the request is answered
        statuses = []
        for value in request.statuses:
            status = status_from_pb(value)
            if status is None:
                raise InvalidInputError(f"unknown task status {value}", reason="invalid_filter")
            statuses.append(status)
        page = await self.pipeline.repo.list_tasks(
            TaskFilter(
                owner_id=owner,
                statuses=tuple(statuses),
                archived=request.archived if request.HasField("archived") else None,
            ),
            cursor=request.page_token,
            limit=request.page_size or DEFAULT_PAGE_SIZE,
            include_results=request.include_results,
        )
        return tasks_pb2.ListTasksResponse(
            tasks=[task_to_pb(t, include_result=request.include_results) for t in page.tasks],
            next_page_token=page.next_cursor,
        )

    @translate_stream_errors
    async def WatchTask(
        self, request: tasks_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tasks_pb2.TaskEvent]:
        record = await self.pipeline.repo.get(_task_id(request.task_id), owner_id=self.auth.owner(context))
        async for event in self.tasks.watch(record, poll_s=self.settings.watch_poll_s):
            yield event

    # Changing --------------------------------------------------------------------------------------

    @translate_errors
    async def CancelTask(
        self, request: tasks_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.Task:
        owner = self.auth.owner(context)
        transition = await self.tasks.transition(
            self.pipeline.repo.cancel(_task_id(request.task_id), owner_id=owner), "cancelled by its owner"
        )
        if not transition.applied:
            raise TaskStateError(f"task {request.task_id} is already {transition.task.status.value}")
        return task_to_pb(transition.task)

    @translate_errors
    async def ArchiveTask(
        self, request: tasks_pb2.ArchiveTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.Task:
        owner = self.auth.owner(context)
        transition = await self.pipeline.repo.archive(_task_id(request.task_id), owner_id=owner)
        if not transition.applied:
            if transition.task.is_archived:
                return task_to_pb(transition.task)
            raise TaskStateError(
                f"task {request.task_id} is {transition.task.status.value};"
                " only finished tasks can be archived"
            )
        return task_to_pb(transition.task)


_TERMINAL_PB = {status_to_pb(s) for s in TaskStatus if s.terminal}


def _task_id(value: str) -> str:
    value = value.strip()
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInputError(f"task id {value[:64]!r} is not a UUID", reason="invalid_task_id") from None
