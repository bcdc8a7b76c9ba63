"""Trace context and metrics across a real JetStream: publish -> deliveries as parent -> children, the
job's publish time for queue wait, retries counted by reason, and events carrying the publisher's trace."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span
from prometheus_client import REGISTRY

from escriba.bus import Job, JobWorker, Stage, publish_event, publish_job
from escriba.common import tracing
from escriba.common.errors import TransientError
from escriba.common.logging import current_task_id
from tests.support.nats_fixtures import Bus
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

STAGE = Stage.CORRECTION


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


def worker(bus: Bus, handler: Callable[[Job], Awaitable[None]]) -> JobWorker:
    async def give_up(job: Job, error: BaseException) -> None:
        raise AssertionError(f"unexpected give-up: {error}")

    return JobWorker(
        bus.nc,
        stream=bus.names.jobs_stream,
        consumer=bus.names.consumer(STAGE),
        handler=handler,
        on_give_up=give_up,
        settings=bus.settings,
    )


async def publish(bus: Bus, task_id: str) -> None:
    await publish_job(
        bus.js, bus.names.job_subject(STAGE), b"job", task_id=task_id, stage=STAGE.value, audio_duration_s=1.0
    )


def delivery(span: ReadableSpan) -> int:
    return int((span.attributes or {}).get("messaging.message.delivery_count", 0))  # type: ignore[arg-type]


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def test_each_delivery_is_a_child_of_the_publish_and_sees_the_publish_time(
    bus: Bus, spans: InMemorySpanExporter
) -> None:
    seen: list[tuple[Job, int, str | None, datetime.datetime]] = []

    async def handler(job: Job) -> None:
        current = get_current_span().get_span_context()
        seen.append((job, current.span_id, current_task_id(), datetime.datetime.now(datetime.UTC)))

    before_publish = datetime.datetime.now(datetime.UTC)
    with tracing.tracer().start_as_current_span("caller"):
        await publish(bus, "task-traced")
    after_publish = datetime.datetime.now(datetime.UTC)
    await asyncio.sleep(0.3)  # the job waits in its queue before any worker exists
    async with worker(bus, handler):
        await eventually(lambda: len(seen) == 1, what="the job to run")
        await eventually(lambda: len(named(spans, f"process {STAGE.value}")) == 1, what="its span to end")

    job, current_span_id, task_id, started = seen[0]
    assert "traceparent" in job.headers
    (caller,) = named(spans, "caller")
    (publish_span,) = named(spans, f"publish {STAGE.value}")
    (process,) = named(spans, f"process {STAGE.value}")
    assert publish_span.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert publish_span.parent is not None and publish_span.parent.span_id == caller.context.span_id
    assert process.parent is not None and process.parent.span_id == publish_span.context.span_id
    assert process.context.trace_id == caller.context.trace_id
    # The handler runs inside the delivery's span, tagged with the job's task.
    assert current_span_id == process.context.span_id and task_id == "task-traced"
    assert process.attributes is not None
    assert process.attributes["escriba.task_id"] == "task-traced"
    assert process.attributes["messaging.destination.name"] == bus.names.job_subject(STAGE)
    assert process.attributes["messaging.message.delivery_count"] == 1
    # JetStream's timestamp is the publish time, not the delivery time: the wait before the worker shows.
    assert job.meta.timestamp is not None
    assert before_publish - datetime.timedelta(seconds=1) <= job.meta.timestamp <= after_publish
    waited = job.meta.waited_s(started)
    assert waited is not None and waited >= 0.3


async def test_a_retried_delivery_is_counted_and_each_attempt_has_its_span(
    bus: Bus, spans: InMemorySpanExporter
) -> None:
    labels = {"stage": STAGE.value, "reason": "busy"}
    before = REGISTRY.get_sample_value("escriba_job_retries_total", labels) or 0.0
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(job.meta.delivery_count)
        if job.meta.delivery_count == 1:
            raise TransientError("model server busy", reason="busy")

    with tracing.tracer().start_as_current_span("caller"):
        await publish(bus, "task-retried")
    async with worker(bus, handler):
        await eventually(lambda: len(named(spans, f"process {STAGE.value}")) == 2, what="two attempts")
    assert attempts == [1, 2]
    assert REGISTRY.get_sample_value("escriba_job_retries_total", labels) == before + 1
    (publish_span,) = named(spans, f"publish {STAGE.value}")
    first, second = sorted(named(spans, f"process {STAGE.value}"), key=delivery)
    for attempt in (first, second):
        assert attempt.parent is not None and attempt.parent.span_id == publish_span.context.span_id
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None and first.attributes["escriba.error.reason"] == "busy"
    assert second.status.status_code is StatusCode.UNSET


async def test_events_carry_the_publishers_trace(bus: Bus, spans: InMemorySpanExporter) -> None:
    subscription = await bus.nc.subscribe(bus.names.event_subject("task-e"))
    try:
        with tracing.tracer().start_as_current_span("stage") as span:
            await publish_event(bus.js, bus.names, "task-e", b"event")
        message = await subscription.next_msg(timeout=5)
    finally:
        await subscription.unsubscribe()
    trace_hex = format(span.get_span_context().trace_id, "032x")
    assert (message.headers or {}).get("traceparent", "").split("-")[1] == trace_hex
