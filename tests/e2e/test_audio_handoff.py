"""Preprocess and transcription in one process: the canonical audio goes from one stage to the other
directly (issue 14), not back through the object store, and nothing is left behind once taken."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from escriba.client import EscribaClient, make_spec
from escriba.pipeline.handoff import HANDOFF
from escriba.v1 import tasks_pb2
from tests.support import media
from tests.support.stack import run_task
from tests.support.text import JFK_REFERENCE, wer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


def fresh_upload(folder: Path, name: str, gain_db: float, *, stereo: bool = False) -> Path:
    """New bytes (so no cache of an earlier test answers) of real speech."""
    samples, rate = media.speech("stereo_diarization.wav" if stereo else "jfk.flac")
    path = folder / name
    path.write_bytes(media.to_wav(media.with_gain(samples, gain_db), rate))
    return path


async def test_the_transcription_stage_takes_what_preprocess_just_stored(
    client: EscribaClient, tmp_path: Path
) -> None:
    assert HANDOFF.enabled  # the in-process stack built a transcription stage
    before = dataclasses.replace(HANDOFF.stats)
    task = await run_task(client, fresh_upload(tmp_path, "jfk-handoff.wav", -2.3))
    assert task.status == tasks_pb2.TASK_STATUS_COMPLETED, task.error
    assert wer(JFK_REFERENCE, task.result.text) < 0.25, task.result.text
    assert HANDOFF.stats.offered == before.offered + 1
    assert HANDOFF.stats.taken == before.taken + 1
    assert HANDOFF.stats.missed == before.missed
    assert HANDOFF.held_bytes == 0


async def test_each_channel_is_handed_over_too(client: EscribaClient, tmp_path: Path) -> None:
    before = dataclasses.replace(HANDOFF.stats)
    path = fresh_upload(tmp_path, "stereo-handoff.wav", -1.7, stereo=True)
    spec = make_spec(path.name)
    spec.transcription.channels = "separate"
    task = await run_task(client, path, spec)
    assert task.status == tasks_pb2.TASK_STATUS_COMPLETED, task.error
    assert {s.channel for s in task.result.segments} == {0, 1}
    # The mixdown (taken and dropped: the channels are transcribed instead) and both channels.
    assert HANDOFF.stats.offered == before.offered + 3
    assert HANDOFF.stats.taken == before.taken + 3
    assert HANDOFF.held_bytes == 0


async def test_an_upload_seen_before_leaves_nothing_behind(client: EscribaClient, tmp_path: Path) -> None:
    path = fresh_upload(tmp_path, "jfk-twice.wav", -0.9)
    first = await run_task(client, path)
    before = dataclasses.replace(HANDOFF.stats)
    again = await run_task(client, path)
    assert again.status == tasks_pb2.TASK_STATUS_COMPLETED
    assert again.result.text == first.result.text and again.result.transcript_from_cache
    assert HANDOFF.stats.offered == before.offered  # preprocess answered from its cache: no new audio
    assert HANDOFF.held_bytes == 0
