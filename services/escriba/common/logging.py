"""Structured JSON logs with the task and trace they belong to.

Every record is one JSON object per line, so a log pipeline can index ``task_id`` and ``trace_id`` and an
operator can follow one task across the gateway and every stage. The task id travels in a context
variable set by whoever handles a task (servicer or worker); the trace id comes from the active
OpenTelemetry span, which exists even when exporting spans is off (see ``escriba.common.tracing``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

_task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("escriba_task_id", default=None)

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


@contextmanager
def task_context(task_id: str | None) -> Iterator[None]:
    """Tag every log record emitted inside the block, and the current span, with ``task_id``.

    So a trace found in the tracing backend leads to the task, and a task's logs lead to its trace.
    """
    if task_id:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("escriba.task_id", task_id)
    token = _task_id.set(task_id)
    try:
        yield
    finally:
        _task_id.reset(token)


def current_task_id() -> str | None:
    return _task_id.get()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        task_id = _task_id.get()
        if task_id:
            entry["task_id"] = task_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(service: str, level: str = "INFO", *, json_format: bool = True) -> None:
    """Install the process-wide handler once, at start-up."""
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that would drown task logs at INFO.
    for noisy in ("faster_whisper", "nats", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
