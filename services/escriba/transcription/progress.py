"""Live progress of one transcription: events that let a watcher see text before the task completes.

The engine reports from a model thread whenever windows finish; this hops to the event loop, keeps
only the newest report, and publishes at most one event per interval (the last report always): how
many audio-seconds are decoded of the total, and the segments finished since the previous event.
Segments go without their words and at most :data:`MAX_SEGMENTS_PER_EVENT` (and
:data:`MAX_TEXT_BYTES_PER_EVENT`) to an event; a longer backlog is sent in several. GetTask reads the
same progress from the task row.
"""

from __future__ import annotations

import asyncio
import logging
import time

from escriba.pipeline.runtime import Pipeline
from escriba.transcript import Progress
from escriba.transcript_pb import segment_to_pb
from escriba.v1 import common_pb2, tasks_pb2

log = logging.getLogger(__name__)

MAX_SEGMENTS_PER_EVENT = 32
MAX_TEXT_BYTES_PER_EVENT = 16 * 1024


class ProgressReporter:
    """Publishes one task's progress while its transcription runs (``async with`` around it)."""

    def __init__(self, pipeline: Pipeline, task_id: str, *, interval_s: float) -> None:
        self._pipeline = pipeline
        self._task_id = task_id
        self._interval_s = interval_s
        self._loop = asyncio.get_running_loop()
        self._latest: Progress | None = None
        self._changed = asyncio.Event()
        self._sent_segments = 0
        self._sequence = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def __call__(self, report: Progress) -> None:
        """The engine's listener: from any thread, never blocking the model."""
        self._loop.call_soon_threadsafe(self._offer, report)

    def _offer(self, report: Progress) -> None:
        self._latest = report
        self._changed.set()

    async def __aenter__(self) -> ProgressReporter:
        self._task = asyncio.create_task(self._run(), name=f"progress {self._task_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)  # a report handed over just before (call_soon_threadsafe) lands first
        self._closing = True
        self._changed.set()
        if self._task is not None:
            # The last report goes out before the transcript moves on (unless the job failed).
            try:
                await asyncio.wait_for(self._task, timeout=max(5.0, self._interval_s * 2))
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    async def _run(self) -> None:
        last_sent = 0.0
        while True:
            await self._changed.wait()
            self._changed.clear()
            if not self._closing:
                wait = self._interval_s - (time.monotonic() - last_sent)
                if wait > 0:
                    await asyncio.sleep(wait)
            report, self._latest = self._latest, None
            if report is not None:
                try:
                    await self._publish(report)
                except Exception:  # progress is a courtesy: never the reason a transcription fails
                    log.warning("could not report progress", exc_info=True)
                last_sent = time.monotonic()
            if self._closing and self._latest is None:
                return

    async def _publish(self, report: Progress) -> None:
        pipeline = self._pipeline
        await pipeline.repo.record_progress(self._task_id, report.done_s)
        pending = report.segments[self._sent_segments :]
        while True:
            part: list[common_pb2.Segment] = []
            size = 0
            for segment in pending:
                size += len(segment.text.encode())
                if part and (len(part) == MAX_SEGMENTS_PER_EVENT or size > MAX_TEXT_BYTES_PER_EVENT):
                    break
                part.append(segment_to_pb(segment.with_words(())))
            event = tasks_pb2.TaskEvent(
                task_id=self._task_id,
                progress=tasks_pb2.Progress(audio_done_s=report.done_s, audio_total_s=report.total_s),
                segments=part,
                first_segment=self._sent_segments,
            )
            self._sequence += 1
            await pipeline.events.publish_progress(event, self._sequence)
            self._sent_segments += len(part)
            pending = pending[len(part) :]
            if not pending:
                return
