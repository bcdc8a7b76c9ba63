"""One evaluation of one autoscaler: read the target and the signals, decide, scale, report.

The kopf timer calls :meth:`Controller.evaluate` every interval; everything it needs to remember between
calls (the algorithm's state, the backlog index, the last good reading of each signal) lives in the
per-resource :class:`Memory`. Failures of a signal or of the target are turned into an
:class:`~escriba_operator.status.Outcome` the status reports, never into an exception that would stop
the timer or into a jump to ``maxReplicas``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from escriba_operator import algorithm
from escriba_operator.algorithm import Backlog, Observation, Sample
from escriba_operator.backlog import CREDS_KEY, BacklogIndex, Credentials, NatsPool
from escriba_operator.kube import KubeClient, KubeError, deployment_path
from escriba_operator.metrics import Metrics
from escriba_operator.signals import PrometheusReader, SignalError, SignalMissingError
from escriba_operator.spec import GROUP, PLURAL, VERSION, AutoscalerSpec, InvalidSpecError, QuerySource, parse
from escriba_operator.status import Outcome, Problem, timestamp

log = logging.getLogger(__name__)


@dataclass
class Memory:
    """What one autoscaler carries from one evaluation to the next (lost on restart, by design)."""

    state: algorithm.State = field(default_factory=algorithm.State)
    index: BacklogIndex | None = None
    backlog: Backlog | None = None
    gpu: Sample | None = None
    throughput: Sample | None = None
    last_scale_time: str | None = None


@dataclass(frozen=True)
class Identity:
    """The autoscaler being evaluated, as kopf hands it over."""

    namespace: str
    name: str
    created: str
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class Evaluation:
    outcome: Outcome
    scaled: tuple[int, int] | None = None  # (from, to) when a scale was applied
    reasons: tuple[str, ...] = ()  # why, for the event message


class Controller:
    def __init__(
        self,
        kube: KubeClient,
        nats: NatsPool,
        prometheus: PrometheusReader,
        metrics: Metrics,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self._nats = nats
        self._prometheus = prometheus
        self._metrics = metrics
        self._timeout = timeout_s
        self._clock = clock

    async def evaluate(self, who: Identity, memory: Memory) -> Evaluation:
        now = self._clock()
        try:
            spec = parse(who.spec)
        except InvalidSpecError as exc:
            return Evaluation(Outcome(None, blocked=Problem("InvalidSpec", exc.message)))
        target_path = deployment_path(who.namespace, spec.target.name)
        try:
            deployment = await self._kube.get(target_path)
        except KubeError as exc:
            return Evaluation(Outcome(None, blocked=Problem("TargetUnavailable", exc.message)))
        if deployment is None:
            message = f"Deployment {who.namespace}/{spec.target.name} not found"
            return Evaluation(Outcome(None, blocked=Problem("TargetNotFound", message)))
        current = _int((deployment.get("spec") or {}).get("replicas"), default=1)
        ready = _int((deployment.get("status") or {}).get("readyReplicas"), default=0)

        conflict, backlog_problem, gpu_problem, throughput_problem = await asyncio.gather(
            self._conflict(who, spec),
            self._read_backlog(who, spec, memory, now),
            self._read_query(who, "gpu", spec.gpu, memory, now),
            self._read_query(who, "throughput", spec.throughput, memory, now),
        )
        observation = Observation(
            now=now,
            current_replicas=current,
            ready_replicas=ready,
            backlog=memory.backlog,
            gpu_utilization=memory.gpu,
            throughput=memory.throughput,
        )
        decision = algorithm.decide(spec.policy, observation, memory.state)
        memory.state = decision.state
        blocked = conflict
        if blocked is None and spec.dry_run:
            blocked = Problem("DryRun", f"dryRun is set: would scale to {decision.desired} replicas")

        scaled: tuple[int, int] | None = None
        if blocked is None and decision.desired != current:
            try:
                await self._kube.merge_patch(target_path + "/scale", {"spec": {"replicas": decision.desired}})
            except KubeError as exc:
                blocked = Problem("FailedScale", exc.message)
            else:
                memory.state = algorithm.applied(decision, spec.policy, now=now)
                memory.last_scale_time = timestamp(now)
                scaled = (current, decision.desired)
                direction = "up" if decision.desired > current else "down"
                self._metrics.scales.labels(who.namespace, who.name, direction).inc()

        jobs = memory.backlog.jobs if memory.backlog else None
        self._metrics.observe(who.namespace, who.name, decision, jobs)
        detail = None
        if memory.backlog is not None:
            detail = {
                "waitingJobs": memory.backlog.waiting_jobs,
                "runningJobs": memory.backlog.running_jobs,
                "jobs": memory.backlog.jobs,
                "observedAt": timestamp(memory.backlog.observed_at),
            }
        outcome = Outcome(
            decision=decision,
            ready_replicas=ready,
            blocked=blocked,
            backlog_problem=backlog_problem,
            gpu_problem=gpu_problem,
            throughput_problem=throughput_problem,
            gpu_configured=spec.gpu is not None,
            throughput_configured=spec.throughput is not None,
            backlog_detail=detail,
            last_scale_time=memory.last_scale_time,
        )
        return Evaluation(outcome, scaled=scaled, reasons=(decision.limited_by.value,))

    async def _conflict(self, who: Identity, spec: AutoscalerSpec) -> Problem | None:
        """Another autoscaler on the same Deployment: report it rather than fight over replicas."""
        target = spec.target.name
        try:
            hpas = await self._kube.list(
                f"/apis/autoscaling/v2/namespaces/{who.namespace}/horizontalpodautoscalers"
            )
            ours = await self._kube.list(f"/apis/{GROUP}/{VERSION}/namespaces/{who.namespace}/{PLURAL}")
        except KubeError as exc:
            return Problem(
                "ConflictCheckFailed", f"cannot list other autoscalers, not scaling: {exc.message}"
            )
        for hpa in hpas:
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == "Deployment" and ref.get("name") == target:
                hpa_name = (hpa.get("metadata") or {}).get("name")
                return Problem(
                    "ConflictingAutoscaler",
                    f"HorizontalPodAutoscaler {hpa_name} also targets Deployment {target}; not scaling",
                )
        me = (who.created, who.name)
        for other in ours:
            meta = other.get("metadata") or {}
            ref = (other.get("spec") or {}).get("scaleTargetRef") or {}
            if meta.get("name") == who.name or ref.get("name") != target:
                continue
            if (str(meta.get("creationTimestamp", "")), str(meta.get("name", ""))) < me:
                return Problem(
                    "ConflictingAutoscaler",
                    f"TranscriptionAutoscaler {meta.get('name')} (older) already targets Deployment {target}",
                )
        return None

    async def _read_backlog(
        self, who: Identity, spec: AutoscalerSpec, memory: Memory, now: float
    ) -> Problem | None:
        queue = spec.queue
        index = memory.index
        if index is None or (index.stream, index.consumer) != (queue.stream, queue.consumer):
            index = memory.index = BacklogIndex(
                queue.stream, queue.consumer, assumed_job_s=queue.assumed_job_s, timeout_s=self._timeout
            )
        try:
            credentials = await self._credentials(who.namespace, queue.secret_name, queue.tls_secret_name)
            nc = await self._nats.connection(queue.nats_url, credentials)
            memory.backlog = await index.read(nc, now=now)
        except SignalMissingError as exc:
            memory.backlog = None
            return self._problem(who, "backlog", exc)
        except SignalError as exc:
            return self._problem(who, "backlog", exc)
        return None

    async def _credentials(
        self, namespace: str, secret_name: str | None, tls_secret_name: str | None = None
    ) -> Credentials:
        """User/password, token or ``nats.creds`` from one Secret; ``ca.crt``/``tls.crt``/``tls.key``
        from the TLS Secret (cert-manager's keys), or from the same Secret when none is named."""
        values = await self._secret_values(namespace, secret_name)
        tls = await self._secret_values(namespace, tls_secret_name) if tls_secret_name else values
        return Credentials(
            user=values.get("user"),
            password=values.get("password"),
            token=values.get("token"),
            creds=values.get(CREDS_KEY),
            ca=tls.get("ca.crt"),
            cert=tls.get("tls.crt"),
            key=tls.get("tls.key"),
        )

    async def _secret_values(self, namespace: str, secret_name: str | None) -> dict[str, str]:
        if secret_name is None:
            return {}
        try:
            secret = await self._kube.get(f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")
        except KubeError as exc:
            raise SignalError(
                f"cannot read Secret {secret_name}: {exc.message}", reason="SecretUnavailable"
            ) from exc
        if secret is None:
            raise SignalError(f"Secret {namespace}/{secret_name} not found", reason="SecretNotFound")
        data = secret.get("data") or {}
        try:
            return {
                key: base64.b64decode(value).decode() for key, value in data.items() if isinstance(value, str)
            }
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise SignalError(f"Secret {secret_name} holds invalid base64", reason="SecretInvalid") from exc

    async def _read_query(
        self, who: Identity, signal: str, source: QuerySource | None, memory: Memory, now: float
    ) -> Problem | None:
        if source is None:
            setattr(memory, signal, None)
            return None
        try:
            value = await self._prometheus.query(source.url, source.query)
        except SignalMissingError as exc:
            setattr(memory, signal, None)
            return self._problem(who, signal, exc)
        except SignalError as exc:
            return self._problem(who, signal, exc)
        setattr(memory, signal, Sample(value, now))
        return None

    def _problem(self, who: Identity, signal: str, exc: SignalError) -> Problem:
        self._metrics.signal_errors.labels(who.namespace, who.name, signal, exc.reason).inc()
        log.warning("%s/%s: %s signal: %s", who.namespace, who.name, signal, exc.message)
        return Problem(exc.reason, exc.message)


def _int(value: Any, *, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
