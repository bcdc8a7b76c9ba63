"""The status an autoscaler shows SREs: each signal, the decision, what limited it, and conditions.

Conditions follow the Kubernetes convention (``lastTransitionTime`` moves only when ``status`` does), and
their changes are what the controller turns into Warning events, so a consumer that disappears is
reported once, not every tick.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from escriba_operator.algorithm import Decision, SignalState, SignalVerdict
from escriba_operator.throughput import Estimate

READY = "Ready"
SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"
BACKLOG_AVAILABLE = "BacklogAvailable"
GPU_AVAILABLE = "GPUUtilizationAvailable"
THROUGHPUT_AVAILABLE = "ThroughputAvailable"
SLOTS_AVAILABLE = "JobSlotsAvailable"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True", "False", "Unknown"
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Problem:
    """Why a signal could not be read this time (``reason`` is a CamelCase word)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """What one evaluation found, for the status: the decision, or why there is none."""

    decision: Decision | None
    ready_replicas: int | None = None
    blocked: Problem | None = None  # no decision or no scaling: invalid spec, no target, conflict, dry run
    backlog_problem: Problem | None = None
    gpu_problem: Problem | None = None
    throughput_problem: Problem | None = None
    slots_problem: Problem | None = None
    gpu_configured: bool = False
    throughput_configured: bool = False
    slots_configured: bool = False
    backlog_detail: Mapping[str, Any] | None = None
    last_scale_time: str | None = None


def timestamp(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(outcome: Outcome) -> list[Condition]:
    decision = outcome.decision
    signals = (
        outcome.backlog_problem,
        outcome.gpu_problem,
        outcome.throughput_problem,
        outcome.slots_problem,
    )
    problems = [p for p in signals if p is not None]
    blocked = outcome.blocked
    if blocked is not None and decision is None:
        ready = Condition(READY, "False", blocked.reason, blocked.message)
    elif problems:
        ready = Condition(READY, "False", problems[0].reason, "; ".join(p.message for p in problems))
    else:
        ready = Condition(READY, "True", "SignalsAvailable", "every configured signal was read")

    if blocked is not None:
        active = Condition(SCALING_ACTIVE, "False", blocked.reason, blocked.message)
    elif decision is not None and _on_fallback(decision):
        active = Condition(
            SCALING_ACTIVE, "True", "FallbackInUse", "a stale or missing signal uses its fallback"
        )
    else:
        active = Condition(SCALING_ACTIVE, "True", "SignalsAvailable", "scaling on backlog and throughput")

    if decision is None:
        limited = Condition(SCALING_LIMITED, "Unknown", "NoDecision", "no decision was made")
    elif decision.limited:
        limited = Condition(
            SCALING_LIMITED,
            "True",
            decision.limited_by.value,
            f"the signals asked for {decision.recommendation} replicas, {decision.desired} are allowed now",
        )
    else:
        limited = Condition(
            SCALING_LIMITED, "False", "DesiredWithinRange", f"set by {decision.limited_by.value}"
        )

    result = [ready, active, limited, _signal(BACKLOG_AVAILABLE, outcome.backlog_problem)]
    if outcome.gpu_configured:
        result.append(_signal(GPU_AVAILABLE, outcome.gpu_problem))
    if outcome.throughput_configured:
        result.append(_signal(THROUGHPUT_AVAILABLE, outcome.throughput_problem))
    if outcome.slots_configured:
        result.append(_signal(SLOTS_AVAILABLE, outcome.slots_problem))
    return result


def _signal(kind: str, problem: Problem | None) -> Condition:
    if problem is None:
        return Condition(kind, "True", "Read", "read on the last evaluation")
    return Condition(kind, "False", problem.reason, problem.message)


def _on_fallback(decision: Decision) -> bool:
    return any(v.state in (SignalState.STALE, SignalState.MISSING) for v in (decision.backlog, decision.gpu))


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], current: Sequence[Condition], now: str
) -> list[dict[str, str]]:
    """Conditions as stored: ``lastTransitionTime`` kept while the status stays the same."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    merged = []
    for condition in current:
        old = before.get(condition.type)
        same = old is not None and old.get("status") == condition.status
        since = str(old.get("lastTransitionTime")) if same and old and old.get("lastTransitionTime") else now
        merged.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": since,
            }
        )
    return merged


def changed(previous: Sequence[Mapping[str, Any]], current: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status or reason differs from before (new ones included)."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    out = []
    for condition in current:
        old = before.get(condition.type)
        if old is None or old.get("status") != condition.status or old.get("reason") != condition.reason:
            out.append(condition)
    return out


def body(
    outcome: Outcome, merged_conditions: list[dict[str, str]], *, generation: int | None
) -> dict[str, Any]:
    """The ``status`` to merge into the resource."""
    status: dict[str, Any] = {"observedGeneration": generation, "conditions": merged_conditions}
    if outcome.last_scale_time is not None:
        status["lastScaleTime"] = outcome.last_scale_time
    decision = outcome.decision
    if decision is None:
        return status
    backlog = _verdict(decision.backlog, outcome.backlog_problem)
    backlog.update(outcome.backlog_detail or {})
    gpu = _verdict(decision.gpu, outcome.gpu_problem)
    slots = _verdict(decision.slots, outcome.slots_problem)
    slots["jobsPerReplica"] = decision.jobs_per_replica
    estimate = decision.throughput
    status.update(
        {
            "currentReplicas": decision.current,
            "readyReplicas": outcome.ready_replicas,
            "desiredReplicas": decision.desired,
            "backlogSeconds": _round(decision.backlog.value, 1),
            "pendingJobs": (outcome.backlog_detail or {}).get("jobs"),
            "gpuUtilization": _round(decision.gpu.value, 1),
            "busySlotsPercent": _round(decision.slots.value, 1),
            "throughput": round(estimate.value, 3),
            "limitedBy": decision.limited_by.value,
            "signals": {
                "backlog": backlog,
                "gpu": gpu,
                "slots": slots,
                "throughput": {
                    "value": round(estimate.value, 3),
                    "source": "Measured" if estimate.measured else "Initial",
                    "measuredAt": timestamp(estimate.measured_at)
                    if estimate.measured_at is not None
                    else None,
                    "reason": outcome.throughput_problem.reason if outcome.throughput_problem else None,
                    "message": outcome.throughput_problem.message if outcome.throughput_problem else None,
                },
            },
        }
    )
    return status


def restored_throughput(status: Mapping[str, Any]) -> Estimate | None:
    """The learned throughput a previous run left in the status, so a restart (or a fail-over to the
    other replica) goes on from it instead of the spec's initial guess; None when there is none."""
    signals = status.get("signals")
    reading = signals.get("throughput") if isinstance(signals, Mapping) else None
    if not isinstance(reading, Mapping) or reading.get("source") != "Measured":
        return None
    value, at = reading.get("value"), reading.get("measuredAt")
    if isinstance(value, bool) or not isinstance(value, int | float) or not isinstance(at, str):
        return None
    try:
        when = datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return Estimate(value=float(value), measured_at=when.timestamp())


def _verdict(verdict: SignalVerdict, problem: Problem | None) -> dict[str, Any]:
    return {
        "state": verdict.state.value,
        "value": _round(verdict.value, 3),
        "recommendation": verdict.recommendation,
        "reason": problem.reason if problem else None,
        "message": problem.message if problem else None,
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
