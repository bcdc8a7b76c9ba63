"""``escriba transcribe FILES...``: many files through the platform at once, the way it is meant to run.

Files are submitted concurrently (``--jobs`` at a time), so the transcription stage batches their
windows across requests instead of seeing one file after another. Progress is counted in
audio-seconds (the unit the work is made of), with per-file status; results are printed in input
order as soon as every earlier file is done, and a summary ends the run. A terminal gets a live
display (``rich``); anything else (a pipe, a CI log) gets one plain line per change.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from escriba.client import EscribaClient
from escriba.pipeline.taskpb import status_from_pb
from escriba.v1 import tasks_pb2

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

#: What a directory given on the command line contributes: files whose extension says audio or video.
AUDIO_SUFFIXES = frozenset(
    [
        ".wav",
        ".flac",
        ".mp3",
        ".m4a",
        ".mp4",
        ".aac",
        ".ogg",
        ".oga",
        ".opus",
        ".webm",
        ".wma",
        ".mka",
        ".mkv",
        ".mov",
        ".aiff",
        ".aif",
        ".amr",
        ".3gp",
    ]
)
DEFAULT_JOBS = 8


def expand(paths: Iterable[str]) -> list[Path]:
    """Files as given, and the audio files under each directory (sorted, recursive)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            )
        else:
            found.append(path)
    return found


def probe_duration_s(path: Path) -> float:
    """The container's duration, to size the progress bar before the server has decoded the file (0
    when the container does not say: the bar then grows when the server reports it)."""
    try:
        import av

        with av.open(str(path)) as container:
            if container.duration:
                return float(container.duration) / 1_000_000
            stream = container.streams.audio[0] if container.streams.audio else None
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except Exception:
        return 0.0
    return 0.0


@dataclass
class FileRun:
    """One file's way through the platform, as the display and the summary see it."""

    index: int
    path: Path
    duration_s: float = 0.0
    done_s: float = 0.0
    status: str = "waiting"
    task: tasks_pb2.Task | None = None
    error: str = ""
    finished: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "completed"


class Display(Protocol):
    def update(self, run: FileRun) -> None: ...

    def close(self) -> None: ...


@dataclass
class Summary:
    runs: Sequence[FileRun]
    wall_s: float

    @property
    def audio_s(self) -> float:
        return sum(r.duration_s for r in self.runs)

    @property
    def failures(self) -> list[FileRun]:
        return [r for r in self.runs if not r.ok]

    def lines(self) -> list[str]:
        rtf = self.audio_s / self.wall_s if self.wall_s > 0 else 0.0
        ok = len(self.runs) - len(self.failures)
        files = "1 file" if len(self.runs) == 1 else f"{len(self.runs)} files"
        lines = [
            f"{files} ({ok} completed, {len(self.failures)} failed), "
            f"{_clock(self.audio_s)} of audio in {_clock(self.wall_s)}: {rtf:.1f}x real time"
        ]
        lines += [f"  failed: {r.path}: {r.error or r.status}" for r in self.failures]
        return lines


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# Running ------------------------------------------------------------------------------------------


