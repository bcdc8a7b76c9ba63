"""Reading a TranscriptionAutoscaler's ``spec`` into typed values, with the CRD's defaults.

The API server applies the CRD's schema defaults, but the operator must not depend on them (an object
created before a CRD upgrade, the test emulator): :data:`DEFAULTS` holds the same values, and a unit test
checks that it matches ``operator/crds/transcriptionautoscalers.yaml`` field by field. A spec the schema
would reject raises :class:`InvalidSpecError`, which the controller reports as a condition instead of
guessing.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from escriba.common.errors import InvalidInputError
from escriba_operator.policy import (
    BacklogTarget,
    Behavior,
    Fallback,
    FallbackMode,
    GpuGuard,
    Policy,
    PolicyType,
    RatePolicy,
    ScalingRules,
    SelectPolicy,
    SlotsGuard,
    ThroughputModel,
)

GROUP = "escriba.io"
VERSION = "v1alpha1"
PLURAL = "transcriptionautoscalers"

#: Audio-seconds per second of one fully occupied replica. Not audio over busy job-seconds: a
#: transcription worker runs as many jobs at once as its engine has request slots, so that would be
#: per slot, several times too slow for a replica.
DEFAULT_THROUGHPUT_QUERY = (
    'sum(rate(escriba_audio_seconds_total{stage="transcription"}[5m]))'
    ' / sum(avg_over_time(escriba_in_flight_jobs{stage="transcription"}[5m])'
    ' / escriba_job_slots{stage="transcription"})'
)
DEFAULT_GPU_QUERY = "avg(DCGM_FI_DEV_GPU_UTIL)"
DEFAULT_SLOTS_QUERY = 'max(escriba_job_slots{stage="transcription"})'
DEFAULT_BUSY_SLOTS_QUERY = (
    '100 * sum(escriba_in_flight_jobs{stage="transcription"}) / sum(escriba_job_slots{stage="transcription"})'
)
DEFAULT_BUSY_BY_POD_QUERY = 'sum by (pod) (escriba_in_flight_jobs{stage="transcription"})'
#: A Kubernetes object name (DNS-1123 subdomain): names end up in API paths, so nothing else passes.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")

_FALLBACK = {"mode": "Hold", "replicas": 0, "staleAfterSeconds": 60}

#: The schema defaults, nested as in the spec; an absent parent object is defaulted to ``{}`` only where
#: the CRD does the same (``queue``, ``gpu`` and ``slots`` have required fields, so they stay absent).
DEFAULTS: dict[str, Any] = {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment"},
    "minReplicas": 1,
    "dryRun": False,
    "queue": {
        "stream": "ESCRIBA_JOBS",
        "consumer": "transcription",
        "jobsPerReplica": 1,
        "jobOverheadSeconds": 1,
        "assumedJobSeconds": 60,
        "fallback": _FALLBACK,
    },
    "throughput": {
        "initialAudioSecondsPerSecond": 30,
        "query": DEFAULT_THROUGHPUT_QUERY,
        "smoothingSeconds": 300,
        "staleAfterSeconds": 300,
    },
    "gpu": {"query": DEFAULT_GPU_QUERY, "targetUtilizationPercent": 80, "fallback": _FALLBACK},
    "slots": {
        "capacityQuery": DEFAULT_SLOTS_QUERY,
        "busyQuery": DEFAULT_BUSY_SLOTS_QUERY,
        "busyByPodQuery": DEFAULT_BUSY_BY_POD_QUERY,
        "targetBusyPercent": 90,
        "staleAfterSeconds": 60,
    },
    "behavior": {
        "tolerance": 0.1,
        "burstRatio": 2,
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 60},
                {"type": "Percent", "value": 100, "periodSeconds": 60},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
        },
    },
    "activation": {"backlogSeconds": 0, "scaleToZeroCooldownSeconds": 300},
}

#: Objects the schema creates empty when absent, so their own defaults apply.
_DEFAULTED_OBJECTS = frozenset({"throughput", "behavior", "activation", "scaleUp", "scaleDown", "fallback"})


class InvalidSpecError(InvalidInputError):
    """The spec cannot be acted on; the message names the field."""

    reason = "InvalidSpec"


@dataclass(frozen=True)
class TargetRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class QueueSource:
    """Where the backlog is read: a JetStream consumer over the NATS protocol."""

    nats_url: str
    secret_name: str | None
    stream: str
    consumer: str
    assumed_job_s: float
    #: A Secret with ``ca.crt`` (and ``tls.crt``/``tls.key`` for mTLS), as cert-manager writes them.
    tls_secret_name: str | None = None


@dataclass(frozen=True)
class QuerySource:
    """A PromQL instant query against a Prometheus-compatible HTTP API."""

    url: str
    query: str


@dataclass(frozen=True)
class AutoscalerSpec:
    target: TargetRef
    dry_run: bool
    policy: Policy
    queue: QueueSource
    gpu: QuerySource | None
    throughput: QuerySource | None
    busy_slots: QuerySource | None = None
    job_slots: QuerySource | None = None
    #: Busy jobs per pod (label ``pod``): before a scale-down, busy pods get a higher deletion cost.
    busy_by_pod: QuerySource | None = None

    def endpoints(self) -> list[str]:
        """Every address the operator would connect to for this autoscaler."""
        sources = (self.gpu, self.throughput, self.busy_slots, self.job_slots, self.busy_by_pod)
        return [self.queue.nats_url, *(s.url for s in sources if s is not None)]


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as the API server would store it: schema defaults filled in where absent."""
    return _merge(DEFAULTS, spec)


