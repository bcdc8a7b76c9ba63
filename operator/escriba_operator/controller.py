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
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from escriba_operator import algorithm
from escriba_operator.algorithm import Backlog, Observation, Sample
from escriba_operator.backlog import CREDS_KEY, BacklogIndex, Credentials, NatsPool
from escriba_operator.endpoints import AllowList
from escriba_operator.kube import KubeClient, KubeError, deployment_path
from escriba_operator.metrics import Metrics
from escriba_operator.signals import PrometheusReader, SignalError, SignalMissingError
from escriba_operator.spec import GROUP, PLURAL, VERSION, AutoscalerSpec, InvalidSpecError, QuerySource, parse
from escriba_operator.status import Outcome, Problem, timestamp

log = logging.getLogger(__name__)

#: The ReplicaSet removes pods with the lowest cost first (Kubernetes 1.22+).
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DELETION_COST_PER_JOB = 100


@dataclass
class Memory:
    """What one autoscaler carries from one evaluation to the next. Only the learned throughput
    survives a restart (through the status): the rest is re-read in one tick, and the behavior's
    history is better rebuilt than trusted from a status anyone with write access could edit."""

    state: algorithm.State = field(default_factory=algorithm.State)
    index: BacklogIndex | None = None
    backlog: Backlog | None = None
    gpu: Sample | None = None
    throughput: Sample | None = None
    busy_slots: Sample | None = None
    job_slots: Sample | None = None
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
        allowed: AllowList | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._allowed = allowed or AllowList()
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
        denied = self._denied(spec)
        if denied is not None:  # before any Secret is read or any connection made
            return Evaluation(Outcome(None, blocked=denied))
        target_path = deployment_path(who.namespace, spec.target.name)
        try:
            deployment = await self._kube.get(target_path)
        except KubeError as exc:
            return Evaluation(Outcome(None, blocked=Problem("TargetUnavailable", exc.message)))
        if deployment is None:
            message = f"Deployment {who.namespace}/{spec.target.name} not found"
            return Evaluation(Outcome(None, blocked=Problem("TargetNotFound", message)))
        declared = (deployment.get("spec") or {}).get("replicas")
        current = _int(declared, default=1)
        ready = _int((deployment.get("status") or {}).get("readyReplicas"), default=0)

        problems = await asyncio.gather(
            self._conflict(who, spec),
            self._read_backlog(who, spec, memory, now),
            self._read_query(who, "gpu", spec.gpu, memory, now),
            self._read_query(who, "throughput", spec.throughput, memory, now),
            self._read_query(who, "busy_slots", spec.busy_slots, memory, now),
            self._read_query(who, "job_slots", spec.job_slots, memory, now),
        )
        conflict, backlog_problem, gpu_problem, throughput_problem, busy_problem, slots_problem = problems
        slots_problem = busy_problem or slots_problem
        observation = Observation(
            now=now,
            current_replicas=current,
            ready_replicas=ready,
            backlog=memory.backlog,
            gpu_utilization=memory.gpu,
            throughput=memory.throughput,
            busy_slots=memory.busy_slots,
            job_slots=memory.job_slots,
        )
        decision = algorithm.decide(spec.policy, observation, memory.state)
        memory.state = decision.state
        blocked = conflict
        if blocked is None and spec.dry_run:
            blocked = Problem("DryRun", f"dryRun is set: would scale to {decision.desired} replicas")

        scaled: tuple[int, int] | None = None
        if blocked is None and decision.desired != current:
            # Only from the count this decision was made on: a scale by someone else in between (kubectl,
            # a second operator, a rollout) wins, and the next tick decides again from it.
            precondition = (
                {"op": "test", "path": "/spec/replicas", "value": current}
                if _int(declared, default=-1) == current
                else {"op": "add", "path": "/spec/replicas", "value": current}
            )
            change = {"op": "replace", "path": "/spec/replicas", "value": decision.desired}
            if decision.desired < current:
                await self._protect_busy_pods(who, spec, deployment)
            try:
                await self._kube.json_patch(target_path + "/scale", [precondition, change])
            except KubeError as exc:
                if exc.status in (409, 422):
                    message = f"the replicas changed from {current} since they were read; deciding again"
                    blocked = Problem("ScaleConflict", message)
                else:
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
            slots_problem=slots_problem,
            gpu_configured=spec.gpu is not None,
            throughput_configured=spec.throughput is not None,
            slots_configured=spec.busy_slots is not None,
            backlog_detail=detail,
            last_scale_time=memory.last_scale_time,
        )
        return Evaluation(outcome, scaled=scaled, reasons=(decision.limited_by.value,))

    async def _protect_busy_pods(
        self, who: Identity, spec: AutoscalerSpec, deployment: Mapping[str, Any]
    ) -> None:
        """Give each pod of the target a deletion cost from the jobs it runs, so the ReplicaSet removes
        idle pods first: by default it removes the newest, busy or not, and a removed worker hands its
        jobs back, so a 3-hour file would start over. Best effort: a failure leaves Kubernetes' order."""
        source = spec.busy_by_pod
        selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if source is None or not selector:
            return
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        try:
            busy = await self._prometheus.query_by(source.url, source.query, "pod")
            pods = await self._kube.list(
                f"/api/v1/namespaces/{who.namespace}/pods?labelSelector={urllib.parse.quote(labels)}"
            )
            for pod in pods:
                meta = pod.get("metadata") or {}
                name = meta.get("name")
                if not isinstance(name, str) or meta.get("deletionTimestamp"):
                    continue
                cost = str(round(busy.get(name, 0.0)) * DELETION_COST_PER_JOB)
                if (meta.get("annotations") or {}).get(DELETION_COST) != cost:
                    await self._kube.merge_patch(
                        f"/api/v1/namespaces/{who.namespace}/pods/{name}",
                        {"metadata": {"annotations": {DELETION_COST: cost}}},
                    )
        except SignalError as exc:
            self._problem(who, "busy_by_pod", exc)
        except KubeError as exc:
            log.warning("%s/%s: cannot set pod deletion costs: %s", who.namespace, who.name, exc.message)

    def _denied(self, spec: AutoscalerSpec) -> Problem | None:
        for url in spec.endpoints():
            if not self._allowed.allows(url):
                return Problem(
                    "EndpointNotAllowed",
                    f"{url} is not on the operator's endpoint allow-list"
                    " (ESCRIBA_OPERATOR_ALLOWED_ENDPOINTS); nothing was read or sent",
                )
        return None

    async def _conflict(self, who: Identity, spec: AutoscalerSpec) -> Problem | None:
        """Another autoscaler on the same Deployment: report it rather than fight over replicas.

        Only one that can act counts: an older autoscaler that is dry-run, invalid or refused its
        endpoints never scales, so letting it block this one would leave the Deployment unscaled for good.
        """
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
            raw = other.get("spec") or {}
            ref = raw.get("scaleTargetRef") or {}
            if meta.get("name") == who.name or ref.get("name") != target or meta.get("deletionTimestamp"):
                continue
            if (str(meta.get("creationTimestamp", "")), str(meta.get("name", ""))) < me and self._acts(raw):
                return Problem(
                    "ConflictingAutoscaler",
                    f"TranscriptionAutoscaler {meta.get('name')} (older) already targets Deployment {target}",
                )
        return None

    def _acts(self, raw: Mapping[str, Any]) -> bool:
        """Whether an autoscaler with this spec would scale its target (for the conflict check)."""
        try:
            spec = parse(raw)
        except InvalidSpecError:
            return False
        return not spec.dry_run and self._denied(spec) is None

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
