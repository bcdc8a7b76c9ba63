"""A small asyncio Python client for TaskService (what the CLI uses; usable by other services).

async with EscribaClient("localhost:50051") as client:
    task = await client.transcribe(Path("meeting.mp3"), language="en")
    print(task.result.corrected_text)
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from escriba.common.client import file_chunks, write_all
from escriba.common.grpc_status import REASON_METADATA
from escriba.common.security import bearer_metadata, channel_credentials, open_channel
from escriba.common.tracing import client_interceptors
from escriba.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc

FORMATS = {"srt": tasks_pb2.OUTPUT_FORMAT_SRT, "vtt": tasks_pb2.OUTPUT_FORMAT_VTT}

#: Reads are retried by the channel when the gateway refuses them for load (RESOURCE_EXHAUSTED at its
#: concurrent-RPC limit) or is briefly unreachable (UNAVAILABLE, e.g. a pod rolling): they change
#: nothing, so a retry is always safe. Creating, cancelling and archiving are not retried.
READ_RETRY_POLICY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "escriba.v1.TaskService", "method": method}
                    for method in ("GetTask", "ListTasks", "WatchTask")
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.5s",
                    "maxBackoff": "3s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def make_spec(
    filename: str,
    *,
    language: str = "",
    hotwords: str = "",
    initial_prompt: str = "",
    glossary: Sequence[tuple[str, Sequence[str]]] = (),
    output_formats: Sequence[str] = (),
    spelling: bool | None = None,
) -> tasks_pb2.TaskSpec:
    spec = tasks_pb2.TaskSpec(
        filename=filename,
        transcription=common_pb2.TranscriptionOptions(
            language=language, hotwords=hotwords, initial_prompt=initial_prompt
        ),
        correction=common_pb2.CorrectionOptions(
            glossary=[common_pb2.GlossaryEntry(term=t, aliases=list(a)) for t, a in glossary]
        ),
        output_formats=[FORMATS[f] for f in output_formats],
    )
    if spelling is not None:
        spec.correction.spelling = spelling
    return spec


def _requests(spec: tasks_pb2.TaskSpec, path: Path) -> Iterator[tasks_pb2.CreateTaskRequest]:
    yield tasks_pb2.CreateTaskRequest(spec=spec)
    for chunk in file_chunks(path):
        yield tasks_pb2.CreateTaskRequest(chunk=chunk)


#: Attempts of one upload refused by the transport (the default of ``upload_attempts``), and the
#: first delay between them (doubling, with jitter).
UPLOAD_ATTEMPTS = 4
UPLOAD_BACKOFF_S = 0.25
_RETRYABLE_UPLOAD_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL}
)


def _transport_refusal(error: grpc.aio.AioRpcError) -> bool:
    """A refusal Escriba's code did not send (it names its reason in metadata): retrying may work."""
    metadata = error.trailing_metadata() or ()
    if any(key == REASON_METADATA for key, _ in metadata):
        return False
    return error.code() in _RETRYABLE_UPLOAD_CODES


