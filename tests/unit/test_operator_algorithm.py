"""The scaling algorithm, scenario by scenario: a table of ticks in, replicas out.

Each scenario drives :func:`escriba_operator.algorithm.decide` tick by tick as the controller does: the
replicas it decides are applied before the next tick (pods ready at once unless the tick says otherwise).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from escriba_operator.algorithm import (
    Backlog,
    Decision,
    Observation,
    Sample,
    SignalState,
    State,
    applied,
    decide,
)
from escriba_operator.behavior import Limit
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
from escriba_operator.throughput import Estimate

#: One replica drains 600 audio-seconds within the deadline (10 audio-s/s for 60 s).
BASE = Policy(
    min_replicas=1,
    max_replicas=20,
    backlog=BacklogTarget(drain_deadline_s=60.0),
    throughput=ThroughputModel(initial=10.0, smoothing_s=60.0, stale_after_s=120.0),
)
UNLIMITED_UP = ScalingRules(0.0, policies=(RatePolicy(PolicyType.PODS, 100, 60.0),))
INSTANT_DOWN = ScalingRules(0.0, policies=(RatePolicy(PolicyType.PERCENT, 100, 15.0),))
FAST = dataclasses.replace(BASE, behavior=Behavior(scale_up=UNLIMITED_UP, scale_down=INSTANT_DOWN))


@dataclass(frozen=True)
class Tick:
    """What the controller sees at ``t``; ``seconds=None``: the backlog signal is missing."""

    t: float
    seconds: float | None = 0.0
    jobs: int = 0
    waiting: int | None = None  # default: all jobs are waiting
    age: float = 0.0  # how old the backlog reading is
    ready: int | None = None  # default: every replica is ready
    gpu: float | None = None
    throughput: float | None = None
    durations: tuple[float, ...] = ()
    busy_slots: float | None = None
    job_slots: float | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    policy: Policy
    start: int
    ticks: Sequence[Tick]
    expected: Sequence[int]
    last_limit: Limit | None = None
    state: State = field(default_factory=State)


def drive(policy: Policy, start: int, ticks: Sequence[Tick], state: State | None = None) -> list[Decision]:
    state = state or State()
    current = start
    decisions = []
    for tick in ticks:
        backlog = None
        if tick.seconds is not None:
            waiting = tick.jobs if tick.waiting is None else tick.waiting
            backlog = Backlog(
                waiting,
                tick.jobs - waiting,
                tick.seconds,
                observed_at=tick.t - tick.age,
                durations=tick.durations,
            )
        obs = Observation(
            now=tick.t,
            current_replicas=current,
            ready_replicas=current if tick.ready is None else tick.ready,
            backlog=backlog,
            gpu_utilization=Sample(tick.gpu, tick.t) if tick.gpu is not None else None,
            throughput=Sample(tick.throughput, tick.t) if tick.throughput is not None else None,
            busy_slots=Sample(tick.busy_slots, tick.t) if tick.busy_slots is not None else None,
            job_slots=Sample(tick.job_slots, tick.t) if tick.job_slots is not None else None,
        )
        decision = decide(policy, obs, state)
        state = applied(decision, policy, now=tick.t)
        current = decision.desired
        decisions.append(decision)
    return decisions


def every(step: float, count: int, **fields: object) -> list[Tick]:
    return [Tick(t=i * step, **fields) for i in range(count)]  # type: ignore[arg-type]


def noisy(level: float, spread: float, count: int, jobs: int) -> list[Tick]:
    """A steady load with a repeating +-``spread`` wobble, one tick every 15 s."""
    wobble = (0.0, 1.0, -0.6, 0.8, -1.0, 0.3, -0.2, 0.9, -0.8)
    return [
        Tick(t=15.0 * i, seconds=level * (1 + spread * wobble[i % len(wobble)]), jobs=jobs)
        for i in range(count)
    ]


SCENARIOS = [
    Scenario(
        name="steady load within the tolerance never moves",
        policy=BASE,
        start=5,
        ticks=noisy(3000.0, 0.08, 60, jobs=12),
        expected=[5] * 60,
    ),
    Scenario(
        name="a burst is followed at the scale-up rate policy (4 pods or 100% per minute)",
        policy=BASE,
        start=2,
        ticks=every(15.0, 9, seconds=15_000.0, jobs=40),
        expected=[6, 6, 6, 6, 12, 12, 12, 12, 20],
        last_limit=Limit.TOO_MANY_REPLICAS,
    ),
    Scenario(
        name="ten 2-hour files need ten replicas (one per job)",
        policy=FAST,
        start=1,
        ticks=[Tick(t=0.0, seconds=10 * 7200.0, jobs=10)],
        expected=[10],
        last_limit=Limit.JOB_COUNT,
    ),
    Scenario(
        name="ten 5-second clips need one",
        policy=FAST,
        start=1,
        ticks=[Tick(t=0.0, seconds=10 * 5.0, jobs=10)],
        expected=[1],
        last_limit=Limit.BACKLOG,
    ),
    Scenario(
        name="a missing backlog holds the current replicas",
        policy=FAST,
        start=4,
        ticks=every(15.0, 5, seconds=None),
        expected=[4] * 5,
        last_limit=Limit.BACKLOG_FALLBACK,
    ),
    Scenario(
        name="a stale backlog holds too, whatever it said",
        policy=FAST,
        start=4,
        ticks=every(15.0, 3, seconds=1e9, jobs=1000, age=61.0),
        expected=[4] * 3,
        last_limit=Limit.BACKLOG_FALLBACK,
    ),
    Scenario(
        name="a missing backlog with a static fallback goes to that count, not to maxReplicas",
        policy=dataclasses.replace(
            FAST,
            backlog=BacklogTarget(drain_deadline_s=60.0, fallback=Fallback(FallbackMode.STATIC, replicas=3)),
        ),
        start=8,
        ticks=every(15.0, 3, seconds=None),
        expected=[3, 3, 3],
    ),
    Scenario(
        name="a missing GPU signal is no opinion: an empty queue still gives the replicas back",
        policy=dataclasses.replace(FAST, gpu=GpuGuard(80.0)),
        start=4,
        ticks=every(15.0, 3),
        expected=[1, 1, 1],
        last_limit=Limit.TOO_FEW_REPLICAS,
    ),
    Scenario(
        name="a missing GPU signal with a static fallback keeps that count as a floor",
        policy=dataclasses.replace(
            FAST, gpu=GpuGuard(80.0, fallback=Fallback(FallbackMode.STATIC, replicas=3))
        ),
        start=4,
        ticks=every(15.0, 3),
        expected=[3, 3, 3],
        last_limit=Limit.GPU_FALLBACK,
    ),
    Scenario(
        name="saturated GPUs add replicas while an optimistic throughput asks for fewer",
        policy=dataclasses.replace(FAST, gpu=GpuGuard(80.0)),
        start=6,
        ticks=[Tick(0.0, seconds=1200.0, jobs=40, waiting=34, gpu=100.0)],
        expected=[8],  # the backlog asks for 2; ceil(6 ready * 100 / 80)
        last_limit=Limit.GPU_SATURATION,
    ),
    Scenario(
        name="full job slots add replicas while DCGM shows half-busy GPUs",
        policy=dataclasses.replace(FAST, gpu=GpuGuard(80.0), slots=SlotsGuard(90.0)),
        start=4,
        ticks=[Tick(0.0, seconds=1200.0, jobs=30, waiting=14, gpu=50.0, busy_slots=100.0)],
        expected=[5],  # ceil(4 * 100 / 90)
        last_limit=Limit.SLOTS_SATURATION,
    ),
    Scenario(
        name="a burst far above capacity scales up at once, not 4 pods a minute",
        policy=dataclasses.replace(BASE, behavior=Behavior(burst_ratio=2.0)),
        start=2,
        ticks=every(15.0, 3, seconds=15_000.0, jobs=40),
        expected=[20, 20, 20],
        last_limit=Limit.TOO_MANY_REPLICAS,
    ),
    Scenario(
        name="below the burst ratio the rate policy still applies",
        policy=dataclasses.replace(BASE, behavior=Behavior(burst_ratio=2.0)),
        start=4,
        ticks=[Tick(0.0, seconds=4200.0, jobs=40)],
        expected=[7],  # asks for 7 < 2 * 4: an ordinary scale-up, within 4 pods or 100 %
    ),
    Scenario(
        name="an idle queue goes to one replica, then to zero after the cooldown",
        policy=dataclasses.replace(FAST, min_replicas=0, scale_to_zero_cooldown_s=60.0),
        start=3,
        ticks=every(15.0, 6),
        expected=[1, 1, 1, 1, 0, 0],
    ),
    Scenario(
        name="work on the last replica restarts the cooldown",
        policy=dataclasses.replace(FAST, min_replicas=0, scale_to_zero_cooldown_s=60.0),
        start=1,
        ticks=[Tick(0.0), Tick(30.0, seconds=20.0, jobs=1), Tick(60.0), Tick(75.0), Tick(90.0), Tick(105.0)],
        expected=[1, 1, 1, 1, 0, 0],
    ),
    Scenario(
        name="the first pending job wakes one replica from zero",
        policy=dataclasses.replace(BASE, min_replicas=0),
        start=0,
        ticks=[Tick(0.0), Tick(15.0, seconds=4.0, jobs=1)],
        expected=[0, 1],
        last_limit=Limit.ACTIVATION,
    ),
    Scenario(
        name="below the activation threshold the queue stays at zero",
        policy=dataclasses.replace(BASE, min_replicas=0, activation_backlog_s=100.0),
        start=0,
        ticks=[Tick(0.0, seconds=40.0, jobs=2), Tick(15.0, seconds=130.0, jobs=3)],
        expected=[0, 1],
    ),
    Scenario(
        name="scale-down follows its rate policy (half the replicas per minute)",
        policy=dataclasses.replace(
            BASE,
            behavior=Behavior(
                scale_down=ScalingRules(0.0, policies=(RatePolicy(PolicyType.PERCENT, 50, 60.0),)),
            ),
        ),
        start=16,
        ticks=every(15.0, 13),
        expected=[8, 8, 8, 8, 4, 4, 4, 4, 2, 2, 2, 2, 1],
        last_limit=Limit.TOO_FEW_REPLICAS,
    ),
    Scenario(
        name="a disabled direction never moves",
        policy=dataclasses.replace(
            BASE, behavior=Behavior(scale_down=ScalingRules(0.0, select=SelectPolicy.DISABLED))
        ),
        start=6,
        ticks=every(15.0, 4),
        expected=[6] * 4,
        last_limit=Limit.SCALE_DOWN_LIMIT,
    ),
    Scenario(
        name="scale-down waits for the stabilization window (default 300 s)",
        policy=BASE,
        start=6,
        ticks=[Tick(0.0, seconds=3600.0, jobs=6), *every(30.0, 14)[1:]],
        expected=[6] * 10 + [3, 3, 1, 1],
        last_limit=Limit.TOO_FEW_REPLICAS,
    ),
    Scenario(
        name="GPUs above target while jobs wait add replicas the backlog alone would not",
        policy=dataclasses.replace(FAST, gpu=GpuGuard(80.0)),
        start=4,
        ticks=[Tick(0.0, seconds=2400.0, jobs=8, gpu=100.0)],
        expected=[5],  # the backlog asks for 4; ceil(4 ready * 100 / 80)
        last_limit=Limit.GPU_SATURATION,
    ),
    Scenario(
        name="pods still starting count as capacity on the way: the guard waits for them",
        policy=dataclasses.replace(FAST, gpu=GpuGuard(80.0)),
        start=4,
        ticks=[
            Tick(0.0, seconds=2400.0, jobs=8, ready=2, gpu=100.0),
            Tick(15.0, seconds=2400.0, jobs=8, gpu=100.0),
        ],
        expected=[4, 5],
        last_limit=Limit.GPU_SATURATION,
    ),
    Scenario(
        name="a job longer than one replica's share counts as one replica",
        policy=FAST,
        start=1,
        ticks=[Tick(0.0, seconds=7200.0 + 20 * 30.0, jobs=21, durations=(7200.0,) + (30.0,) * 20)],
        expected=[2],  # 600 audio-s per replica: the lecture takes one, the 20 clips fit in another
        last_limit=Limit.JOB_COUNT,
    ),
    Scenario(
        name="busy GPUs hold their replicas while a shrinking backlog asks for fewer",
        policy=dataclasses.replace(FAST, gpu=GpuGuard(80.0)),
        start=6,
        ticks=[Tick(0.0, seconds=1200.0, jobs=6, waiting=0, gpu=85.0)],
        expected=[6],
        last_limit=Limit.GPU_BUSY,
    ),
    Scenario(
        name="idle GPUs and an empty queue let the replicas go",
        policy=dataclasses.replace(FAST, gpu=GpuGuard(80.0)),
        start=6,
        ticks=[Tick(0.0, gpu=3.0)],
        expected=[1],
        last_limit=Limit.TOO_FEW_REPLICAS,
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    decisions = drive(scenario.policy, scenario.start, scenario.ticks, scenario.state)
    assert [d.desired for d in decisions] == list(scenario.expected)
    if scenario.last_limit is not None:
        assert decisions[-1].limited_by is scenario.last_limit


def test_a_noisier_steady_load_changes_replicas_at_most_once() -> None:
    decisions = drive(BASE, 5, noisy(3000.0, 0.2, 80, jobs=12))
    desired = [d.desired for d in decisions]
    changes = sum(1 for a, b in zip([5, *desired], desired, strict=False) if a != b)
    assert changes <= 1
    assert max(desired) <= 6


def test_the_same_message_count_asks_for_replicas_in_proportion_to_the_audio() -> None:
    def replicas(seconds_per_job: float) -> int:
        [decision] = drive(FAST, 1, [Tick(0.0, seconds=20 * seconds_per_job, jobs=20)])
        return decision.desired

    assert [replicas(s) for s in (5.0, 60.0, 300.0, 600.0, 7200.0)] == [1, 2, 10, 20, 20]


def test_throughput_starts_from_the_configured_value_and_learns_from_measurements() -> None:
    ticks = [Tick(t=15.0 * i, seconds=11_400.0, jobs=40, throughput=20.0) for i in range(40)]
    decisions = drive(FAST, 19, [Tick(0.0, seconds=11_400.0, jobs=40), *ticks[1:]])
    estimates = [d.throughput.value for d in decisions]
    assert estimates[0] == 10.0 and not decisions[0].throughput.measured
    assert all(a <= b for a, b in itertools.pairwise(estimates))
    assert estimates[-1] == pytest.approx(20.0, abs=0.1)
    assert decisions[0].desired == 19 and decisions[-1].desired == 10


def test_the_first_throughput_measurement_counts_even_on_the_first_tick() -> None:
    [decision] = drive(FAST, 1, [Tick(0.0, seconds=6000.0, jobs=10, throughput=20.0)])
    assert decision.throughput.value == 20.0 and decision.throughput.measured
    assert decision.desired == 5  # 6000 audio-s over 60 s at 20 audio-s/s, not at the initial 10


def test_a_persisted_estimate_carries_on_where_it_left_off() -> None:
    restored = State(throughput=Estimate(value=25.0, measured_at=-30.0))
    [decision] = drive(FAST, 1, [Tick(0.0, seconds=6000.0, jobs=10)], restored)
    assert decision.throughput.value == 25.0 and decision.desired == 4


def test_a_stale_or_non_positive_throughput_measurement_is_ignored() -> None:
    ticks = [
        Tick(0.0, seconds=600.0, jobs=1),
        Tick(15.0, seconds=600.0, jobs=1, throughput=0.0),
        Tick(30.0, seconds=600.0, jobs=1, throughput=float("nan")),
    ]
    decisions = drive(FAST, 1, ticks)
    assert [d.throughput.value for d in decisions] == [10.0, 10.0, 10.0]


def test_verdicts_report_each_signal() -> None:
    policy = dataclasses.replace(FAST, gpu=GpuGuard(80.0))
    [fresh] = drive(policy, 2, [Tick(0.0, seconds=1800.0, jobs=3, gpu=50.0)])
    assert fresh.backlog.state is SignalState.FRESH and fresh.backlog.value == 1800.0
    assert fresh.backlog.recommendation == 3
    assert fresh.gpu.state is SignalState.FRESH and fresh.gpu.value == 50.0
    assert fresh.recommendation == 3 and fresh.desired == 3 and not fresh.limited

    [stale] = drive(policy, 2, [Tick(0.0, seconds=1800.0, jobs=3, age=600.0)])
    assert stale.backlog.state is SignalState.STALE and stale.backlog.value is None
    assert stale.gpu.state is SignalState.MISSING

    [off] = drive(FAST, 2, [Tick(0.0, seconds=1800.0, jobs=3)])
    assert off.gpu.state is SignalState.DISABLED and off.gpu.recommendation is None


def test_a_fixed_backlog_target_per_replica_ignores_throughput() -> None:
    policy = dataclasses.replace(FAST, backlog=BacklogTarget(seconds_per_replica=1000.0))
    [decision] = drive(policy, 1, [Tick(0.0, seconds=4500.0, jobs=9, throughput=1000.0)])
    assert decision.desired == 5


def test_jobs_per_replica_caps_at_the_jobs_a_replica_can_hold() -> None:
    policy = dataclasses.replace(FAST, backlog=BacklogTarget(drain_deadline_s=60.0, jobs_per_replica=4))
    [decision] = drive(policy, 1, [Tick(0.0, seconds=9 * 7200.0, jobs=9)])
    assert decision.desired == 3 and decision.limited_by is Limit.JOB_COUNT


def test_the_workers_job_slots_gauge_replaces_jobs_per_replica() -> None:
    policy = dataclasses.replace(FAST, slots=SlotsGuard(90.0))
    [decision] = drive(policy, 1, [Tick(0.0, seconds=10 * 7200.0, jobs=10, job_slots=5.0)])
    assert decision.jobs_per_replica == 5
    assert decision.desired == 2 and decision.limited_by is Limit.JOB_COUNT
    [stale] = drive(policy, 1, [Tick(0.0, seconds=10 * 7200.0, jobs=10)])
    assert stale.jobs_per_replica == 1 and stale.desired == 10


def test_per_job_overhead_sizes_many_short_clips_like_the_work_they_are() -> None:
    def replicas(overhead_s: float, jobs: int, seconds_each: float) -> int:
        target = BacklogTarget(drain_deadline_s=60.0, job_overhead_s=overhead_s)
        policy = dataclasses.replace(FAST, backlog=target)
        ticks = [Tick(0.0, seconds=jobs * seconds_each, jobs=jobs, durations=(seconds_each,) * jobs)]
        [decision] = drive(policy, 1, ticks)
        return decision.desired

    # 1200 clips of 5 s and one 6000 s file are the same audio; at 3 s a job the clips cost 7x more.
    assert replicas(0.0, 1200, 5.0) == 10
    assert replicas(3.0, 1200, 5.0) == 20  # capped by maxReplicas: 1200 * (5 + 30) / 600 = 70
    assert replicas(3.0, 1, 6000.0) == 1


def test_the_policy_rejects_impossible_bounds_and_targets() -> None:
    with pytest.raises(ValueError, match="min_replicas"):
        dataclasses.replace(BASE, min_replicas=5, max_replicas=4)
    with pytest.raises(ValueError, match="exactly one"):
        BacklogTarget()
    with pytest.raises(ValueError, match="exactly one"):
        BacklogTarget(seconds_per_replica=1.0, drain_deadline_s=1.0)
