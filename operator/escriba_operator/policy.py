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
    """Tolerance (a fraction of the target) and the per-direction rules, as in the HPA."""

    tolerance: float = 0.1
    scale_up: ScalingRules = field(default_factory=_default_up)
    scale_down: ScalingRules = field(default_factory=_default_down)


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
    backlog never asks for more replicas than there are jobs to give them.
    """

    seconds_per_replica: float | None = None
    drain_deadline_s: float | None = None
    jobs_per_replica: int = 1
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
    """GPU utilization (percent, averaged over the ready replicas) as a saturation guard."""

    target_utilization: float = 80.0
    fallback: Fallback = field(default_factory=Fallback)


@dataclass(frozen=True)
class Policy:
    """Everything the algorithm decides with; ``gpu=None`` turns the GPU guard off."""

    min_replicas: int
    max_replicas: int
    backlog: BacklogTarget
    throughput: ThroughputModel = field(default_factory=ThroughputModel)
    gpu: GpuGuard | None = None
    behavior: Behavior = field(default_factory=Behavior)
    activation_backlog_s: float = 0.0
    scale_to_zero_cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}..{self.max_replicas}"
            )
