"""The CLI's many-files runner: what it finds, how it sums up, and that the live display draws."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from escriba.transcribe_files import FileRun, PlainDisplay, RichDisplay, Summary, display_for, expand

pytestmark = pytest.mark.timeout(30)


def test_directories_expand_to_their_audio_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.MP3", "a.wav", "notes.txt", "b/1.flac"):
        (tmp_path / name).write_bytes(b"x")
    given = tmp_path / "given.bin"
    given.write_bytes(b"x")
    found = expand([str(tmp_path / "b"), str(given), str(tmp_path)])
    names = [str(p.relative_to(tmp_path)) for p in found]
    assert names == ["b/1.flac", "b/2.MP3", "given.bin", "a.wav", "b/1.flac", "b/2.MP3"]


def test_summary_counts_audio_real_time_and_failures() -> None:
    runs = [
        FileRun(0, Path("a.wav"), duration_s=90.0, status="completed"),
        FileRun(1, Path("b.wav"), duration_s=30.0, status="failed", error="not_audio: no"),
    ]
    lines = Summary(runs, wall_s=20.0).lines()
    assert lines[0] == "2 files (1 completed, 1 failed), 2:00 of audio in 20.0 s: 6.0x real time"
    assert lines[1] == "  failed: b.wav: not_audio: no"


def test_plain_display_writes_one_line_per_change() -> None:
    out = io.StringIO()
    display = PlainDisplay(out)
    run = FileRun(0, Path("a.wav"))
    for status in ("uploading", "queued", "queued", "transcribing", "completed"):
        run.status = status
        display.update(run)
    assert out.getvalue().splitlines() == [
        "a.wav: uploading",
        "a.wav: queued",
        "a.wav: transcribing",
        "a.wav: completed",
    ]


def test_rich_display_draws_progress_and_the_outcome_of_each_file() -> None:
    out = io.StringIO()
    display = RichDisplay(2, console=Console(file=out, force_terminal=True, color_system=None, width=120))
    a = FileRun(0, Path("a.wav"), duration_s=10.0)
    b = FileRun(1, Path("b.wav"), duration_s=5.0)
    for run, status, done in ((a, "transcribing", 4.0), (b, "queued", 0.0), (a, "completed", 10.0)):
        run.status, run.done_s = status, done
        display.update(run)
    b.status, b.error = "failed", "not_audio: no"
    display.update(b)
    display.close()
    text = out.getvalue()
    assert "a.wav: done" in text and "b.wav: failed not_audio: no" in text


def test_a_pipe_gets_plain_lines_and_quiet_gets_nothing() -> None:
    assert isinstance(display_for(3, quiet=False, stream=io.StringIO()), PlainDisplay)
    assert display_for(3, quiet=True) is None
