"""Creating a task from a caller's spec and audio: the one path every front door takes.

TaskService's CreateTask and Transcribe (gRPC) and the OpenAI-compatible HTTP API both hand this
module an owner, a validated spec and the audio (a stream of chunks, or nothing when the spec names
an ``audio_url``), so a task created over HTTP is the same task as one created over gRPC: the same
limits, idempotency, storage, events and first job. Transports only read their requests and say who
is calling.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

from escriba.common.errors import EscribaError, InvalidInputError, LimitExceededError
from escriba.common.logging import task_context
from escriba.common.upload import MalformedUploadError
from escriba.db.models import NewTask, TaskRecord
from escriba.gateway.settings import GatewaySettings
from escriba.gateway.uploads import EmptyUploadError, output_formats
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.taskpb import spec_to_dict
from escriba.pipeline.tasks import TaskFlow
from escriba.v1 import jobs_pb2, tasks_pb2

log = logging.getLogger(__name__)


class QueueLimitError(LimitExceededError):
    reason = "too_many_unfinished_tasks"


class StoredBytesQuotaError(LimitExceededError):
    reason = "stored_bytes_quota"


class WebhooksUnavailableError(InvalidInputError):
    reason = "webhooks_unavailable"
    grpc_code = "FAILED_PRECONDITION"


class AudioUpload(Protocol):
    """Uploaded bytes as a transport receives them: counted, hashed and bounded while consumed."""

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def drain(self) -> None:
        """Read (and drop) what the caller still sends, so that it reads the error, not a reset."""


class TaskIntake:
    """Records and queues tasks over one process's connections."""

    def __init__(self, runtime: PipelineRuntime, settings: GatewaySettings) -> None:
        self._runtime = runtime
        self._settings = settings

    async def create(self, owner: str, spec: tasks_pb2.TaskSpec, upload: AudioUpload) -> TaskRecord:
        """Store the upload (or note the spec's URL) and queue the task; with an idempotency key
        already used by ``owner``, the earlier task and nothing stored.

        ``spec`` must have passed :func:`escriba.gateway.uploads.validate_spec`.
        """
        if spec.webhook_url and not self._settings.accept_webhooks:
            await upload.drain()
            raise WebhooksUnavailableError(
                "this server delivers no webhooks (ESCRIBA_WEBHOOK_SECRET_FILE is not set)"
            )
        pipeline = self._runtime.pipeline
        options = spec.transcription
        try:
            pipeline.models.check_request(options.model, language=options.language, task=options.task)
        except EscribaError:
            await upload.drain()
            raise
        task_id = str(uuid.uuid4())
        by_url = bool(spec.audio_url)
        object_name = "" if by_url else f"uploads/{task_id}"
        started = time.perf_counter()
        try:
            key = spec.idempotency_key or None
            if key is not None:
                earlier = await pipeline.repo.find_by_idempotency_key(owner, key)
                if earlier is not None:
                    # A retry of a create that already happened: the same task, nothing stored again.
                    await upload.drain()
                    log.info("create replayed by its idempotency key", extra={"task_id": earlier.id})
                    return earlier
            await self._check_queue_limit(owner)
            if by_url:
                async for _chunk in upload.chunks():
                    raise MalformedUploadError("send either audio chunks or an audio_url, not both")
            else:
                chunks = await self._within_quota(owner, upload.chunks())
                await pipeline.uploads.put_chunks(object_name, chunks)
        except EscribaError:
            await upload.drain()
            if object_name:
                await pipeline.uploads.delete(object_name)
            raise
        if not by_url and upload.size == 0:
            await pipeline.uploads.delete(object_name)
            raise EmptyUploadError("the upload has no audio bytes")
        new = NewTask(
            id=task_id,
            owner_id=owner,
            filename=spec.filename,
            audio_object=object_name,
            audio_sha256="" if by_url else upload.sha256,
            options=spec_to_dict(spec),
            upload_ms=(time.perf_counter() - started) * 1000,
            idempotency_key=key,
            upload_bytes=0 if by_url else upload.size,
        )
        first_job = jobs_pb2.PreprocessJob(
            task_id=task_id,
            audio_object=object_name,
            audio_sha256=new.audio_sha256,
            filename=spec.filename,
            transcription=spec.transcription,
            correction=spec.correction,
            output_formats=output_formats(spec),
            audio_url=spec.audio_url,
        )
        with task_context(task_id):
            record, created = await TaskFlow(pipeline).create(new, first_job)
            if not created:
                # The same key raced this create and won: keep its task, drop this copy of the audio.
                if object_name:
                    await pipeline.uploads.delete(object_name)
                return record
            log.info(
                "task created",
                extra={"owner": owner, "bytes": upload.size, "by_url": by_url},
            )
        return record

    async def _within_quota(self, owner: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, refused with :class:`StoredBytesQuotaError` as soon as they would take the owner's
        stored uploads past the quota. Unfinished tasks' uploads count (a finished task's upload is
        deleted), so the quota is what one owner can hold in the shared bucket at once. Concurrent
        uploads of one owner may overshoot it by what they carry together: a soft cap, like the
        queue limit."""
        quota = self._settings.max_stored_bytes_per_owner
        if not quota:
            return chunks
        stored = await self._runtime.pipeline.repo.stored_bytes(owner)
        if stored >= quota:
            raise StoredBytesQuotaError(
                f"your unfinished tasks already hold {stored} bytes of uploads, the quota is {quota} bytes;"
                " wait for some to finish"
            )

        async def bounded() -> AsyncIterator[bytes]:
            total = stored
            async for chunk in chunks:
                total += len(chunk)
                if total > quota:
                    raise StoredBytesQuotaError(
                        f"this upload would take your stored uploads past the quota of {quota} bytes"
                        f" ({stored} bytes are held by your unfinished tasks); wait for some to finish"
                    )
                yield chunk

        return bounded()

    async def _check_queue_limit(self, owner: str) -> None:
        """Refuse before any byte is stored (the upload is drained like any refused one, so the
        client reads this status). Concurrent creates may overshoot by a few: a soft cap."""
        limit = self._settings.max_queued_per_owner
        if limit and await self._runtime.pipeline.repo.count_unfinished(owner, up_to=limit) >= limit:
            raise QueueLimitError(
                f"{limit} of your tasks are already queued or running; wait for some to finish"
            )
