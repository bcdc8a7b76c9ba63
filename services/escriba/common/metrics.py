"""Prometheus metrics shared by every service, and the /metrics endpoint.

Metric names follow Prometheus conventions (``escriba_`` prefix, base units in the name, ``_total`` for
counters) and are declared once here, so the dashboard, the operator's queries and the tests can rely on
one list (documented in ``docs/OBSERVABILITY.md``). Stage-specific metrics carry a ``stage`` label rather
than a name per service. Each service creates its label sets at start-up, so its series exist (at zero)
before the first request and ``rate()`` in a dashboard or an alert has something to work on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from escriba.common.rpc_handlers import INFRASTRUCTURE_METHOD_PREFIXES, Behavior, wrap_handler
from escriba.common.startup import listening
from escriba.common.tracing import escriba_cause

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
ERRORS = Counter(
    "escriba_errors_total",
    "failed RPCs and tasks failed for good, by stage (or gateway) and reason",
    ["stage", "reason"],
)
JOB_RETRIES = Counter(
    "escriba_job_retries_total",
    "job deliveries that failed and were handed back to JetStream for a retry, by stage and reason",
    ["stage", "reason"],
)
IN_FLIGHT = Gauge("escriba_in_flight_jobs", "inputs being processed right now, by stage", ["stage"])
JOB_SLOTS = Gauge(
    "escriba_job_slots",
    "jobs this worker takes from its queue at once (its in-flight limit), by stage; the autoscaler's "
    "jobs per replica and, with escriba_in_flight_jobs, its busy-slots saturation signal",
    ["stage"],
)
CACHE_REQUESTS = Counter(
    "escriba_cache_requests_total",
    "cache lookups by cache and result (hit; miss; shared: the same key was being computed in this"
    " process, and its result was taken)",
    ["cache", "result"],
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
WINDOWS_REDECODED = Counter(
    "escriba_transcription_windows_redecoded_total",
    "speech windows decoded a second time: temperature fallback, or the speech after a window's last "
    "word when the decoder stopped early",
)
QUEUE_WAIT = Histogram(
    "escriba_queue_wait_seconds",
    "time a job waited in its JetStream queue before a worker took it, by stage",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)


GPU_UTILIZATION = "escriba_gpu_utilization_ratio"
GPU_MEMORY_USED = "escriba_gpu_memory_used_bytes"

log = logging.getLogger(__name__)

#: The ``stage`` label of a gRPC service's errors, where it is not the service's name less "Service".
_SERVICE_STAGE = {"TaskService": "gateway"}


def record_work(
    stage: str, *, audio_s: float, elapsed_s: float, batch_size: int = 0, windows_redecoded: int = 0
) -> None:
    """Audio-seconds processed, real-time factor and (for transcription) batch size and re-decoded
    windows of one input."""
    AUDIO_SECONDS.labels(stage).inc(audio_s)
    if audio_s > 0:
        REAL_TIME_FACTOR.labels(stage).observe(elapsed_s / audio_s)
    if batch_size:
        BATCH_SIZE.observe(batch_size)
    if windows_redecoded:
        WINDOWS_REDECODED.inc(windows_redecoded)


def start_metrics_server(port: int) -> None:
    """Serve /metrics on ``port`` (0: metrics stay in-process, e.g. in tests)."""
    if port:
        with listening("ESCRIBA_METRICS_PORT", "Prometheus metrics", "0.0.0.0", port):
            start_http_server(port, registry=REGISTRY)


def grpc_methods(service_name: str) -> list[str]:
    """``/package.Service/Method`` for every method of a service known to the protobuf runtime."""
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return []
    return [f"/{service_name}/{method.name}" for method in service.methods]


def init_service_metrics(service: str, grpc_services: Iterable[str] = ()) -> None:
    """Create the label sets ``service`` uses, so its series are exposed from start-up."""
    for name in grpc_services:
        for method in grpc_methods(name):
            GRPC_LATENCY.labels(method)
            GRPC_REQUESTS.labels(method, "OK")
    ERRORS.labels(service, "internal")


def init_stage_metrics(stage: str, *, cache: str, measures_audio: bool) -> None:
    """Create the label sets of a pipeline stage (the caller reads them from the stage registry)."""
    STAGE_LATENCY.labels(stage)
    IN_FLIGHT.labels(stage)
    QUEUE_WAIT.labels(stage)
    JOB_RETRIES.labels(stage, "internal")
    CACHE_REQUESTS.labels(cache, "hit")
    CACHE_REQUESTS.labels(cache, "miss")
    CACHE_REQUESTS.labels(cache, "shared")
    if measures_audio:
        AUDIO_SECONDS.labels(stage)
        REAL_TIME_FACTOR.labels(stage)


# GPU ------------------------------------------------------------------------------------------------


class GpuCollector(Collector):
    """Utilization and memory of each GPU this process can see, read from NVML at scrape time.

    Registered only where NVML initialises and finds a GPU, so on CPU nodes the series are absent rather
    than a misleading zero. A GPU whose reading fails (fallen off the bus, not supported) has no sample.
    """

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        count = int(nvml.nvmlDeviceGetCount())
        self._handles = [(index, nvml.nvmlDeviceGetHandleByIndex(index)) for index in range(count)]

    @property
    def gpu_count(self) -> int:
        return len(self._handles)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                GPU_UTILIZATION,
                "fraction of the last sample period (1/6 s to 1 s) in which a kernel ran on the GPU",
                labels=["gpu"],
            ),
            GaugeMetricFamily(GPU_MEMORY_USED, "GPU memory allocated, bytes", labels=["gpu"]),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        utilization, memory = self._families()
        nvml = self._nvml
        for index, handle in self._handles:
            label = [str(index)]
            try:
                utilization.add_metric(label, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            except nvml.NVMLError as exc:
                log.debug("no utilization for GPU %d: %s", index, exc)
            try:
                memory.add_metric(label, float(nvml.nvmlDeviceGetMemoryInfo(handle).used))
            except nvml.NVMLError as exc:
                log.debug("no memory reading for GPU %d: %s", index, exc)
        yield utilization
        yield memory


def register_gpu_metrics(registry: CollectorRegistry = REGISTRY, nvml: Any = None) -> GpuCollector | None:
    """Expose GPU metrics when NVML works and sees a GPU; None (nothing registered) otherwise."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return None
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.debug("NVML unavailable, no GPU metrics: %s", exc)
        return None
    try:
        collector = GpuCollector(nvml)
    except nvml.NVMLError as exc:
        log.warning("NVML initialised but cannot list GPUs: %s", exc)
        nvml.nvmlShutdown()
        return None
    if not collector.gpu_count:
        nvml.nvmlShutdown()
        return None
    registry.register(collector)
    log.info("exposing GPU metrics", extra={"gpus": collector.gpu_count})
    return collector


