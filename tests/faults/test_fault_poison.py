"""A poison job - one that fails every time, transiently - ends ``failed`` after the delivery limit, with
backoff between its attempts, and never holds up the tasks behind it.

The poison is real, not a test hook in the code: the task's upload is stored, then its object-store
metadata is rewritten with another digest, as a corrupted or half-replaced object would be. Every
read then fails the object store's integrity check (``ObjectReadError``, transient: an object can be
caught mid-replacement), so the preprocess stage retries it with backoff until JetStream's delivery
limit, and only then fails the task with the reason and the number of attempts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.js.api import Header

from escriba.bus import publish_job
from escriba.bus.names import Stage as BusStage
from escriba.client import EscribaClient
from escriba.db.models import NewTask
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from escriba.pipeline import codec
from escriba.pipeline.runtime import Pipeline
from escriba.v1 import jobs_pb2
from tests.faults.scenario import FaultRun, assert_clean, distinct_clips, fault_config, write_clips
from tests.support.ledger import Ledger, connect_db

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

MAX_DELIVER = 3
BACKOFF_S = (3.0, 12.0)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    config = fault_config(
        nats_server.url,
        postgres_dsn,
        mode="in_process",
        env={
            "ESCRIBA_NATS_MAX_DELIVER": str(MAX_DELIVER),
            "ESCRIBA_NATS_BACKOFF_S": ",".join(f"{d:g}" for d in BACKOFF_S),
            # One preprocess job at a time: a poison that kept its slot while waiting would stall the rest.
            "ESCRIBA_PREPROCESS_MAX_CONCURRENCY": "1",
        },
    )
    async with LocalStack(config) as running:
        yield running


async def corrupt_object(pipeline: Pipeline, name: str) -> None:
    """Rewrite the object's metadata with the digest of other bytes (a roll-up replaces the old one)."""
    bucket = pipeline.names.audio_bucket
    subject = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
    meta = await pipeline.js.get_last_msg(f"OBJ_{bucket}", subject)
    info = json.loads(meta.data or b"{}")
    other = base64.urlsafe_b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    info["digest"] = f"SHA-256={other}"
    await pipeline.js.publish(subject, json.dumps(info).encode(), headers={Header.ROLLUP: "sub"})


async def submit_poison(pipeline: Pipeline, audio: bytes) -> str:
    """Store an upload, corrupt it, and queue it the way CreateTask queues a task."""
    task_id = str(uuid.uuid4())
    name = f"uploads/{task_id}"
    await pipeline.uploads.put_bytes(name, audio)
    await corrupt_object(pipeline, name)
    sha = hashlib.sha256(audio).hexdigest()
    await pipeline.repo.create(
        NewTask(id=task_id, owner_id="anonymous", filename="poison.flac", audio_object=name, audio_sha256=sha)
    )
    body, headers = codec.encode(
        jobs_pb2.PreprocessJob(task_id=task_id, audio_object=name, audio_sha256=sha, filename="poison.flac")
    )
    await publish_job(
        pipeline.js,
        pipeline.names.job_subject(BusStage.PREPROCESS),
        body,
        task_id=task_id,
        stage=BusStage.PREPROCESS.value,
        audio_duration_s=0.0,
        headers=headers,
    )
    return task_id


async def test_poison_fails_after_the_delivery_limit_without_holding_up_others(
    stack: LocalStack, fault_ledger: Ledger, tmp_path: Path
) -> None:
    assert stack.runtime is not None
    pipeline = stack.runtime.pipeline
    clips = distinct_clips(7, seed=51)
    paths = write_clips(tmp_path, clips[1:])
    run = FaultRun("poison", stack, fault_ledger)
    async with EscribaClient(stack.address) as client, run:
        poison = run.record(await submit_poison(pipeline, clips[0]))
        await run.submit_all(client, paths)
        result = await run.settle(timeout_s=120)
    assert_clean(result, completed=len(paths))
    assert result.statuses[poison] == "failed"
    reason, message = result.errors[poison]
    assert reason == "object_read_failed", message
    assert message.startswith("preprocess: ") and f"after {MAX_DELIVER} attempts" in message, message

    conn = await connect_db(run.dsn, run.schema)
    try:
        row = await conn.fetchrow(
            "SELECT stage_attempts, extract(epoch FROM completed_at - started_at) AS span_s,"
            " completed_at FROM transcription_tasks WHERE id = $1",
            uuid.UUID(poison),
        )
        others_done = await conn.fetchval(
            "SELECT max(completed_at) FROM transcription_tasks WHERE id = ANY($1::uuid[])",
            [uuid.UUID(t) for t in run.ids if t != poison],
        )
    finally:
        await conn.close()
    assert row is not None
    assert json.loads(row["stage_attempts"]) == {"preprocess": MAX_DELIVER}
    # Each retry waited out its backoff: JetStream does not redeliver a nak'd job before its delay, so
    # the first attempt and the failure are at least the sum of the delays apart (a lower bound only).
    assert float(row["span_s"]) >= sum(BACKOFF_S[: MAX_DELIVER - 1]) - 0.05
    # The others went through while it waited (preprocess runs one job at a time here).
    assert others_done < row["completed_at"]
