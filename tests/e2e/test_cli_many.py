"""Many files through the CLI: submitted concurrently, printed in input order, summed up at the end."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from escriba.client import EscribaClient, make_spec
from escriba.local.stack import LocalStack
from escriba.transcribe_files import FileRun, FileRunner, PlainDisplay, expand
from escriba.v1 import tasks_pb2
from tests.support import media

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech" / "audio"
SHORT = ["ljspeech_LJ001-0004.mp3", "ljspeech_LJ001-0006.flac", "vctk_p238_165.wav", "praatio_mary.wav"]


class CountingClient:
    """The real client, counting the tasks between their upload and their terminal event."""

    def __init__(self, inner: EscribaClient) -> None:
        self.inner = inner
        self.active = 0
        self.most_active = 0

    async def create_task(self, path: Path, spec: tasks_pb2.TaskSpec) -> tasks_pb2.Task:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        return await self.inner.create_task(path, spec)

    async def watch(self, task_id: str) -> AsyncIterator[tasks_pb2.TaskEvent]:
        try:
            async for event in self.inner.watch(task_id):
                yield event
        finally:
            self.active -= 1


async def test_files_run_concurrently_and_come_back_in_input_order(
    client: EscribaClient, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in SHORT:
        shutil.copy(SPEECH / name, folder / name)
    broken = media.write(folder / "zz_broken.mp3", media.random_bytes())
    files = expand([str(folder)])
    assert [p.name for p in files] == sorted([*SHORT, broken.name])
    counting = CountingClient(client)
    log = io.StringIO()
    seen: list[FileRun] = []
    runner = FileRunner(
        counting,  # type: ignore[arg-type]
        lambda p: make_spec(p.name),
        jobs=3,
        display=PlainDisplay(log),
    )
    summary = await runner.run(files, on_done=seen.append)
    assert [r.path for r in seen] == files
    assert counting.most_active == 3
    assert [r.status for r in seen] == ["completed"] * len(SHORT) + ["failed"]
    assert "not" in seen[-1].error.lower()
    assert all(r.task is not None and r.task.result.corrected_text for r in seen[:-1])
    decoded = sum(r.task.audio.duration_s for r in seen[:-1] if r.task is not None)
    assert summary.audio_s == pytest.approx(decoded, abs=0.01)
    lines = summary.lines()
    assert lines[0].startswith("5 files (4 completed, 1 failed)") and "real time" in lines[0]
    assert "zz_broken.mp3" in lines[1]
    statuses = log.getvalue().splitlines()
    assert "ljspeech_LJ001-0004.mp3: completed" in statuses
    assert any(line.startswith("zz_broken.mp3: failed: ") for line in statuses)


async def test_the_cli_prints_json_in_input_order_and_a_summary(stack: LocalStack, tmp_path: Path) -> None:
    files = [SPEECH / name for name in reversed(SHORT)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCRIBA_")}
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "escriba.cli",
            "transcribe",
            *map(str, files),
            "--server",
            stack.address,
            "--format",
            "json",
            "--jobs",
            "4",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [line["filename"] for line in lines] == [p.name for p in files]
    assert all(line["status"] == "completed" and line["text"] for line in lines)
    stderr = result.stderr.splitlines()
    assert any(line.startswith("4 files (4 completed, 0 failed)") for line in stderr), result.stderr
    assert f"{files[0].name}: completed" in stderr  # plain lines: stderr is not a terminal
