"""TaskService: the public API over the pipeline.

A transport over the task layer (:mod:`escriba.pipeline.tasks`): CreateTask reads the upload, stores
the audio and asks the task layer to record and queue the task; WatchTask streams what the task layer's
watch yields; CancelTask is a guarded transition. What is left here is reading requests, the caller's
identity and limits, and the upload's bytes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import grpc

from escriba.common.errors import (
    EscribaError,
    InvalidInputError,
    PermanentError,
)
from escriba.common.grpc_status import translate_errors, translate_stream_errors
from escriba.db.models import TaskFilter, TaskRecord
from escriba.gateway.auth import Authenticator
from escriba.gateway.intake import TaskIntake
from escriba.gateway.settings import GatewaySettings
from escriba.gateway.uploads import UploadStream, read_spec
from escriba.pipeline.runtime import Pipeline, PipelineRuntime
from escriba.pipeline.taskpb import status_from_pb, task_to_pb, webhook_attempts_to_pb
from escriba.pipeline.tasks import TaskFlow
from escriba.v1 import tasks_pb2, tasks_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
DEFAULT_PAGE_SIZE = 50
UNAUTHENTICATED_DRAIN_BYTES = 16 * 1024 * 1024
#: An unknown caller is not waited for: what it sends within this is read, then it is answered.
UNAUTHENTICATED_DRAIN_S = 2.0


class TaskStateError(PermanentError):
    reason = "failed_precondition"
    grpc_code = "FAILED_PRECONDITION"


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

    @property
    def intake(self) -> TaskIntake:
        return TaskIntake(self.runtime, self.settings)

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
            # Bounded in time too: a caller that sends nothing must not hold an RPC slot meanwhile.
            await stream.drain(UNAUTHENTICATED_DRAIN_BYTES, UNAUTHENTICATED_DRAIN_S)
            raise
        try:
            spec = await read_spec(requests)
        except EscribaError:
            await stream.drain()
            raise
        return await self.intake.create(owner, spec, stream)

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
        final = await self.tasks.wait(record, timeout_s=timeout, poll_s=self.settings.watch_poll_s)
        return task_to_pb(final)

    # Reading ---------------------------------------------------------------------------------------

    @translate_errors
    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.Task:
        owner = self.auth.owner(context)  # before anything about the request is answered
        record = await self.pipeline.repo.get(_task_id(request.task_id), owner_id=owner)
        task = task_to_pb(record)
        if record.options.get("webhook_url"):
            task.webhook_attempts.extend(
                webhook_attempts_to_pb(await self.pipeline.repo.webhook_attempts(record.id))
            )
        return task

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
        owner = self.auth.owner(context)  # before anything about the request is answered
        record = await self.pipeline.repo.get(_task_id(request.task_id), owner_id=owner)
        async for event in self.tasks.watch(record, poll_s=self.settings.watch_poll_s):
            yield event

    @translate_errors
    async def ListModels(
        self, request: tasks_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.ListModelsResponse:
        self.auth.owner(context)
        catalogue = self.pipeline.models
        kinds = {
            None: tasks_pb2.MODEL_LANGUAGES_UNSPECIFIED,
            False: tasks_pb2.MODEL_LANGUAGES_ENGLISH_ONLY,
            True: tasks_pb2.MODEL_LANGUAGES_MULTILINGUAL,
        }
        return tasks_pb2.ListModelsResponse(
            models=[
                tasks_pb2.Model(
                    name=entry.name,
                    is_default=entry is catalogue.default,
                    languages=kinds[entry.multilingual],
                    allowed_languages=list(entry.languages),
                )
                for entry in catalogue.entries
            ]
        )

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


def _task_id(value: str) -> str:
    value = value.strip()
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInputError(f"task id {value[:64]!r} is not a UUID", reason="invalid_task_id") from None