@dataclass
class FileRunner:
    """Submits ``jobs`` files at a time and follows each to its end."""

    client: EscribaClient
    spec_for: Callable[[Path], tasks_pb2.TaskSpec]
    jobs: int = DEFAULT_JOBS
    display: Display | None = None
    runs: list[FileRun] = field(default_factory=list)

    async def run(self, paths: Sequence[Path], on_done: Callable[[FileRun], None] | None = None) -> Summary:
        """Every file to its terminal state; ``on_done`` sees them in input order."""
        started = time.perf_counter()
        self.runs = [FileRun(i, p) for i, p in enumerate(paths)]
        durations = await asyncio.gather(*(asyncio.to_thread(probe_duration_s, p) for p in paths))
        for run, duration in zip(self.runs, durations, strict=True):
            run.duration_s = duration
            self._show(run)
        gate = asyncio.Semaphore(max(1, self.jobs))
        done = asyncio.Condition()

        async def one(run: FileRun) -> None:
            async with gate:
                await self._follow(run)
            async with done:
                run.finished = True
                done.notify_all()

        workers = [asyncio.create_task(one(r)) for r in self.runs]
        try:
            async with done:
                for run in self.runs:
                    await done.wait_for(lambda run=run: run.finished)  # type: ignore[misc]
                    if on_done is not None:
                        on_done(run)
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            if self.display is not None:
                self.display.close()
        return Summary(self.runs, time.perf_counter() - started)

    async def _follow(self, run: FileRun) -> None:
        try:
            run.status = "uploading"
            self._show(run)
            task = await self.client.create_task(run.path, self.spec_for(run.path))
            run.task = task
            async for event in self.client.watch(task.id):
                status = status_from_pb(event.status)
                if status is not None:
                    run.status = status.value
                if event.HasField("progress") and event.progress.audio_total_s:
                    run.duration_s = event.progress.audio_total_s
                    run.done_s = min(event.progress.audio_done_s, run.duration_s)
                if event.HasField("task"):
                    run.task = event.task
                self._show(run)
            final = run.task
            status = status_from_pb(final.status) if final is not None else None
            run.status = status.value if status is not None else "unknown"
            if final is not None and final.audio.duration_s:
                run.duration_s = final.audio.duration_s
            if run.ok:
                run.done_s = run.duration_s
            elif final is not None:
                run.error = final.error or final.error_reason
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            run.status = "failed"
            run.error = _describe(exc)
        self._show(run)

    def _show(self, run: FileRun) -> None:
        if self.display is not None:
            self.display.update(run)


def _describe(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):
        text = details()
        if text:
            return str(text)
    return f"{type(exc).__name__}: {exc}"


# Displays -----------------------------------------------------------------------------------------


class PlainDisplay:
    """One line per change of a file's status: readable in a log, grep-able, no control codes."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._last: dict[int, tuple[str, str]] = {}

    def update(self, run: FileRun) -> None:
        if run.status == "failed" and not run.error:
            return  # the reason follows at once: one line with it
        if self._last.get(run.index) == (run.status, run.error):
            return
        self._last[run.index] = (run.status, run.error)
        suffix = f": {run.error}" if run.error else ""
        print(f"{run.path.name}: {run.status}{suffix}", file=self._stream, flush=True)

    def close(self) -> None:
        return None


class RichDisplay:
    """A bar of audio-seconds over all files with its ETA, and a line per file in flight."""

    def __init__(self, total_files: int, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[audio]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._overall = self._progress.add_task(f"{total_files} files", total=None, audio="")
        self._files: dict[int, TaskID] = {}
        self._runs: dict[int, FileRun] = {}
        self._printed: set[int] = set()
        self._progress.start()

    def update(self, run: FileRun) -> None:
        self._runs[run.index] = run
        progress = self._progress
        if run.finished or run.status in ("completed", "failed", "cancelled"):
            if run.index in self._files:
                progress.remove_task(self._files.pop(run.index))
            mark = "[green]done[/]" if run.ok else f"[red]{run.status}[/] {run.error}"
            if run.index not in self._printed and (run.ok or run.error or run.status != "failed"):
                self._printed.add(run.index)
                progress.console.print(f"{run.path.name}: {mark}", highlight=False, markup=True)
        elif run.status not in ("waiting",):
            if run.index not in self._files:
                self._files[run.index] = progress.add_task(
                    f"  {run.path.name[:40]}", total=run.duration_s or None, audio=""
                )
            progress.update(
                self._files[run.index],
                completed=run.done_s,
                total=run.duration_s or None,
                audio=run.status,
            )
        total = sum(r.duration_s for r in self._runs.values())
        done = sum(r.duration_s if r.ok else r.done_s for r in self._runs.values())
        finished = sum(1 for r in self._runs.values() if r.status in ("completed", "failed", "cancelled"))
        progress.update(
            self._overall,
            total=total or None,
            completed=done,
            description=f"{finished}/{len(self._runs)} files",
            audio=f"{_clock(done)} / {_clock(total)} audio",
        )

    def close(self) -> None:
        self._progress.stop()


def display_for(total_files: int, *, quiet: bool, stream: IO[str] | None = None) -> Display | None:
    """Rich on a terminal, plain lines elsewhere, nothing when quiet."""
    if quiet:
        return None
    stream = stream or sys.stderr
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return RichDisplay(total_files)
    return PlainDisplay(stream)
