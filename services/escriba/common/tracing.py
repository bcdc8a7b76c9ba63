"""Distributed traces: one task is one trace, from ``CreateTask`` through every stage to completion.

W3C trace context (``traceparent``/``tracestate``) travels in gRPC metadata and in NATS message headers,
so the gateway's server span, each job's publish and each stage's processing link parent -> child
across processes and redeliveries, and an operator sees where a task's time went.

Configuration is OpenTelemetry's own: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, or ``none``, which
is Escriba's default, so exporting is off unless asked for), ``OTEL_EXPORTER_OTLP_*`` for the collector,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_SDK_DISABLED``.
With exporting off, spans are still created unsampled (never recorded, nearly free) so every process
keeps propagating one trace id per task and the JSON logs of one task correlate by ``trace_id``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from escriba.common.errors import EscribaError
from escriba.common.rpc_handlers import INFRASTRUCTURE_METHOD_PREFIXES, Behavior, wrap_handler
from escriba.common.settings import SettingsError

TRACER_NAME = "escriba"
EXPORTERS = ("otlp", "console", "none")

_provider: trace.TracerProvider | None = None
_cached: tuple[trace.TracerProvider, trace.Tracer] | None = None
#: Client spans still waiting for their call's final status (a strong reference keeps the task alive).
_finishing: set[asyncio.Task[None]] = set()


# Configuration ------------------------------------------------------------------------------------


def sdk_disabled(environ: Mapping[str, str]) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def exporter_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters ``OTEL_TRACES_EXPORTER`` asks for (none by default); an unknown one fails fast."""
    raw = environ.get("OTEL_TRACES_EXPORTER", "none")
    names = tuple(n.strip().lower() for n in raw.split(",") if n.strip())
    for name in names:
        if name not in EXPORTERS:
            raise SettingsError(
                "OTEL_TRACES_EXPORTER", f"unknown exporter {name!r}; use {', '.join(EXPORTERS)}"
            )
    if "none" in names and len(names) > 1:
        raise SettingsError("OTEL_TRACES_EXPORTER", "'none' cannot be combined with other exporters")
    return tuple(n for n in names if n != "none")


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(variable, "").strip()
        if protocol:
            if protocol != "grpc":
                raise SettingsError(variable, f"only 'grpc' is supported by this build, got {protocol!r}")
            break
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # Endpoint, headers, TLS, compression and timeout come from OTEL_EXPORTER_OTLP_[TRACES_]*.
    return OTLPSpanExporter()


def _default_resource(service: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Escriba's resource attributes, for those OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES leave unset.

    (``Resource.create`` lets explicit attributes win over the environment, so they are left out here.)
    """
    given = {
        pair.partition("=")[0].strip()
        for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
        if "=" in pair
    }
    if environ.get("OTEL_SERVICE_NAME", "").strip():
        given.add("service.name")
    defaults = {"service.name": f"escriba-{service}", "service.namespace": "escriba"}
    return {key: value for key, value in defaults.items() if key not in given}


def configure_tracing(service: str, environ: Mapping[str, str] | None = None) -> SdkTracerProvider | None:
    """Set the process-wide tracer provider from the ``OTEL_*`` variables, once, at start-up.

    Returns the provider (shut it down on exit so buffered spans are flushed), or None when
    ``OTEL_SDK_DISABLED=true``: then nothing is created and incoming trace context only passes through.
    """
    env = os.environ if environ is None else environ
    if sdk_disabled(env):
        return None
    names = exporter_names(env)
    exporters: list[SpanExporter] = []
    for name in names:
        exporters.append(_otlp_exporter(env) if name == "otlp" else ConsoleSpanExporter())
    resource = Resource.create(_default_resource(service, env))
    if exporters:
        # Sampled as OTEL_TRACES_SAMPLER says (by default: every root, and as the caller decided).
        provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
    else:
        provider = SdkTracerProvider(resource=resource, sampler=ALWAYS_OFF, shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    use_tracer_provider(provider)
    return provider


def use_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Send Escriba's spans to ``provider`` (None: the global one).

    OpenTelemetry's global provider can be set only once per process; this lets an embedding program or
    a test give Escriba its own provider and take it back.
    """
    global _provider
    _provider = provider


def tracer() -> trace.Tracer:
    global _cached
    provider = _provider or trace.get_tracer_provider()
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(TRACER_NAME))
    return _cached[1]


# Propagation --------------------------------------------------------------------------------------


def inject_headers(headers: MutableMapping[str, str], context: otel_context.Context | None = None) -> None:
    """Add the current trace context (``traceparent``...) to ``headers``, keeping any already there."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    lowered = {key.lower() for key in headers}
    for key, value in carrier.items():
        if key.lower() not in lowered:
            headers[key] = value


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by message headers or gRPC metadata (an empty one without)."""
    carrier = {key.lower(): value for key, value in (headers or {}).items() if isinstance(value, str)}
    return propagate.extract(carrier)


