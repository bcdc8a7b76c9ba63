"""The stored-bytes quota on a real NATS object store and PostgreSQL: an owner whose unfinished tasks
hold the quota's worth of uploads is refused while streaming, another owner is not, and the bytes come
back as soon as a task finishes (its upload is deleted)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import cast

import pytest

from escriba.common.errors import LimitExceededError
from escriba.gateway.intake import StoredBytesQuotaError, TaskIntake
from escriba.gateway.settings import GatewaySettings
from escriba.pipeline.runtime import Pipeline, PipelineRuntime
from escriba.pipeline.tasks import TaskFlow
from escriba.v1 import tasks_pb2

pytestmark = pytest.mark.timeout(60)

CHUNK = 64 * 1024


class Upload:
    """An upload as a transport hands it over: chunks, counted while consumed."""

    def __init__(self, size: int) -> None:
        self._left = size
        self.size = 0
        self.drained = False

    @property
    def sha256(self) -> str:
        return "0" * 64

    async def chunks(self) -> AsyncIterator[bytes]:
        while self._left > 0:
            n = min(CHUNK, self._left)
            self._left -= n
            self.size += n
            yield b"\0" * n

    async def drain(self) -> None:
        self.drained = True


def _intake(pipeline: Pipeline, quota: int) -> TaskIntake:
    # No stage workers run here, so every created task stays queued and holds its upload.
    runtime = cast(PipelineRuntime, SimpleNamespace(pipeline=pipeline))
    return TaskIntake(runtime, dataclasses.replace(GatewaySettings(), max_stored_bytes_per_owner=quota))


async def _objects(pipeline: Pipeline) -> int:
    """Bytes the upload bucket's stream holds (a deleted object's chunks are purged from it)."""
    return int((await pipeline.js.stream_info(f"OBJ_{pipeline.uploads.bucket}")).state.bytes)


async def test_an_owner_over_the_quota_is_refused_while_streaming(pipeline: Pipeline) -> None:
    intake = _intake(pipeline, quota=1_000_000)
    spec = tasks_pb2.TaskSpec(filename="a.flac")
    first = await intake.create("alice", spec, Upload(600_000))
    assert first.status.value == "queued"
    before = await _objects(pipeline)

    second = Upload(600_000)
    with pytest.raises(StoredBytesQuotaError) as refused:
        await intake.create("alice", spec, second)
    assert isinstance(refused.value, LimitExceededError)  # RESOURCE_EXHAUSTED at the servicer
    assert "quota of 1000000 bytes" in refused.value.message
    assert second.size < 600_000  # refused once it crossed, not after reading it all
    assert second.drained
    assert await _objects(pipeline) == before  # the partial upload was removed
    assert await pipeline.repo.stored_bytes("alice") == 600_000

    # Another owner has a quota of its own.
    await intake.create("bob", spec, Upload(600_000))

    # A finished task's upload is deleted, and its bytes no longer count.
    await TaskFlow(pipeline).transition(pipeline.repo.cancel(first.id, owner_id="alice"))
    assert await pipeline.repo.stored_bytes("alice") == 0
    again = await intake.create("alice", spec, Upload(600_000))
    assert again.status.value == "queued"


async def test_a_full_quota_is_refused_before_any_byte_is_read(pipeline: Pipeline) -> None:
    intake = _intake(pipeline, quota=100_000)
    spec = tasks_pb2.TaskSpec(filename="a.flac")
    await intake.create("carol", spec, Upload(100_000))
    upload = Upload(10)
    with pytest.raises(StoredBytesQuotaError, match="already hold 100000 bytes"):
        await intake.create("carol", spec, upload)
    assert upload.size == 0
