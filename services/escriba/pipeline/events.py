"""Task events on ``<prefix>.events.task.<task_id>``: every status change, so WatchTask streams progress
without polling PostgreSQL.

Events are best-effort notifications next to the database (the record of truth): a failed publish is
logged, never allowed to fail the stage, and watchers re-read the task from the database periodically.
Status events carry the status only; a watcher reads the full task from the database on a terminal
event. Progress events (while transcribing) carry how far decoding is and the segments finished since
the previous one, in bounded parts, so no event approaches the NATS message size limit however long
the transcript.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from escriba.bus import BusNames, publish_event
from escriba.db.models import TaskRecord
from escriba.pipeline.taskpb import status_to_pb
from escriba.v1 import tasks_pb2

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(self, js: JetStreamContext, names: BusNames) -> None:
        self.js = js
        self.names = names

    async def publish(self, task: TaskRecord, message: str = "") -> None:
        now = Timestamp()
        now.FromDatetime(datetime.now(UTC))
        event = tasks_pb2.TaskEvent(
            task_id=task.id, status=status_to_pb(task.status), message=message, at=now
        )
        try:
            await publish_event(
                self.js,
                self.names,
                task.id,
                event.SerializeToString(),
                msg_id=f"{task.id}:{task.status.value}",
            )
        except Exception:
            log.warning("could not publish task event", extra={"status": task.status.value}, exc_info=True)

    async def publish_progress(self, event: tasks_pb2.TaskEvent, sequence: int) -> None:
        """One progress event of a task (``sequence`` numbers them per task, for deduplication)."""
        now = Timestamp()
        now.FromDatetime(datetime.now(UTC))
        event.at.CopyFrom(now)
        event.status = tasks_pb2.TASK_STATUS_TRANSCRIBING
        try:
            await publish_event(
                self.js,
                self.names,
                event.task_id,
                event.SerializeToString(),
                msg_id=f"{event.task_id}:progress:{sequence}",
            )
        except Exception:
            log.warning("could not publish a progress event", exc_info=True)
