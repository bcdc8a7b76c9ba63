"""The CLI as a user runs it: `escriba transcribe FILE --format json` with nothing running."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import media
from tests.support.text import JFK_REFERENCE, wer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _clean_env() -> dict[str, str]:
    """No server configured: the command must boot its own embedded stack."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ESCRIBA_")}


async def test_transcribe_mp3_to_json_with_nothing_running(tmp_path: Path) -> None:
    samples, rate = media.speech("jfk.flac")
    mp3 = media.write(tmp_path / "jfk.mp3", media.to_mp3(samples, rate))
    broken = media.write(tmp_path / "broken.mp3", media.random_bytes())
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "escriba.cli", "transcribe", str(mp3), str(broken), "--format", "json"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 1, result.stderr[-3000:]  # one of the two files failed
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [line["status"] for line in lines] == ["completed", "failed"]
    good, bad = lines
    for key in ("task_id", "status", "text", "language", "duration_s", "segments"):
        assert key in good
    assert wer(JFK_REFERENCE, good["text"]) <= 0.10
    assert good["language"] == "en" and good["duration_s"] == pytest.approx(11.0, abs=0.1)
    assert good["segments"] and good["segments"][0]["words"]
    assert bad["error_reason"] == "not_audio" and bad["error"]


async def test_transcribe_writes_subtitles_to_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "escriba.cli",
            "transcribe",
            str(media.HOTWORDS),
            "--format",
            "srt",
            "--hotwords",
            "ComfyUI",
            "--output",
            str(out),
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    srt = (out / "hotwords.srt").read_text()
    assert srt.startswith("1\n00:00:00,") and "ComfyUI" in srt
