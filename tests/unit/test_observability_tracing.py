"""Tracing configuration from OTEL_* variables, W3C propagation through headers, error recording, and
JSON log records that name their task and trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from escriba.common import tracing
from escriba.common.errors import InvalidInputError, TransientError
from escriba.common.logging import JsonFormatter, task_context
from escriba.common.settings import SettingsError


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_tracer_provider(provider)
    try:
        yield memory
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


# Configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("none", ()),
        ("otlp", ("otlp",)),
        (" OTLP , console ", ("otlp", "console")),
    ],
)
def test_exporters_come_from_otel_traces_exporter_and_default_to_none(
    value: str | None, expected: tuple[str, ...]
) -> None:
    env = {} if value is None else {"OTEL_TRACES_EXPORTER": value}
    assert tracing.exporter_names(env) == expected


@pytest.mark.parametrize("value", ["zipkin", "none,otlp", "jaeger,console"])
def test_an_unusable_exporter_fails_fast_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": value})
    assert caught.value.variable == "OTEL_TRACES_EXPORTER"


def test_an_unsupported_otlp_protocol_fails_before_anything_is_installed() -> None:
    before = trace.get_tracer_provider()
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    with pytest.raises(SettingsError) as caught:
        tracing.configure_tracing("gateway", env)
    assert caught.value.variable == "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    assert trace.get_tracer_provider() is before


def test_sdk_disabled_installs_nothing() -> None:
    before = trace.get_tracer_provider()
    env = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}
    assert tracing.sdk_disabled(env)
    assert tracing.configure_tracing("gateway", env) is None
    assert trace.get_tracer_provider() is before
    assert not tracing.sdk_disabled({"OTEL_SDK_DISABLED": "false"})


# Propagation --------------------------------------------------------------------------------------


def test_headers_carry_the_current_span_to_a_child_elsewhere(exporter: InMemorySpanExporter) -> None:
    headers: dict[str, str] = {"Escriba-Task-Id": "t1"}
    with tracing.tracer().start_as_current_span("publisher") as publisher:
        tracing.inject_headers(headers)
    assert headers["traceparent"].split("-")[1] == format(publisher.get_span_context().trace_id, "032x")
    # The consumer side sees only the headers (any case), as a message from NATS gives them.
    received = {key.title(): value for key, value in headers.items()}
    with tracing.consumer_span("process x", received, {"escriba.task_id": "t1"}):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    child, parent = spans["process x"], spans["publisher"]
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert child.kind is trace.SpanKind.CONSUMER
    assert child.attributes == {"messaging.system": "nats", "escriba.task_id": "t1"}


def test_a_callers_own_traceparent_is_kept(exporter: InMemorySpanExporter) -> None:
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {"TraceParent": theirs}
    with tracing.tracer().start_as_current_span("mine"):
        tracing.inject_headers(headers)
    assert headers == {"TraceParent": theirs}


def test_no_context_in_headers_starts_a_new_trace(exporter: InMemorySpanExporter) -> None:
    assert not trace.get_current_span(tracing.extract_context(None)).get_span_context().is_valid
    with tracing.consumer_span("process y", {"unrelated": "1"}, {}):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_without_a_span_nothing_is_injected() -> None:
    headers: dict[str, str] = {}
    tracing.inject_headers(headers)
    assert headers == {}


# Errors -------------------------------------------------------------------------------------------


def test_the_escriba_error_behind_an_abort_is_found() -> None:
    cause = InvalidInputError("bad audio", reason="invalid_audio")
    try:
        try:
            raise cause
        except InvalidInputError:
            raise RuntimeError("abort") from None  # as grpc's abort, raised while handling
    except RuntimeError as abort:
        assert tracing.escriba_cause(abort) is cause
    assert tracing.escriba_cause(ValueError("plain")) is None


def test_a_failed_span_carries_reason_exception_and_error_status(exporter: InMemorySpanExporter) -> None:
    with tracing.tracer().start_as_current_span("work") as span:
        tracing.mark_failed(span, TransientError("database restarting", reason="db_unavailable"))
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code is StatusCode.ERROR
    assert finished.attributes is not None
    assert finished.attributes["escriba.error.reason"] == "db_unavailable"
    assert [e.name for e in finished.events] == ["exception"]


# Logs ---------------------------------------------------------------------------------------------


def _log_line(logger: logging.Logger, sink: io.StringIO, message: str) -> dict[str, object]:
    logger.warning(message, extra={"stage": "transcription"})
    line = sink.getvalue().splitlines()[-1]
    entry: dict[str, object] = json.loads(line)
    return entry


def test_log_records_name_their_task_and_trace(exporter: InMemorySpanExporter) -> None:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter("transcription"))
    logger = logging.getLogger("escriba.test.observability")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        outside = _log_line(logger, sink, "no task")
        with tracing.tracer().start_as_current_span("job") as span, task_context("task-42"):
            inside = _log_line(logger, sink, "working")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert "task_id" not in outside and "trace_id" not in outside
    context = span.get_span_context()
    assert inside["task_id"] == "task-42"
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["service"] == "transcription" and inside["stage"] == "transcription"
    # task_context also tags the span, so the trace leads back to the task.
    (finished,) = exporter.get_finished_spans()
    assert finished.attributes is not None and finished.attributes["escriba.task_id"] == "task-42"
