"""Traces and metrics of real gRPC calls: client span -> server span through metadata, statuses and
error reasons counted, streaming RPCs measured, a caller's cancellation not counted as an error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from escriba.common import tracing
from escriba.common.client import write_all
from escriba.common.grpc_server import Component
from escriba.common.settings import load
from escriba.correction.server import CorrectionComponent
from escriba.correction.settings import CorrectionSettings
from escriba.preprocess.server import PreprocessComponent
from escriba.preprocess.settings import PreprocessSettings
from escriba.v1 import correction_pb2, correction_pb2_grpc, preprocess_pb2, preprocess_pb2_grpc
from tests.support import media
from tests.support.grpc_servers import serving
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

CORRECT = "/escriba.v1.CorrectionService/Correct"
PREPROCESS = "/escriba.v1.PreprocessService/Preprocess"


class Started(SpanProcessor):
    """Names and kinds of spans as they start (the exporter only sees them once they end)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, SpanKind]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.spans.append((span.name, span.kind))


STARTED = Started()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(STARTED)
    STARTED.spans.clear()
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    components: list[Component] = [
        PreprocessComponent(load(PreprocessSettings, {})),
        CorrectionComponent(load(CorrectionSettings, {})),
    ]
    async with (
        serving(components) as (running, _),
        grpc.aio.insecure_channel(
            f"127.0.0.1:{running.port}", interceptors=tracing.client_interceptors()
        ) as traced,
    ):
        yield traced


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def errors_of(stage: str) -> float:
    return sum(
        s.value
        for family in REGISTRY.collect()
        if family.name == "escriba_errors"
        for s in family.samples
        if s.name == "escriba_errors_total" and s.labels.get("stage") == stage
    )


def by_kind(exporter: InMemorySpanExporter, name: str) -> dict[SpanKind, ReadableSpan]:
    found = {s.kind: s for s in exporter.get_finished_spans() if s.name == name}
    assert set(found) == {SpanKind.CLIENT, SpanKind.SERVER}, exporter.get_finished_spans()
    return found


def upload(data: bytes, chunks: int = 4) -> Iterator[preprocess_pb2.PreprocessRequest]:
    yield preprocess_pb2.PreprocessRequest(config=preprocess_pb2.PreprocessConfig(filename="x.flac"))
    step = max(1, len(data) // chunks)
    for offset in range(0, len(data), step):
        yield preprocess_pb2.PreprocessRequest(chunk=data[offset : offset + step])


async def test_the_server_span_is_the_child_of_the_callers_span(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    before = sample("escriba_grpc_requests_total", method=CORRECT, code="OK")
    stub = correction_pb2_grpc.CorrectionServiceStub(channel)
    reply = await stub.Correct(correction_pb2.CorrectRequest(text="hello hello world"))
    assert reply.text
    await eventually(lambda: len(spans.get_finished_spans()) == 2, what="client and server spans")
    pair = by_kind(spans, CORRECT.lstrip("/"))
    client, server = pair[SpanKind.CLIENT], pair[SpanKind.SERVER]
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.parent.is_remote
    assert server.attributes is not None
    assert server.attributes["rpc.service"] == "escriba.v1.CorrectionService"
    assert server.attributes["rpc.method"] == "Correct"
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert sample("escriba_grpc_requests_total", method=CORRECT, code="OK") == before + 1


async def test_a_failed_stream_is_counted_by_its_reason_and_marks_its_spans(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    before_errors = errors_of("preprocess")
    before_code = sample("escriba_grpc_requests_total", method=PREPROCESS, code="INVALID_ARGUMENT")
    call = preprocess_pb2_grpc.PreprocessServiceStub(channel).Preprocess()
    writer = asyncio.create_task(write_all(call, upload(media.random_bytes())))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    await writer
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    reason = (caught.value.details() or "").split(":")[0]
    assert reason and " " not in reason

    assert sample("escriba_errors_total", stage="preprocess", reason=reason) >= 1
    assert errors_of("preprocess") == before_errors + 1
    assert (
        sample("escriba_grpc_requests_total", method=PREPROCESS, code="INVALID_ARGUMENT") == before_code + 1
    )
    await eventually(lambda: len(spans.get_finished_spans()) == 2, what="client and server spans")
    pair = by_kind(spans, PREPROCESS.lstrip("/"))
    server = pair[SpanKind.SERVER]
    # The caller's mistake, not the server's fault: recorded on the server span, status left unset.
    assert server.status.status_code is StatusCode.UNSET
    assert [e.name for e in server.events] == ["exception"]
    assert server.attributes is not None
    assert server.attributes["escriba.error.reason"] == reason
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert pair[SpanKind.CLIENT].status.status_code is StatusCode.ERROR


async def test_a_successful_stream_is_timed_once(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    before = sample("escriba_grpc_request_duration_seconds_count", method=PREPROCESS)
    before_ok = sample("escriba_grpc_requests_total", method=PREPROCESS, code="OK")
    call = preprocess_pb2_grpc.PreprocessServiceStub(channel).Preprocess()
    writer = asyncio.create_task(write_all(call, upload(media.JFK.read_bytes())))
    responses = [r async for r in call]
    await writer
    assert responses[0].WhichOneof("payload") == "info" and len(responses) > 1
    assert sample("escriba_grpc_request_duration_seconds_count", method=PREPROCESS) == before + 1
    assert sample("escriba_grpc_requests_total", method=PREPROCESS, code="OK") == before_ok + 1
    await eventually(lambda: len(spans.get_finished_spans()) == 2, what="client and server spans")
    assert by_kind(spans, PREPROCESS.lstrip("/"))[SpanKind.SERVER].status.status_code is StatusCode.UNSET


async def test_a_caller_that_cancels_is_not_an_error_of_the_service(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    before_errors = errors_of("preprocess")
    before = sample("escriba_grpc_requests_total", method=PREPROCESS, code="CANCELLED")
    call = preprocess_pb2_grpc.PreprocessServiceStub(channel).Preprocess()
    first = next(upload(b""))
    await call.write(first)
    await call.write(preprocess_pb2.PreprocessRequest(chunk=media.JFK.read_bytes()[:1000]))
    await eventually(
        lambda: (PREPROCESS.lstrip("/"), SpanKind.SERVER) in STARTED.spans, what="the server handler to run"
    )
    # The server is now waiting for the rest of the upload; the caller gives up.
    call.cancel()
    await eventually(
        lambda: sample("escriba_grpc_requests_total", method=PREPROCESS, code="CANCELLED") == before + 1,
        what="the cancelled RPC to be counted",
    )
    assert errors_of("preprocess") == before_errors
    await eventually(lambda: len(spans.get_finished_spans()) == 2, what="client and server spans")
    server = by_kind(spans, PREPROCESS.lstrip("/"))[SpanKind.SERVER]
    assert server.status.status_code is StatusCode.UNSET
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
