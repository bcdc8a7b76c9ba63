"""The autoscaling policy as plain values: what the algorithm needs from a TranscriptionAutoscaler spec.

Kept apart from the CRD parsing (``spec.py``) so the algorithm, its tests and the ``bench/`` simulation build
policies directly, with no Kubernetes vocabulary or defaults in the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class PolicyType(StrEnum):
    """How a rate policy bounds one period's change (the HPA's vocabulary)."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    """Which of several rate policies wins: the largest change, the smallest, or no change at all."""

    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class FallbackMode(StrEnum):
    """What a stale or missing signal recommends: keep the current replicas, or a fixed count."""

    HOLD = "Hold"
    STATIC = "Static"


@dataclass(frozen=True)
class RatePolicy:
    """At most ``value`` pods (or percent of the period's starting replicas) per ``period_s`` seconds."""

    type: PolicyType
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    """One direction's behavior: stabilization window (seconds) and rate policies."""

    stabilization_window_s: float
    select: SelectPolicy = SelectPolicy.MAX
    policies: tuple[RatePolicy, ...] = ()


def _default_up() -> ScalingRules:
    return ScalingRules(
        stabilization_window_s=0.0,
        policies=(RatePolicy(PolicyType.PODS, 4, 60.0), RatePolicy(PolicyType.PERCENT, 100, 60.0)),
    )


def _default_down() -> ScalingRules:
    return ScalingRules(stabilization_window_s=300.0, policies=(RatePolicy(PolicyType.PERCENT, 50, 60.0),))


@dataclass(frozen=True)
class Behavior:
    """Tolerance (a fraction of the target) and the per-direction rules, as in the HPA.

    ``burst_ratio``: a recommendation at least this many times the current replicas (and above them) is
    a burst, as Knative's panic mode: the scale-up rate policies and window are lifted so the fleet gets
    there at once (bounded by ``maxReplicas``). 0 turns it off; the CRD's default is 2.
    """

    tolerance: float = 0.1
    scale_up: ScalingRules = field(default_factory=_default_up)
    scale_down: ScalingRules = field(default_factory=_default_down)
    burst_ratio: float = 0.0


@dataclass(frozen=True)
class Fallback:
    """The recommendation of a signal older than ``stale_after_s`` seconds or missing altogether."""

    mode: FallbackMode = FallbackMode.HOLD
    replicas: int = 0
    stale_after_s: float = 60.0


@dataclass(frozen=True)
class BacklogTarget:
    """How much queued audio one replica should face.

    Exactly one of ``seconds_per_replica`` (audio-seconds of backlog per replica) or ``drain_deadline_s``
    (seconds in which the whole backlog should be transcribed, using the measured throughput) is set.
    ``jobs_per_replica`` is how many jobs one replica works on at once: a job is indivisible, so the
    backlog never asks for more replicas than there are jobs to give them (the workers' own job-slots
    gauge replaces it when read). ``job_overhead_s`` is what a job costs a replica besides its audio
    (fetch, decode, VAD, writing the result): without it a thousand 5-second clips look like 5000
    audio-seconds, when they cost a replica far more than one 83-minute file.
    """

    seconds_per_replica: float | None = None
    drain_deadline_s: float | None = None
    jobs_per_replica: int = 1
    job_overhead_s: float = 0.0
    fallback: Fallback = field(default_factory=Fallback)

    def __post_init__(self) -> None:
        if (self.seconds_per_replica is None) == (self.drain_deadline_s is None):
            raise ValueError("set exactly one of seconds_per_replica or drain_deadline_s")


@dataclass(frozen=True)
class ThroughputModel:
    """Audio-seconds one busy replica transcribes per second: a starting value, then a moving average.

    ``smoothing_s`` is the time constant of the exponential moving average; a measurement older than
    ``stale_after_s`` is not folded in.
    """

    initial: float = 30.0
    smoothing_s: float = 300.0
    stale_after_s: float = 300.0


@dataclass(frozen=True)
class GpuGuard:
    """GPU utilization (percent, averaged over the ready replicas) as a saturation guard.

    A stale or missing reading gives the guard no opinion under ``Hold`` (the backlog decides alone), so a
    broken DCGM exporter never freezes scale-down; ``Static`` keeps its count as a floor.
    """

    target_utilization: float = 80.0
    fallback: Fallback = field(default_factory=Fallback)


@dataclass(frozen=True)
class SlotsGuard:
    """The workers' busy job slots (percent of the ready replicas' slots) as a second saturation signal.

    It sees what DCGM cannot: a replica whose every slot holds a job is full whether its GPU shows 40 %
    (decoding, I/O) or 100 %. A stale or missing reading is no opinion.
    """

    target_busy_percent: float = 90.0
    stale_after_s: float = 60.0


@dataclass(frozen=True)
class Policy:
    """Everything the algorithm decides with; ``gpu=None`` / ``slots=None`` turn a guard off."""

    min_replicas: int
    max_replicas: int
    backlog: BacklogTarget
    throughput: ThroughputModel = field(default_factory=ThroughputModel)
    gpu: GpuGuard | None = None
    slots: SlotsGuard | None = None
    behavior: Behavior = field(default_factory=Behavior)
    activation_backlog_s: float = 0.0
    scale_to_zero_cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}..{self.max_replicas}"
            )