def _merge(defaults: Mapping[str, Any], value: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(value))
    for key, default in defaults.items():
        present = out.get(key)
        if isinstance(default, Mapping):
            if isinstance(present, Mapping):
                out[key] = _merge(default, present)
            elif present is None and key in _DEFAULTED_OBJECTS:
                out[key] = _merge(default, {})
        elif key not in out:
            out[key] = copy.deepcopy(default)
    return out


def parse(raw: Mapping[str, Any]) -> AutoscalerSpec:
    """Validate and convert a spec (defaults applied here); raise :class:`InvalidSpecError`."""
    spec = with_defaults(raw)
    ref = _obj(spec, "scaleTargetRef", required=True)
    target = TargetRef(
        api_version=_str(ref, "apiVersion", "scaleTargetRef", choices=("apps/v1",)),
        kind=_str(ref, "kind", "scaleTargetRef", choices=("Deployment",)),
        name=_name(ref, "name", "scaleTargetRef"),
    )
    min_replicas = _int(spec, "minReplicas", "spec", low=0)
    max_replicas = _int(spec, "maxReplicas", "spec", low=1)
    if min_replicas > max_replicas:
        raise InvalidSpecError(
            f"spec.minReplicas ({min_replicas}) is above spec.maxReplicas ({max_replicas})"
        )

    queue = _obj(spec, "queue", required=True)
    per_replica = _opt_num(queue, "targetBacklogSecondsPerReplica", "queue")
    deadline = _opt_num(queue, "drainDeadlineSeconds", "queue")
    if (per_replica is None) == (deadline is None):
        raise InvalidSpecError(
            "queue: set exactly one of targetBacklogSecondsPerReplica or drainDeadlineSeconds"
        )
    secret = queue.get("credentialsSecretRef")
    secret_name = _name(secret, "name", "queue.credentialsSecretRef") if isinstance(secret, Mapping) else None
    tls_secret = queue.get("tlsSecretRef")
    tls_name = _name(tls_secret, "name", "queue.tlsSecretRef") if isinstance(tls_secret, Mapping) else None
    source = QueueSource(
        nats_url=_str(queue, "natsUrl", "queue"),
        secret_name=secret_name,
        tls_secret_name=tls_name,
        stream=_str(queue, "stream", "queue"),
        consumer=_str(queue, "consumer", "queue"),
        assumed_job_s=_num(queue, "assumedJobSeconds", "queue", low=0.0),
    )
    if not source.nats_url.startswith(("nats://", "tls://")):
        raise InvalidSpecError(f"queue.natsUrl must start with nats:// or tls://, got {source.nats_url!r}")
    backlog = BacklogTarget(
        seconds_per_replica=per_replica,
        drain_deadline_s=deadline,
        jobs_per_replica=_int(queue, "jobsPerReplica", "queue", low=1),
        job_overhead_s=_num(queue, "jobOverheadSeconds", "queue", low=0.0),
        fallback=_fallback(queue, "queue"),
    )

    rate = _obj(spec, "throughput", required=True)
    model = ThroughputModel(
        initial=_num(rate, "initialAudioSecondsPerSecond", "throughput", positive=True),
        smoothing_s=_num(rate, "smoothingSeconds", "throughput", positive=True),
        stale_after_s=_num(rate, "staleAfterSeconds", "throughput", positive=True),
    )

    gpu_spec = spec.get("gpu")
    guard: GpuGuard | None = None
    gpu_source: QuerySource | None = None
    if gpu_spec is not None:
        gpu = _obj(spec, "gpu", required=True)
        target_util = _num(gpu, "targetUtilizationPercent", "gpu", positive=True)
        if target_util > 100:
            raise InvalidSpecError(f"gpu.targetUtilizationPercent must be at most 100, got {target_util}")
        guard = GpuGuard(target_utilization=target_util, fallback=_fallback(gpu, "gpu"))
        gpu_source = QuerySource(url=_url(gpu, "prometheusUrl", "gpu"), query=_str(gpu, "query", "gpu"))
    slots_spec = spec.get("slots")
    slots_guard: SlotsGuard | None = None
    busy_source: QuerySource | None = None
    slots_source: QuerySource | None = None
    by_pod_source: QuerySource | None = None
    if slots_spec is not None:
        slots = _obj(spec, "slots", required=True)
        target_busy = _num(slots, "targetBusyPercent", "slots", positive=True)
        if target_busy > 100:
            raise InvalidSpecError(f"slots.targetBusyPercent must be at most 100, got {target_busy}")
        slots_guard = SlotsGuard(
            target_busy_percent=target_busy,
            stale_after_s=_num(slots, "staleAfterSeconds", "slots", positive=True),
        )
        slots_url = _url(slots, "prometheusUrl", "slots")
        busy_source = QuerySource(url=slots_url, query=_str(slots, "busyQuery", "slots"))
        slots_source = QuerySource(url=slots_url, query=_str(slots, "capacityQuery", "slots"))
        by_pod_source = QuerySource(url=slots_url, query=_str(slots, "busyByPodQuery", "slots"))
    rate_url = _url(rate, "prometheusUrl", "throughput") if rate.get("prometheusUrl") is not None else None
    if rate_url is None and gpu_source is not None:
        rate_url = gpu_source.url
    if rate_url is None and busy_source is not None:
        rate_url = busy_source.url
    rate_source = QuerySource(url=rate_url, query=_str(rate, "query", "throughput")) if rate_url else None

    activation = _obj(spec, "activation", required=True)
    policy = Policy(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        backlog=backlog,
        throughput=model,
        gpu=guard,
        slots=slots_guard,
        behavior=_behavior(_obj(spec, "behavior", required=True)),
        activation_backlog_s=_num(activation, "backlogSeconds", "activation", low=0.0),
        scale_to_zero_cooldown_s=_num(activation, "scaleToZeroCooldownSeconds", "activation", low=0.0),
    )
    dry_run = spec.get("dryRun")
    if not isinstance(dry_run, bool):
        raise InvalidSpecError(f"spec.dryRun must be true or false, got {dry_run!r}")
    return AutoscalerSpec(
        target=target,
        dry_run=dry_run,
        policy=policy,
        queue=source,
        gpu=gpu_source,
        throughput=rate_source,
        busy_slots=busy_source,
        job_slots=slots_source,
        busy_by_pod=by_pod_source,
    )


