"""A transcription worker process killed with SIGKILL mid-job: its task still completes, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from escriba.client import EscribaClient
from escriba.db.states import TaskStatus
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from escriba.pipeline.taskpb import status_from_pb
from tests.support import media
from tests.support.stack import stack_config, status_name
from tests.support.text import JFK_REFERENCE, wer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    config = stack_config(nats_server.url, postgres_dsn, mode="processes")
    config.restart = False  # the test decides when the worker comes back
    async with LocalStack(config) as running:
        yield running


async def test_sigkill_mid_job_neither_loses_nor_duplicates(stack: LocalStack, tmp_path: Path) -> None:
    # About 90 s of speech: long enough that the kill lands while the model is running.
    speech = media.long_speech(90.0)
    path = media.write(tmp_path / "long.flac", media.to_flac(speech, 16000))
    async with EscribaClient(stack.address) as client:
        task = await client.create_task(path)
        async with asyncio.timeout(120):
            async for event in client.watch(task.id):
                if status_from_pb(event.status) == TaskStatus.TRANSCRIBING:
                    break
        await asyncio.sleep(1.0)  # the model is decoding now
        victim = stack.processes["transcription"]
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.wait)
        stack.restart_service("transcription")
        async with asyncio.timeout(300):
            final = None
            async for event in client.watch(task.id):
                if event.HasField("task"):
                    final = event.task
        assert final is not None
        assert status_name(final) == "completed", final.error
        assert final.attempts >= 4  # preprocess, transcription twice, correction
        assert wer(JFK_REFERENCE, final.result.corrected_text[: len(JFK_REFERENCE) + 40]) <= 0.5
    # One task row, one stored result per stage.
    conn = await asyncpg.connect(stack.database_url)
    try:
        schema = stack.config.env["ESCRIBA_DATABASE_SCHEMA"]
        rows = await conn.fetch(
            f'SELECT stage, count(*) AS n FROM "{schema}".task_stage_results'
            " WHERE task_id = $1 GROUP BY stage",
            uuid.UUID(task.id),
        )
        assert {r["stage"]: r["n"] for r in rows} == {"preprocess": 1, "transcription": 1, "correction": 1}
        stage_attempts = await conn.fetchval(
            f'SELECT stage_attempts FROM "{schema}".transcription_tasks WHERE id = $1',
            uuid.UUID(task.id),
        )
        assert json.loads(stage_attempts)["transcription"] == 2
    finally:
        await conn.close()
