"""The operator's own Prometheus metrics and their ``/metrics`` endpoint.

A registry of its own (not the process default) so the gauges of the autoscalers are all that the
endpoint serves, and tests running the operator beside Escriba's services do not mix the two. Served by
aiohttp in the operator's event loop, started and stopped with kopf's startup and cleanup handlers.
"""

from __future__ import annotations

import contextlib

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from escriba_operator.algorithm import Decision

_LABELS = ("namespace", "name")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.desired = Gauge(
            "escriba_autoscaler_desired_replicas", "replicas the autoscaler wants", _LABELS, registry=r
        )
        self.current = Gauge(
            "escriba_autoscaler_current_replicas", "replicas the target asks for", _LABELS, registry=r
        )
        self.backlog_seconds = Gauge(
            "escriba_autoscaler_backlog_seconds", "audio-seconds waiting or in progress", _LABELS, registry=r
        )
        self.backlog_jobs = Gauge(
            "escriba_autoscaler_backlog_jobs", "jobs waiting or in progress", _LABELS, registry=r
        )
        self.gpu = Gauge(
            "escriba_autoscaler_gpu_utilization_percent",
            "GPU utilization of the ready replicas",
            _LABELS,
            registry=r,
        )
        self.throughput = Gauge(
            "escriba_autoscaler_throughput_audio_seconds_per_second",
            "audio-seconds one busy replica transcribes per second, as used for the decision",
            _LABELS,
            registry=r,
        )
        self.scales = Counter(
            "escriba_autoscaler_scale_events",
            "scales applied, by direction",
            (*_LABELS, "direction"),
            registry=r,
        )
        self.signal_errors = Counter(
            "escriba_autoscaler_signal_errors",
            "failed signal reads, by signal and reason",
            (*_LABELS, "signal", "reason"),
            registry=r,
        )
        self.evaluation = Histogram(
            "escriba_autoscaler_evaluation_seconds", "wall time of one evaluation", registry=r
        )

    def observe(self, namespace: str, name: str, decision: Decision, jobs: int | None) -> None:
        labels = (namespace, name)
        self.desired.labels(*labels).set(decision.desired)
        self.current.labels(*labels).set(decision.current)
        if decision.backlog.value is not None:
            self.backlog_seconds.labels(*labels).set(decision.backlog.value)
        if jobs is not None:
            self.backlog_jobs.labels(*labels).set(jobs)
        if decision.gpu.value is not None:
            self.gpu.labels(*labels).set(decision.gpu.value)
        self.throughput.labels(*labels).set(decision.throughput.value)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the series of a deleted autoscaler so dashboards do not show it forever."""
        for gauge in (
            self.desired,
            self.current,
            self.backlog_seconds,
            self.backlog_jobs,
            self.gpu,
            self.throughput,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)


class MetricsServer:
    """``GET /metrics`` on ``host:port``."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: web.Request) -> web.Response:
        payload = generate_latest(self._metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})
