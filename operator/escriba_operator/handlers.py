"""The kopf handlers: login, start-up and clean-up, the liveness probe, and one timer per autoscaler.

Handlers are registered on a registry passed in (not kopf's global one at import time) so the timer
interval comes from the settings, and tests can run an operator with a short interval and a login that
points at an emulated API server.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import kopf

from escriba_operator import algorithm
from escriba_operator import status as report
from escriba_operator.backlog import NatsPool
from escriba_operator.controller import Controller, Evaluation, Identity, Memory
from escriba_operator.endpoints import AllowList
from escriba_operator.kube import KubeClient
from escriba_operator.metrics import Metrics, MetricsServer
from escriba_operator.settings import OperatorSettings
from escriba_operator.signals import PrometheusReader
from escriba_operator.spec import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

#: Condition types whose turn to False is worth a Warning event (once per transition).
_WARN_ON = frozenset(
    {
        report.READY,
        report.SCALING_ACTIVE,
        report.BACKLOG_AVAILABLE,
        report.GPU_AVAILABLE,
        report.THROUGHPUT_AVAILABLE,
        report.SLOTS_AVAILABLE,
    }
)


class Runtime:
    """The operator's shared clients, created once kopf has credentials, closed at clean-up."""

    def __init__(self, settings: OperatorSettings, connection: kopf.ConnectionInfo | None) -> None:
        self.settings = settings
        self.connection = connection
        self.metrics = Metrics()
        self.nats = NatsPool(timeout_s=settings.request_timeout_s)
        self._http: aiohttp.ClientSession | None = None
        self._kube: KubeClient | None = None
        self._controller: Controller | None = None
        self._server: MetricsServer | None = None
        self.evaluations = 0
        self.last_evaluation: float | None = None

    def controller(self) -> Controller:
        if self._controller is None:
            if self.connection is None:
                raise kopf.TemporaryError("no Kubernetes credentials yet", delay=1)
            timeout = self.settings.request_timeout_s
            self._kube = KubeClient(self.connection, timeout_s=timeout)
            self._http = aiohttp.ClientSession()
            self._controller = Controller(
                self._kube,
                self.nats,
                PrometheusReader(self._http, timeout_s=timeout),
                self.metrics,
                timeout_s=timeout,
                allowed=AllowList.of(self.settings.allowed_endpoints),
            )
        return self._controller

    async def start(self) -> None:
        if self.settings.metrics_port:
            self._server = MetricsServer(self.metrics, self.settings.bind_host, self.settings.metrics_port)
            await self._server.start()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop()
        await self.nats.close()
        if self._kube is not None:
            await self._kube.close()
        if self._http is not None:
            await self._http.close()


def register(
    registry: kopf.OperatorRegistry,
    settings: OperatorSettings,
    *,
    connection: kopf.ConnectionInfo | None = None,
) -> Runtime:
    """Register every handler on ``registry``; ``connection`` replaces the cluster login (tests)."""
    runtime = Runtime(settings, connection)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Only our own events (scales, conditions turning bad) and kopf's warnings go to the API:
        # kopf's per-tick "handler succeeded" messages would drown them.
        settings.posting.level = logging.WARNING
        settings.peering.lifetime = runtime.settings.peering_lifetime_s
        await runtime.start()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if connection is not None:
            return connection
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        runtime.connection = info
        return info

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await runtime.close()

    @kopf.on.probe(id="autoscaler", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        return {"evaluations": runtime.evaluations, "lastEvaluation": runtime.last_evaluation}

    @kopf.timer(GROUP, VERSION, PLURAL, id="autoscale", interval=settings.interval_s, registry=registry)
    async def autoscale(
        body: kopf.Body,
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        namespace: str | None,
        name: str | None,
        memo: kopf.Memo,
        patch: kopf.Patch,
        **_: Any,
    ) -> None:
        memory = memo.get("autoscaler")
        if not isinstance(memory, Memory):
            memory = memo["autoscaler"] = Memory(
                state=algorithm.State(throughput=report.restored_throughput(status)),
                last_scale_time=status.get("lastScaleTime"),
            )
        who = Identity(
            namespace=namespace or "default",
            name=name or "",
            created=str(meta.get("creationTimestamp", "")),
            spec=dict(spec),
        )
        started = time.monotonic()
        evaluation = await runtime.controller().evaluate(who, memory)
        runtime.metrics.evaluation.observe(time.monotonic() - started)
        runtime.evaluations += 1
        runtime.last_evaluation = time.time()
        _publish(body, status, patch, evaluation, generation=meta.get("generation"))

    @kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry)
    def forget(namespace: str | None, name: str | None, **_: Any) -> None:
        runtime.metrics.forget(namespace or "default", name or "")

    return runtime


def _publish(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, evaluation: Evaluation, generation: Any
) -> None:
    """Write the status and post the events of one evaluation."""
    outcome = evaluation.outcome
    now = report.timestamp(time.time())
    previous = status.get("conditions") or []
    current = report.conditions(outcome)
    merged = report.merge_conditions(previous, current, now)
    patch.status.update(
        report.body(outcome, merged, generation=generation if isinstance(generation, int) else None)
    )

    if evaluation.scaled is not None and outcome.decision is not None:
        before, after = evaluation.scaled
        decision = outcome.decision
        backlog = decision.backlog.value
        message = (
            f"Scaled {before} -> {after} replicas: backlog {backlog:.0f} audio-s"
            if backlog is not None
            else f"Scaled {before} -> {after} replicas: backlog unknown"
        )
        message += f", throughput {decision.throughput.value:.1f} audio-s/s per replica"
        if decision.gpu.value is not None:
            message += f", GPU {decision.gpu.value:.0f}%"
        message += f" (limited by {decision.limited_by.value})"
        kopf.event(
            body, type="Normal", reason="ScaledUp" if after > before else "ScaledDown", message=message
        )
    warned: set[str] = set()  # Ready repeats the reason of the signal condition that made it False
    for condition in report.changed(previous, current):
        if condition.type in _WARN_ON and condition.status == "False" and condition.reason not in warned:
            if condition.reason != "DryRun":
                kopf.event(body, type="Warning", reason=condition.reason, message=condition.message)
            warned.add(condition.reason)
