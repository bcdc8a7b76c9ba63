"""How many transcription replicas the queue needs: the scaling algorithm, pure and documented.

Why not count messages: a queue of ten 2-hour files and one of ten 5-second clips hold the same number of
messages and a thousand-fold different amount of work. The work is the audio, so the backlog is measured
in audio-seconds (every job carries its duration) and divided by what one replica gets through:

    capacity = throughput_per_replica * drain_deadline_s     (audio-seconds one replica finishes in time)
    needed   = sum over jobs of min(job_audio_seconds, capacity) / capacity

or, with a fixed target, ``capacity = target_seconds_per_replica``. ``throughput_per_replica``
(audio-seconds per second of one busy replica) is learned online from the workers' metrics
(``throughput.py``), starting from the configured value. A job cannot be split, so one longer than
``capacity`` still counts as one replica, not several, and the backlog never asks for more replicas than
``ceil(jobs / jobs_per_replica)``.

GPU utilization is a saturation guard, not a target: in a queue, busy GPUs are the goal, so utilization
never adds replicas on its own. When the GPUs are above target (beyond the tolerance) while jobs wait,
the backlog does not already ask for fewer replicas and no pod is still starting, it asks for
``ceil(ready * util / target)``: this catches a learned throughput that is too optimistic. When they are
below target and the queue is empty, it lets the backlog scale down; in between it holds the replicas
that are busy, so a shrinking backlog does not take GPUs away from the jobs they run.

Pods that are not ready yet count as capacity on the way: every comparison uses the replicas already
asked for (the Deployment's ``spec.replicas``), utilization is averaged over ready pods only, and the
guard adds nothing while pods are starting.

A signal that is missing (consumer gone, empty query) or older than its ``staleAfterSeconds`` is replaced
by its fallback (hold the current replicas, or a static count), never by ``maxReplicas``. Tolerance,
stabilization windows, rate policies, bounds and the scale-to-zero rules then apply (``behavior.py``).

No Kubernetes, NATS or HTTP here: the controller gathers an :class:`Observation`, this module returns a
:class:`Decision` and the next :class:`State`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from escriba_operator import behavior, throughput
from escriba_operator.behavior import BehaviorState, Bounds, Limit
from escriba_operator.policy import Fallback, FallbackMode, Policy

_R = TypeVar("_R")

#: Rounding slack: 2.0000000001 replicas is two replicas, not three.
_EPSILON = 1e-9


class SignalState(StrEnum):
    FRESH = "Fresh"
    STALE = "Stale"
    MISSING = "Missing"
    DISABLED = "Disabled"


@dataclass(frozen=True)
class Backlog:
    """The transcription queue as read from its consumer at ``observed_at``.

    ``waiting_jobs``: not delivered yet (``num_pending``); ``running_jobs``: delivered, not acknowledged
    (``num_ack_pending``); ``seconds``: audio-seconds of both; ``durations``: the audio-seconds of each
    job the reader knows individually (possibly fewer than ``jobs``: the rest count at their mean).
    """

    waiting_jobs: int
    running_jobs: int
    seconds: float
    observed_at: float
    durations: tuple[float, ...] = ()

    @property
    def jobs(self) -> int:
        return self.waiting_jobs + self.running_jobs


@dataclass(frozen=True)
class Sample:
    """One reading of a gauge-like signal (GPU percent, throughput) and when it was taken."""

    value: float
    observed_at: float


@dataclass(frozen=True)
class Observation:
    """What the controller saw; ``None`` for a signal that is missing (never read, or gone)."""

    now: float
    current_replicas: int
    ready_replicas: int
    backlog: Backlog | None = None
    gpu_utilization: Sample | None = None
    throughput: Sample | None = None


@dataclass(frozen=True)
class State:
    behavior: BehaviorState = field(default_factory=BehaviorState)
    throughput: throughput.Estimate | None = None


@dataclass(frozen=True)
class SignalVerdict:
    """One signal's reading and the replicas it recommends (``None``: no opinion)."""

    state: SignalState
    value: float | None
    recommendation: int | None


@dataclass(frozen=True)
class Decision:
    """``recommendation``: what the signals asked for; ``desired``: what the behavior allows now."""

    current: int
    recommendation: int
    desired: int
    limited_by: Limit
    backlog: SignalVerdict
    gpu: SignalVerdict
    throughput: throughput.Estimate
    active: bool
    state: State

    @property
    def limited(self) -> bool:
        return self.limited_by in behavior.LIMITING