class EscribaClient:
    """``token`` goes out as ``authorization: Bearer``; ``tls`` (implied by ``ca_file``, a client
    certificate or ``server_name``) verifies the server against ``ca_file``, or against the system roots
    without one. ``server_name`` is the name its certificate must carry when the address is another
    one (a port-forward to ``localhost``, an IP address, a load balancer)."""

    def __init__(
        self,
        address: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        token: str | None = None,
        tls: bool = False,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        server_name: str | None = None,
        upload_attempts: int = UPLOAD_ATTEMPTS,
    ) -> None:
        if upload_attempts < 1:
            raise ValueError(f"upload_attempts must be at least 1, got {upload_attempts}")
        self.address = address
        self.upload_attempts = upload_attempts
        self.metadata = tuple(metadata) + (bearer_metadata(token) if token else ())
        secure = tls or bool(ca_file) or bool(cert_file) or bool(server_name)
        credentials = channel_credentials(ca_file, cert_file, key_file) if secure else None
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", READ_RETRY_POLICY),
        ]
        if server_name:
            # Verify the certificate for this name and send it as the authority (SNI, :authority).
            options += [
                ("grpc.ssl_target_name_override", server_name),
                ("grpc.default_authority", server_name),
            ]
        self._channel = open_channel(
            address,
            credentials,
            options=options,
            # Each call carries the caller's trace context, so a task's trace starts at the caller.
            interceptors=client_interceptors(),
        )
        self.stub = tasks_pb2_grpc.TaskServiceStub(self._channel)

    async def __aenter__(self) -> EscribaClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _upload(self, method: str, path: Path, spec: tasks_pb2.TaskSpec) -> tasks_pb2.Task:
        """Upload with an idempotency key, retrying refusals that came from the transport.

        A gateway at its concurrent-RPC limit refuses before Escriba's code runs, and grpc's asyncio
        client may report that as INTERNAL while it is still writing (grpc/grpc#36066). The key makes a
        retry safe: were the first attempt stored after all, the gateway returns that task.
        """
        if not spec.idempotency_key:
            keyed = tasks_pb2.TaskSpec()
            keyed.CopyFrom(spec)
            keyed.idempotency_key = uuid.uuid4().hex
            spec = keyed
        attempts = self.upload_attempts
        for attempt in range(1, attempts + 1):
            call = getattr(self.stub, method)(metadata=self.metadata)
            writer = asyncio.create_task(write_all(call, _requests(spec, path)))
            try:
                task: tasks_pb2.Task = await call
                return task
            except grpc.aio.AioRpcError as exc:
                if attempt == attempts or not _transport_refusal(exc):
                    raise
            finally:
                await writer
            await asyncio.sleep(UPLOAD_BACKOFF_S * 2 ** (attempt - 1) * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    async def create_task_from_url(self, spec: tasks_pb2.TaskSpec) -> tasks_pb2.Task:
        """A task whose audio the server fetches from ``spec.audio_url`` (nothing is uploaded)."""
        if not spec.audio_url:
            raise ValueError("spec.audio_url is empty")

        async def only_spec() -> AsyncIterator[tasks_pb2.CreateTaskRequest]:
            yield tasks_pb2.CreateTaskRequest(spec=spec)

        task: tasks_pb2.Task = await self.stub.CreateTask(only_spec(), metadata=self.metadata)
        return task

    async def create_task(self, path: Path, spec: tasks_pb2.TaskSpec | None = None) -> tasks_pb2.Task:
        return await self._upload("CreateTask", path, spec or make_spec(path.name))

    async def transcribe(self, path: Path, spec: tasks_pb2.TaskSpec | None = None) -> tasks_pb2.Task:
        return await self._upload("Transcribe", path, spec or make_spec(path.name))

    async def get(self, task_id: str) -> tasks_pb2.Task:
        task: tasks_pb2.Task = await self.stub.GetTask(
            tasks_pb2.GetTaskRequest(task_id=task_id), metadata=self.metadata
        )
        return task

    async def list(self, request: tasks_pb2.ListTasksRequest) -> tasks_pb2.ListTasksResponse:
        response: tasks_pb2.ListTasksResponse = await self.stub.ListTasks(request, metadata=self.metadata)
        return response

    async def watch(self, task_id: str) -> AsyncIterator[tasks_pb2.TaskEvent]:
        call = self.stub.WatchTask(tasks_pb2.WatchTaskRequest(task_id=task_id), metadata=self.metadata)
        async for event in call:
            yield event

    async def cancel(self, task_id: str) -> tasks_pb2.Task:
        task: tasks_pb2.Task = await self.stub.CancelTask(
            tasks_pb2.CancelTaskRequest(task_id=task_id), metadata=self.metadata
        )
        return task

    async def archive(self, task_id: str) -> tasks_pb2.Task:
        task: tasks_pb2.Task = await self.stub.ArchiveTask(
            tasks_pb2.ArchiveTaskRequest(task_id=task_id), metadata=self.metadata
        )
        return task