def _behavior(raw: Mapping[str, Any]) -> Behavior:
    tolerance = _num(raw, "tolerance", "behavior", low=0.0)
    if tolerance >= 1:
        raise InvalidSpecError(f"behavior.tolerance must be below 1, got {tolerance}")
    burst = _num(raw, "burstRatio", "behavior", low=0.0)
    if 0 < burst <= 1:
        raise InvalidSpecError(f"behavior.burstRatio must be 0 (off) or above 1, got {burst}")
    return Behavior(
        tolerance=tolerance,
        burst_ratio=burst,
        scale_up=_rules(_obj(raw, "scaleUp", required=True), "behavior.scaleUp"),
        scale_down=_rules(_obj(raw, "scaleDown", required=True), "behavior.scaleDown"),
    )


def _rules(raw: Mapping[str, Any], where: str) -> ScalingRules:
    policies = raw.get("policies")
    if not isinstance(policies, list):
        raise InvalidSpecError(f"{where}.policies must be a list")
    parsed = []
    for index, item in enumerate(policies):
        if not isinstance(item, Mapping):
            raise InvalidSpecError(f"{where}.policies[{index}] must be an object")
        here = f"{where}.policies[{index}]"
        parsed.append(
            RatePolicy(
                type=PolicyType(_str(item, "type", here, choices=tuple(PolicyType))),
                value=_int(item, "value", here, low=1),
                period_s=float(_int(item, "periodSeconds", here, low=1)),
            )
        )
    return ScalingRules(
        stabilization_window_s=float(_int(raw, "stabilizationWindowSeconds", where, low=0)),
        select=SelectPolicy(_str(raw, "selectPolicy", where, choices=tuple(SelectPolicy))),
        policies=tuple(parsed),
    )


