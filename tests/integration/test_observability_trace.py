"""One task through the in-process local stack is one connected trace, and its logs carry that trace.

Real gateway, NATS, PostgreSQL, stage workers and Whisper; spans go to the OpenTelemetry SDK's
in-memory exporter through Escriba's own provider hook (the process-global provider is left alone).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from escriba.client import EscribaClient
from escriba.common import tracing
from escriba.common.logging import JsonFormatter
from tests.support import media
from tests.support.stack import run_task, status_name
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

CREATE = "escriba.v1.TaskService/CreateTask"
STAGES = ("preprocess", "transcription", "correction")


@contextmanager
def _provided(provider: TracerProvider) -> Iterator[None]:
    tracing.use_tracer_provider(provider)
    try:
        yield
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on: every span is recorded and kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with _provided(provider):
        yield exporter


@pytest.fixture
def unsampled() -> Iterator[InMemorySpanExporter]:
    """Escriba's default with exporting off: spans exist (ids propagate) but none is recorded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with _provided(provider):
        yield exporter


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every record at INFO and above, formatted as the services format them."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _records(sink: io.StringIO, task_id: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in sink.getvalue().splitlines() if line.startswith("{")]
    return [e for e in entries if e.get("task_id") == task_id]


def _jobs_done(sink: io.StringIO, task_id: str) -> set[Any]:
    return {r.get("consumer") for r in _records(sink, task_id) if r["msg"] == "job done"}


async def _every_stage_done(sink: io.StringIO, task_id: str) -> None:
    """The task reads completed once correction stored it, a moment before its worker acks and logs."""
    await eventually(lambda: _jobs_done(sink, task_id) == set(STAGES), what="every stage's 'job done'")


def _attr(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def _path_to_root(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = [span.name]
    while span.parent is not None:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_one_task_is_one_connected_trace(
    client: EscribaClient, exported: InMemorySpanExporter, json_logs: io.StringIO
) -> None:
    task = await run_task(client, media.JFK)
    assert status_name(task) == "completed", task.error
    await _every_stage_done(json_logs, task.id)  # the last consumer span ends after its log

    spans = exported.get_finished_spans()
    created = [
        s
        for s in spans
        if s.name == CREATE and s.kind is SpanKind.SERVER and _attr(s, "escriba.task_id") == task.id
    ]
    assert len(created) == 1, [s.name for s in spans]
    trace_id = created[0].context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}

    # Connected: one root (the client's call), every other span's parent is in the same trace.
    roots = [s for s in in_trace if s.parent is None]
    assert [(r.name, r.kind) for r in roots] == [(CREATE, SpanKind.CLIENT)]
    assert all(s.parent is None or s.parent.span_id in by_id for s in in_trace)

    # Each stage's span is a child of the publish done by the one before, back to CreateTask.
    consumers = {s.name: s for s in in_trace if s.kind is SpanKind.CONSUMER and s.name.startswith("process ")}
    assert set(consumers) == {f"process {stage}" for stage in STAGES}
    assert _path_to_root(consumers["process correction"], by_id) == [
        "process correction",
        "publish correction",
        "process transcription",
        "publish transcription",
        "process preprocess",
        "publish preprocess",
        CREATE,  # the gateway's server span
        CREATE,  # the client's span
    ]
    for span in consumers.values():
        assert _attr(span, "escriba.task_id") == task.id
        assert _attr(span, "messaging.system") == "nats"
        assert span.status.status_code is not StatusCode.ERROR
    assert by_id[created[0].parent.span_id].kind is SpanKind.CLIENT  # type: ignore[union-attr]

    # Logs of the task, from the gateway and from every stage's worker, carry the task's trace.
    records = _records(json_logs, task.id)
    assert records, json_logs.getvalue()[-2000:]
    assert {r.get("trace_id") for r in records} == {_hex(trace_id)}
    assert any(r["msg"] == "task created" for r in records)
    # And each record names the span it was written in, one of this trace's.
    assert {int(r["span_id"], 16) for r in records} <= set(by_id)


async def test_with_exporting_off_logs_still_share_one_trace_id(
    client: EscribaClient, unsampled: InMemorySpanExporter, json_logs: io.StringIO
) -> None:
    task = await run_task(client, media.JFK)
    assert status_name(task) == "completed", task.error
    await _every_stage_done(json_logs, task.id)
    assert unsampled.get_finished_spans() == ()  # nothing recorded, nothing exported
    records = _records(json_logs, task.id)
    trace_ids = {r.get("trace_id") for r in records}
    assert len(trace_ids) == 1 and None not in trace_ids, records
