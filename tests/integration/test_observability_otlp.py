"""`escriba serve` exports spans over OTLP as the standard OTEL_* variables say, to a real OTLP/gRPC
receiver started by the test, continuing the caller's trace; a bad exporter stops it at start-up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from escriba.v1 import correction_pb2, correction_pb2_grpc
from tests.support.grpc_servers import free_port

pytestmark = pytest.mark.timeout(120)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace collector that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict[str, str], trace_pb2.Span]]:
        found: list[tuple[dict[str, str], trace_pb2.Span]] = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope.spans)
        return found


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    collector = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield collector, port
    finally:
        await server.stop(0)


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESCRIBA_", "OTEL_"))}
    return env | {
        "ESCRIBA_METRICS_PORT": "0",
        "ESCRIBA_GRPC_HOST": "127.0.0.1",
        "ESCRIBA_SHUTDOWN_GRACE_S": "3",
        **extra,
    }


def spawn_correction(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "escriba.cli", "serve", "correction", "--port", str(port)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def wait_serving(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the service never became SERVING")


async def test_spans_reach_the_otlp_endpoint_as_children_of_the_caller(
    receiver: tuple[Receiver, int],
) -> None:
    collector, otlp_port = receiver
    port = free_port()
    env = service_env(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_port}",
        OTEL_SERVICE_NAME="correction-under-test",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
    )
    proc = spawn_correction(port, env)
    try:
        await wait_serving(port, proc)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = correction_pb2_grpc.CorrectionServiceStub(channel)
            traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
            reply = await stub.Correct(
                correction_pb2.CorrectRequest(text="hello hello world"),
                metadata=(("traceparent", traceparent),),
            )
        assert reply.text
        proc.send_signal(signal.SIGTERM)  # shutting down flushes the spans still buffered
        output, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, output.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    served = [(r, s) for r, s in collector.spans() if s.name == "escriba.v1.CorrectionService/Correct"]
    assert len(served) == 1, collector.spans()
    resource, span = served[0]
    assert span.trace_id.hex() == CALLER_TRACE
    assert span.parent_span_id.hex() == CALLER_SPAN
    assert span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert resource["service.name"] == "correction-under-test"
    assert resource["deployment.environment"] == "test"
    # Health checks are not traced.
    assert all("Health" not in s.name for _, s in collector.spans())


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_TRACES_EXPORTER", "zipkin"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
)
async def test_an_unusable_tracing_setting_stops_the_service_naming_it(variable: str, value: str) -> None:
    env = service_env(OTEL_TRACES_EXPORTER="otlp") | {variable: value}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "escriba.cli", "serve", "correction", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert variable in result.stderr