# gRPC -----------------------------------------------------------------------------------------------

#: How an RPC ends when its caller goes away: counted as CANCELLED, not as an error of the service.
_GONE = (asyncio.CancelledError, GeneratorExit)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Count and time every RPC by method and final status code; count failures by reason."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(INFRASTRUCTURE_METHOD_PREFIXES):
            return handler
        return wrap_handler(
            handler,
            unary=lambda behavior: _timed(behavior, method),
            streaming=lambda behavior: _timed_stream(behavior, method),
        )


def rpc_stage(method: str) -> str:
    """The ``stage`` label of a method's errors (``/escriba.v1.TaskService/X`` -> ``gateway``)."""
    service = method.lstrip("/").partition("/")[0].rpartition(".")[2]
    return _SERVICE_STAGE.get(service, service.removesuffix("Service").lower())


def _record(
    method: str, context: grpc.aio.ServicerContext, error: BaseException | None, started: float
) -> None:
    status = context.code()
    if isinstance(status, grpc.StatusCode):
        code = status.name
    elif isinstance(error, _GONE):
        code = "CANCELLED"
    else:
        code = "OK" if error is None else "UNKNOWN"
    GRPC_LATENCY.labels(method).observe(time.perf_counter() - started)
    GRPC_REQUESTS.labels(method, code).inc()
    if code in ("OK", "CANCELLED"):
        return
    cause = escriba_cause(error) if error is not None else None
    fallback = "internal" if code == "UNKNOWN" else code.lower()
    ERRORS.labels(rpc_stage(method), cause.reason if cause is not None else fallback).inc()


def _timed(behavior: Behavior, method: str) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _record(method, context, error, started)

    return wrapper


def _timed_stream(behavior: Behavior, method: str) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        responses = behavior(request, context)
        error: BaseException | None = None
        try:
            async for item in responses:
                yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            await responses.aclose()
            _record(method, context, error, started)

    return wrapper