def mark_failed(span: Span, error: BaseException, *, status: bool = True) -> None:
    """Record ``error`` on ``span`` with its Escriba reason (the same word as the metrics' label).

    ``status=False`` keeps the span's status unset: a server span whose caller sent a bad request.
    """
    reason = error.reason if isinstance(error, EscribaError) else "internal"
    span.set_attribute("escriba.error.reason", reason)
    span.record_exception(error)
    if status:
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:256]))


@contextmanager
def consumer_span(
    name: str, headers: Mapping[str, str] | None, attributes: Mapping[str, Any]
) -> Iterator[Span]:
    """A CONSUMER span for one delivery, child of the span that published the message."""
    with tracer().start_as_current_span(
        name,
        context=extract_context(headers),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "nats", **attributes},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


@contextmanager
def producer_span(name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
    """A PRODUCER span around one publish; inject inside it so the consumer becomes its child."""
    with tracer().start_as_current_span(
        name, kind=SpanKind.PRODUCER, attributes={"messaging.system": "nats", **attributes}
    ) as span:
        yield span


# gRPC server --------------------------------------------------------------------------------------


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def escriba_cause(error: BaseException) -> EscribaError | None:
    """The Escriba error behind ``error``: itself, or the one a gRPC abort was raised while handling."""
    seen: BaseException | None = error
    for _ in range(16):  # a chain is short; a cycle must not hang the caller
        if seen is None:
            break
        if isinstance(seen, EscribaError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


#: How an RPC ends when its caller goes away: not a failure of the server.
_GONE = (asyncio.CancelledError, GeneratorExit)
#: The codes that make a server span an error (OpenTelemetry's gRPC conventions): the server's fault,
#: not the caller's (INVALID_ARGUMENT, NOT_FOUND, CANCELLED... leave it unset).
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _finish_server_span(span: Span, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
    code = context.code()
    if isinstance(error, _GONE):
        code = code or grpc.StatusCode.CANCELLED
    elif error is not None:
        code = code or grpc.StatusCode.UNKNOWN
    else:
        code = code or grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        span.set_attribute("rpc.grpc.status_code", code.value[0])
    fault = code in _SERVER_FAULTS
    if error is not None and not isinstance(error, _GONE):
        mark_failed(span, escriba_cause(error) or error, status=fault)
    elif fault:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


class TracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Start a SERVER span per RPC, child of the caller's ``traceparent`` metadata when there is one."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(INFRASTRUCTURE_METHOD_PREFIXES):
            return handler
        metadata = {
            str(key).lower(): value
            for key, value in (handler_call_details.invocation_metadata or ())
            if isinstance(value, str)
        }
        name = method.lstrip("/")
        attributes = _rpc_attributes(method)
        return wrap_handler(
            handler,
            unary=lambda behavior: _traced(behavior, name, metadata, attributes),
            streaming=lambda behavior: _traced_stream(behavior, name, metadata, attributes),
        )


def _traced(
    behavior: Behavior, name: str, metadata: Mapping[str, str], attributes: Mapping[str, Any]
) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        span = tracer().start_span(
            name, context=extract_context(metadata), kind=SpanKind.SERVER, attributes=attributes
        )
        error: BaseException | None = None
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _finish_server_span(span, context, error)

    return wrapper


def _traced_stream(
    behavior: Behavior, name: str, metadata: Mapping[str, str], attributes: Mapping[str, Any]
) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        span = tracer().start_span(
            name, context=extract_context(metadata), kind=SpanKind.SERVER, attributes=attributes
        )
        responses = behavior(request, context)
        error: BaseException | None = None
        try:
            while True:
                # Current only while the servicer runs, never across a yield: the consumer of this
                # generator may resume it from another context (a cancelled RPC is closed by a new task).
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    try:
                        item = await anext(responses)
                    except StopAsyncIteration:
                        break
                yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            await responses.aclose()
            _finish_server_span(span, context, error)

    return wrapper


# gRPC client --------------------------------------------------------------------------------------


class _ClientSpans:
    """A CLIENT span per call, injected as ``traceparent`` metadata so the server span is its child."""

    async def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
        span = tracer().start_span(
            method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
        )
        metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()))
        carrier: dict[str, str] = {}
        inject_headers(carrier, trace.set_span_in_context(span))
        for key, value in carrier.items():
            metadata[key] = value
        try:
            call = await continuation(details._replace(metadata=metadata), request)
        except BaseException as exc:
            mark_failed(span, exc)
            span.end()
            raise
        call.add_done_callback(lambda done: _schedule_client_finish(span, done))
        return call


# grpc.aio files an interceptor under the first call kind it implements, so each kind needs its own.
class _UnaryUnary(_ClientSpans, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request)


class _UnaryStream(_ClientSpans, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request)


class _StreamUnary(_ClientSpans, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator)


class _StreamStream(_ClientSpans, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator)


def _schedule_client_finish(span: Span, call: Any) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # the call ended as its loop went away: no status to read any more
        span.end()
        return
    task = loop.create_task(_finish_client_span(span, call))
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)


async def _finish_client_span(span: Span, call: Any) -> None:
    try:
        code = await call.code()
        if isinstance(code, grpc.StatusCode):
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, f"{code.name}: {await call.details()}"[:256]))
    finally:
        span.end()


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for an Escriba client channel: trace context goes out with every call."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]