def _fallback(parent: Mapping[str, Any], where: str) -> Fallback:
    raw = _obj(parent, "fallback", required=True)
    here = f"{where}.fallback"
    return Fallback(
        mode=FallbackMode(_str(raw, "mode", here, choices=tuple(FallbackMode))),
        replicas=_int(raw, "replicas", here, low=0),
        stale_after_s=_num(raw, "staleAfterSeconds", here, positive=True),
    )


def _obj(parent: Mapping[str, Any], key: str, *, required: bool) -> Mapping[str, Any]:
    value = parent.get(key)
    if isinstance(value, Mapping):
        return value
    if value is None and not required:
        return {}
    raise InvalidSpecError(f"{key} is required and must be an object")


def _str(parent: Mapping[str, Any], key: str, where: str, *, choices: tuple[str, ...] | None = None) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidSpecError(f"{where}.{key} is required and must be a non-empty string")
    if choices is not None and value not in choices:
        raise InvalidSpecError(f"{where}.{key} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _name(parent: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(parent, key, where)
    if len(value) > 253 or not _OBJECT_NAME.fullmatch(value):
        raise InvalidSpecError(f"{where}.{key} must be a Kubernetes object name, got {value!r}")
    return value


def _url(parent: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(parent, key, where)
    if not value.startswith(("http://", "https://")):
        raise InvalidSpecError(f"{where}.{key} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _int(parent: Mapping[str, Any], key: str, where: str, *, low: int) -> int:
    value = parent.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpecError(f"{where}.{key} must be an integer, got {value!r}")
    if value < low:
        raise InvalidSpecError(f"{where}.{key} must be at least {low}, got {value}")
    return value


def _num(
    parent: Mapping[str, Any], key: str, where: str, *, low: float | None = None, positive: bool = False
) -> float:
    value = parent.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSpecError(f"{where}.{key} must be a number, got {value!r}")
    if positive and value <= 0:
        raise InvalidSpecError(f"{where}.{key} must be above 0, got {value}")
    if low is not None and value < low:
        raise InvalidSpecError(f"{where}.{key} must be at least {low}, got {value}")
    return float(value)


def _opt_num(parent: Mapping[str, Any], key: str, where: str) -> float | None:
    if parent.get(key) is None:
        return None
    return _num(parent, key, where, positive=True)
