"""Prometheus metrics shared by every service, and the /metrics endpoint.

Metric names follow Prometheus conventions (``escriba_`` prefix, base units in the name, ``_total`` for
counters) and are declared once here, so the dashboard, the operator's queries and the tests can rely on
one list. Stage-specific metrics carry a ``stage`` label rather than a name per service.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

GRPC_REQUESTS = Counter(
    "escriba_grpc_requests_total", "gRPC requests handled, by method and status code", ["method", "code"]
)
GRPC_LATENCY = Histogram(
    "escriba_grpc_request_duration_seconds",
    "gRPC request duration by method",
    ["method"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "escriba_stage_duration_seconds",
    "wall time of one stage's work on one input (preprocess, transcription, correction)",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
AUDIO_SECONDS = Counter("escriba_audio_seconds_total", "seconds of audio processed, by stage", ["stage"])
REAL_TIME_FACTOR = Histogram(
    "escriba_real_time_factor",
    "processing time divided by audio duration (below 1 is faster than real time)",
    ["stage"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
ERRORS = Counter("escriba_errors_total", "failures by stage and reason", ["stage", "reason"])
IN_FLIGHT = Gauge("escriba_in_flight_jobs", "inputs being processed right now, by stage", ["stage"])
CACHE_REQUESTS = Counter(
    "escriba_cache_requests_total", "cache lookups by cache and result (hit/miss)", ["cache", "result"]
)
MODEL_LOAD_SECONDS = Gauge(
    "escriba_model_load_seconds",
    "seconds the Whisper model took to load in this process",
    ["model", "device"],
)
BATCH_SIZE = Histogram(
    "escriba_transcription_batch_size",
    "batch size used for a transcription (speech chunks per model call)",
    buckets=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64),
)
QUEUE_WAIT = Histogram(
    "escriba_queue_wait_seconds",
    "time a job waited in its JetStream queue before a worker took it, by stage",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)


def start_metrics_server(port: int) -> None:
    """Serve /metrics on ``port`` (0: metrics stay in-process, e.g. in tests)."""
    if port:
        start_http_server(port, registry=REGISTRY)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Count and time every unary-response RPC by method and final status code."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _timed(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _timed(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _timed(
    behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], method: str
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        code = "OK"
        try:
            return await behavior(request, context)
        except BaseException:
            status = context.code()
            code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
            raise
        finally:
            GRPC_LATENCY.labels(method).observe(time.perf_counter() - start)
            GRPC_REQUESTS.labels(method, code).inc()

    return wrapper
