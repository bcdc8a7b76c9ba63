"""One transcript per channel: a stereo recording with a different speaker on each side comes back
with each channel's sentence in its own segments, labelled, merged by time; a silent or duplicated
channel is transcribed once, as the mixdown would be."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from escriba.client import EscribaClient, make_spec
from escriba.local.stack import LocalStack
from escriba.v1 import tasks_pb2
from tests.support import media
from tests.support.stack import run_task
from tests.support.text import wer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

LEFT = "He began a confused complaint against the wizard, who had vanished behind the curtain on the left."
RIGHT = "The horizon seems extremely distant."


def separate(path: Path) -> tasks_pb2.TaskSpec:
    spec = make_spec(path.name, output_formats=["srt"])
    spec.transcription.channels = "separate"
    return spec


async def test_each_channel_has_its_own_segments(client: EscribaClient) -> None:
    task = await run_task(client, media.STEREO, separate(media.STEREO))
    assert task.status == tasks_pb2.TASK_STATUS_COMPLETED, task.error
    segments = task.result.segments
    assert {s.channel for s in segments} == {0, 1}
    left = " ".join(s.text for s in segments if s.channel == 0)
    right = " ".join(s.text for s in segments if s.channel == 1)
    assert wer(LEFT, left) < 0.25, left
    assert wer(RIGHT, right) < 0.25, right
    assert all(s.speaker == f"Speaker {s.channel + 1}" for s in segments)
    starts = [s.start_s for s in segments]
    assert starts == sorted(starts) and [s.id for s in segments] == list(range(len(segments)))
    lines = task.result.corrected_text.splitlines()
    assert any(line.startswith("Speaker 1: ") and "wizard" in line for line in lines)
    assert any(line.startswith("Speaker 2: ") and "horizon" in line for line in lines)
    assert "Speaker 1: " in task.result.srt and "Speaker 2: " in task.result.srt


async def test_mixed_is_still_the_default(client: EscribaClient) -> None:
    task = await run_task(client, media.STEREO, make_spec(media.STEREO.name))
    assert task.status == tasks_pb2.TASK_STATUS_COMPLETED
    assert not any(s.speaker for s in task.result.segments)
    assert not any(s.HasField("channel") for s in task.result.segments)


@pytest.mark.parametrize("layout", ["mono-saved-as-stereo", "one-side-silent"])
async def test_a_duplicate_or_silent_channel_is_transcribed_once(
    client: EscribaClient, tmp_path: Path, layout: str
) -> None:
    samples, rate = media.speech("jfk.flac")
    mono = samples[0]
    stereo = np.stack([mono, mono]) if layout == "mono-saved-as-stereo" else media.one_sided(mono)
    path = media.write(tmp_path / f"{layout}.wav", media.to_wav(stereo, rate))
    task = await run_task(client, path, separate(path))
    assert task.status == tasks_pb2.TASK_STATUS_COMPLETED, task.error
    assert not any(s.speaker for s in task.result.segments)
    assert "country" in task.result.corrected_text
    assert not task.result.corrected_text.startswith("Speaker")


async def test_an_unknown_channels_mode_is_refused(client: EscribaClient) -> None:
    import grpc

    spec = make_spec(media.STEREO.name)
    spec.transcription.channels = "diarize"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.create_task(media.STEREO, spec)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "channels" in (info.value.details() or "")


async def test_the_cli_asks_for_separate_channels(stack: LocalStack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCRIBA_")}
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "escriba.cli",
            "transcribe",
            str(media.STEREO),
            "--server",
            stack.address,
            "--separate-channels",
            "--format",
            "json",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    assert {s["speaker"] for s in line["segments"]} == {"Speaker 1", "Speaker 2"}
    assert line["text"].startswith("Speaker ")