def decide(policy: Policy, obs: Observation, state: State) -> Decision:
    """The replicas to ask for now, why, and the state to pass to the next call."""
    now = obs.now
    current = max(obs.current_replicas, 0)
    ready = min(max(obs.ready_replicas, 0), current)
    since = state.behavior.since if state.behavior.since is not None else now

    estimate = state.throughput or throughput.start(policy.throughput)
    sample = obs.throughput
    estimate = throughput.update(
        estimate,
        policy.throughput,
        sample=sample.value if sample else None,
        observed_at=sample.observed_at if sample else None,
        now=now,
        since=since,
    )

    backlog = _fresh(
        obs.backlog, obs.backlog.observed_at if obs.backlog else None, policy.backlog.fallback, now
    )
    active = backlog is not None and backlog.jobs > 0 and backlog.seconds > policy.activation_backlog_s
    backlog_verdict, rec, limit = _backlog_recommendation(
        policy, obs.backlog, backlog, estimate.value, current, active
    )

    gpu_verdict = _gpu_recommendation(policy, obs, backlog, current, ready, rec)
    if gpu_verdict.recommendation is not None and gpu_verdict.recommendation > rec:
        rec = gpu_verdict.recommendation
        if gpu_verdict.state is not SignalState.FRESH:
            limit = Limit.GPU_FALLBACK
        elif rec > current:
            limit = Limit.GPU_SATURATION
        else:
            limit = Limit.GPU_BUSY

    normalized = behavior.normalize(
        recommendation=rec,
        current=current,
        active=active,
        now=now,
        behavior=policy.behavior,
        bounds=Bounds(policy.min_replicas, policy.max_replicas, policy.scale_to_zero_cooldown_s),
        state=state.behavior,
    )
    return Decision(
        current=current,
        recommendation=rec,
        desired=normalized.desired,
        limited_by=normalized.limited_by or limit,
        backlog=backlog_verdict,
        gpu=gpu_verdict,
        throughput=estimate,
        active=active,
        state=State(behavior=normalized.state, throughput=estimate),
    )


def applied(decision: Decision, policy: Policy, *, now: float) -> State:
    """The state after the controller actually set ``decision.desired`` replicas (for rate policies)."""
    events = behavior.record_scale(
        decision.state.behavior,
        now=now,
        current=decision.current,
        desired=decision.desired,
        behavior=policy.behavior,
    )
    return replace(decision.state, behavior=events)


def _fresh(reading: _R | None, observed_at: float | None, fallback: Fallback, now: float) -> _R | None:
    if reading is None or observed_at is None or now - observed_at > fallback.stale_after_s:
        return None
    return reading


def _fallback(fallback: Fallback, current: int) -> int:
    return current if fallback.mode is FallbackMode.HOLD else fallback.replicas


def _backlog_recommendation(
    policy: Policy, reading: Backlog | None, backlog: Backlog | None, speed: float, current: int, active: bool
) -> tuple[SignalVerdict, int, Limit]:
    target = policy.backlog
    if backlog is None:
        rec = _fallback(target.fallback, current)
        state = SignalState.MISSING if reading is None else SignalState.STALE
        return SignalVerdict(state, None, rec), rec, Limit.BACKLOG_FALLBACK
    if target.drain_deadline_s is not None:
        capacity = max(speed, _EPSILON) * target.drain_deadline_s
    else:
        assert target.seconds_per_replica is not None
        capacity = target.seconds_per_replica
    needed = _replicas_for(backlog, capacity)
    limit = Limit.BACKLOG if needed >= backlog.seconds / capacity - _EPSILON else Limit.JOB_COUNT
    cap = math.ceil(backlog.jobs / target.jobs_per_replica)
    if needed > cap:
        needed, limit = float(cap), Limit.JOB_COUNT
    if current == 0:
        rec = max(1, math.ceil(needed - _EPSILON)) if active else 0
        limit = Limit.ACTIVATION if active else limit
    elif needed > 0 and abs(needed / current - 1) <= policy.behavior.tolerance:
        rec, limit = current, Limit.TOLERANCE
    else:
        rec = math.ceil(needed - _EPSILON)
    return SignalVerdict(SignalState.FRESH, backlog.seconds, rec), rec, limit


def _replicas_for(backlog: Backlog, capacity: float) -> float:
    """Replicas to get through the backlog: its audio over one replica's ``capacity`` (audio-seconds within
    the deadline), except that a job longer than that still occupies only one replica: it cannot be split.
    """
    if backlog.jobs <= 0 or backlog.seconds <= 0:
        return 0.0
    known = backlog.durations[: backlog.jobs]
    clipped = sum(min(d, capacity) for d in known)
    rest = backlog.jobs - len(known)
    if rest > 0:
        mean = max(backlog.seconds - sum(known), 0.0) / rest
        clipped += rest * min(mean, capacity)
    return clipped / capacity


def _gpu_recommendation(
    policy: Policy, obs: Observation, backlog: Backlog | None, current: int, ready: int, backlog_rec: int
) -> SignalVerdict:
    guard = policy.gpu
    if guard is None:
        return SignalVerdict(SignalState.DISABLED, None, None)
    reading = obs.gpu_utilization
    sample = _fresh(reading, reading.observed_at if reading else None, guard.fallback, obs.now)
    if sample is None:
        state = SignalState.STALE if reading is not None else SignalState.MISSING
        return SignalVerdict(state, None, _fallback(guard.fallback, current))
    if ready == 0:
        return SignalVerdict(SignalState.FRESH, sample.value, None)
    ratio = sample.value / guard.target_utilization
    tolerance = policy.behavior.tolerance
    starting = current - ready
    proportional = math.ceil(ready * ratio - _EPSILON) + starting
    waiting = backlog is not None and backlog.waiting_jobs > 0
    empty = backlog is not None and backlog.jobs == 0
    if ratio > 1 + tolerance and waiting and backlog_rec >= current and starting == 0:
        rec = proportional
    elif ratio < 1 - tolerance and empty:
        rec = 0
    else:
        rec = min(current, proportional)
    return SignalVerdict(SignalState.FRESH, sample.value, rec)
