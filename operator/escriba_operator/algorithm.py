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

Every job also costs a replica ``jobOverheadSeconds`` besides its audio (fetch, decode, VAD, the result),
counted as ``overhead * throughput`` audio-seconds, so a thousand short clips and a few long files of the
same audio are not sized alike. ``jobs_per_replica`` comes from the workers' own job-slots gauge when it
is read (a transcription worker takes as many jobs as its engine has request slots), else from the spec.

Saturation guards (GPU utilization from DCGM, the workers' busy job slots) are not targets: in a queue,
busy workers are the goal, so they never add replicas on an idle queue. When one is above its target
(beyond the tolerance) while jobs wait and no pod is still starting, it asks for
``ceil(ready * value / target)`` whatever the backlog asks: this catches a learned throughput that is too
optimistic (the backlog then asks for fewer replicas than there are, while every GPU is busy and jobs
pile up). When they are below target and the queue is empty, they let the backlog scale down; in between
they hold the replicas that are busy, so a shrinking backlog does not take GPUs away from the jobs they
run. A guard whose reading is stale or missing has no opinion (``Hold``) or a floor (``Static``): it
never freezes the fleet.

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
    busy_slots: Sample | None = None  # percent of the ready replicas' job slots holding a job
    job_slots: Sample | None = None  # jobs one replica takes at once, from the workers' gauge


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
    slots: SignalVerdict = SignalVerdict(SignalState.DISABLED, None, None)
    jobs_per_replica: int = 1

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
    per_replica = _jobs_per_replica(policy, obs)
    backlog_verdict, rec, limit = _backlog_recommendation(
        policy, obs.backlog, backlog, estimate.value, current, active, per_replica
    )

    gpu_verdict = _gpu_recommendation(policy, obs, backlog, current, ready)
    slots_verdict = _slots_recommendation(policy, obs, backlog, current, ready)
    for verdict, saturated in ((gpu_verdict, Limit.GPU_SATURATION), (slots_verdict, Limit.SLOTS_SATURATION)):
        if verdict.recommendation is None or verdict.recommendation <= rec:
            continue
        rec = verdict.recommendation
        if verdict.state is not SignalState.FRESH:
            limit = Limit.GPU_FALLBACK
        elif rec > current:
            limit = saturated
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
        slots=slots_verdict,
        jobs_per_replica=per_replica,
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


def _jobs_per_replica(policy: Policy, obs: Observation) -> int:
    """The workers' job-slots gauge when fresh, else the spec's ``jobsPerReplica``."""
    sample = obs.job_slots
    stale_after = policy.slots.stale_after_s if policy.slots else policy.backlog.fallback.stale_after_s
    fresh = sample is not None and obs.now - sample.observed_at <= stale_after
    if sample is not None and fresh and math.isfinite(sample.value) and sample.value >= 1:
        return round(sample.value)
    return policy.backlog.jobs_per_replica


def _backlog_recommendation(
    policy: Policy,
    reading: Backlog | None,
    backlog: Backlog | None,
    speed: float,
    current: int,
    active: bool,
    jobs_per_replica: int,
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
    overhead = target.job_overhead_s * max(speed, _EPSILON)  # in audio-seconds
    needed = _replicas_for(backlog, capacity, overhead)
    limit = Limit.BACKLOG if needed >= backlog.seconds / capacity - _EPSILON else Limit.JOB_COUNT
    cap = math.ceil(backlog.jobs / jobs_per_replica)
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


def _replicas_for(backlog: Backlog, capacity: float, overhead: float = 0.0) -> float:
    """Replicas to get through the backlog: its audio plus each job's overhead (both in audio-seconds)
    over one replica's ``capacity`` (audio-seconds within the deadline), except that a job longer than
    that still occupies only one replica: it cannot be split.
    """
    if backlog.jobs <= 0 or backlog.seconds <= 0:
        return 0.0
    known = backlog.durations[: backlog.jobs]
    clipped = sum(min(d + overhead, capacity) for d in known)
    rest = backlog.jobs - len(known)
    if rest > 0:
        mean = max(backlog.seconds - sum(known), 0.0) / rest
        clipped += rest * min(mean + overhead, capacity)
    return clipped / capacity


def _gpu_recommendation(
    policy: Policy, obs: Observation, backlog: Backlog | None, current: int, ready: int
) -> SignalVerdict:
    guard = policy.gpu
    if guard is None:
        return SignalVerdict(SignalState.DISABLED, None, None)
    reading = obs.gpu_utilization
    sample = _fresh(reading, reading.observed_at if reading else None, guard.fallback, obs.now)
    if sample is None:
        state = SignalState.STALE if reading is not None else SignalState.MISSING
        floor = guard.fallback.replicas if guard.fallback.mode is FallbackMode.STATIC else None
        return SignalVerdict(state, None, floor)
    rec = _saturation(policy, sample.value / guard.target_utilization, backlog, current, ready)
    return SignalVerdict(SignalState.FRESH, sample.value, rec)


def _slots_recommendation(
    policy: Policy, obs: Observation, backlog: Backlog | None, current: int, ready: int
) -> SignalVerdict:
    guard = policy.slots
    if guard is None:
        return SignalVerdict(SignalState.DISABLED, None, None)
    reading = obs.busy_slots
    if reading is None:
        return SignalVerdict(SignalState.MISSING, None, None)
    if obs.now - reading.observed_at > guard.stale_after_s:
        return SignalVerdict(SignalState.STALE, None, None)
    rec = _saturation(policy, reading.value / guard.target_busy_percent, backlog, current, ready)
    return SignalVerdict(SignalState.FRESH, reading.value, rec)


def _saturation(
    policy: Policy, ratio: float, backlog: Backlog | None, current: int, ready: int
) -> int | None:
    """What a saturation reading (``ratio`` = value / target) asks for; None: no opinion."""
    if ready == 0 or backlog is None:
        return None
    tolerance = policy.behavior.tolerance
    starting = current - ready
    proportional = math.ceil(ready * ratio - _EPSILON) + starting
    if ratio > 1 + tolerance and backlog.waiting_jobs > 0 and starting == 0:
        return max(proportional, current)
    if ratio < 1 - tolerance and backlog.jobs == 0:
        return 0
    return min(current, proportional)
