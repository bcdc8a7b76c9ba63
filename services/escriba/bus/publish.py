"""Publish jobs and task events with the headers the rest of the system relies on.

``Nats-Msg-Id`` (``<task id>:<stage>`` by default) makes a retried publish, for example after a worker
crashed between publishing the next stage and acknowledging its own job, land only once within the
stream's duplicate window. ``Escriba-Audio-Duration-S`` lets the autoscaler sum a backlog in seconds of
audio without decoding payloads. Each job is published inside a PRODUCER span whose W3C trace context
(``traceparent``/``tracestate``) rides in the headers, so the consuming stage continues the task's trace;
a caller's own ``traceparent`` header is kept unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import nats.errors
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

from escriba.bus.errors import BusUnavailableError
from escriba.bus.names import BusNames
from escriba.bus.refusals import refusal
from escriba.common.tracing import inject_headers, producer_span

MSG_ID_HEADER = "Nats-Msg-Id"
TASK_ID_HEADER = "Escriba-Task-Id"
STAGE_HEADER = "Escriba-Stage"
AUDIO_DURATION_HEADER = "Escriba-Audio-Duration-S"

_RESERVED = frozenset(h.lower() for h in (MSG_ID_HEADER, TASK_ID_HEADER, STAGE_HEADER, AUDIO_DURATION_HEADER))


def job_msg_id(task_id: str, stage: str) -> str:
    return f"{task_id}:{stage}"


def audio_duration_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """The job's audio duration in seconds, or None when the header is missing or malformed."""
    if not headers:
        return None
    raw = headers.get(AUDIO_DURATION_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


async def publish_job(
    js: JetStreamContext,
    subject: str,
    message_bytes: bytes,
    *,
    task_id: str,
    stage: str,
    audio_duration_s: float,
    headers: Mapping[str, str] | None = None,
    msg_id: str | None = None,
    timeout_s: float | None = None,
) -> api.PubAck:
    """Publish one job and wait for JetStream to store it; ``ack.duplicate`` is True for a repeat."""
    if not task_id:
        raise ValueError("task_id is required")
    if not stage:
        raise ValueError("stage is required")
    if not (math.isfinite(audio_duration_s) and audio_duration_s >= 0):
        raise ValueError(f"audio_duration_s must be a finite number >= 0, got {audio_duration_s!r}")
    all_headers: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if key.lower() in _RESERVED:
            raise ValueError(f"header {key} is set by publish_job itself")
        all_headers[key] = value
    all_headers[MSG_ID_HEADER] = msg_id or job_msg_id(task_id, stage)
    all_headers[TASK_ID_HEADER] = task_id
    all_headers[STAGE_HEADER] = stage
    all_headers[AUDIO_DURATION_HEADER] = f"{audio_duration_s:.3f}"
    attributes = {
        "messaging.operation.type": "send",
        "messaging.destination.name": subject,
        "messaging.message.id": all_headers[MSG_ID_HEADER],
        "escriba.task_id": task_id,
    }
    with producer_span(f"publish {stage}", attributes):
        # The consumer's span becomes a child of this one (unless the caller set traceparent itself).
        inject_headers(all_headers)
        return await _publish(js, subject, message_bytes, all_headers, timeout_s)


async def publish_event(
    js: JetStreamContext,
    names: BusNames,
    task_id: str,
    event_bytes: bytes,
    *,
    msg_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> api.PubAck:
    """Publish a task event on ``<prefix>.events.task.<task_id>`` (``msg_id`` dedupes a repeated one)."""
    all_headers = dict(headers or {})
    all_headers[TASK_ID_HEADER] = task_id
    if msg_id:
        all_headers[MSG_ID_HEADER] = msg_id
    inject_headers(all_headers)
    return await _publish(js, names.event_subject(task_id), event_bytes, all_headers, timeout_s)


async def _publish(
    js: JetStreamContext, subject: str, data: bytes, headers: dict[str, str], timeout_s: float | None
) -> api.PubAck:
    try:
        return await js.publish(subject, data, timeout=timeout_s, headers=headers)
    except (TimeoutError, nats.errors.NoRespondersError, NoStreamResponseError) as exc:
        raise BusUnavailableError(f"JetStream did not store the message on {subject}") from exc
    except nats.errors.ConnectionClosedError as exc:
        raise BusUnavailableError(f"NATS connection closed while publishing on {subject}") from exc
    except APIError as exc:
        # A stream at its size cap (DiscardNew) refuses the message: transient, and said so.
        raise refusal(exc, subject) from exc
