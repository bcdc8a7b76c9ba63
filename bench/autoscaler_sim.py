"""Replay many days of transcription jobs through two autoscalers, tune each on some days, report on others.

Both autoscalers drive the same simulated fleet and control period (15 s, the HPA's default); each has
its own product's defaults, because that is what an SRE would run:

* ``escriba``: this operator's algorithm (``escriba_operator.algorithm.decide``) with the CRD's defaults:
  backlog in audio-seconds plus a per-job overhead over a drain deadline, the throughput learned from a
  lagging 5-minute rate, the GPU and busy-slots guards on signals one scrape old, scale-up 4 pods or 100 %
  a minute with the burst mode, scale-down after a 300 s window, pod-deletion-cost so idle pods go first;
* ``message_count``: KEDA's NATS JetStream scaler, ``ceil(pending / lagThreshold)`` with an integer
  ``lagThreshold`` (``pending`` = undelivered + unacknowledged messages), under the HPA's default behavior
  (scale-up 4 pods or 100 % per 15 s, scale-down 100 % per 15 s after a 300 s window).

The fleet is meant to be hard on both, not kind to either: diurnal traffic whose level changes from day
to day, voicemail bursts, archive uploads, heavy-tailed lengths up to 3 h, pods that take 45-150 s to
start (scheduling, model load), a per-job overhead, noisy per-job speed and a per-day speed drift,
workers that run several jobs at once, and Kubernetes choosing which pod to kill on scale-down (not
ready first, then the newest, busy or not: a killed worker hands its jobs back and their work is lost).

Each policy's one knob (drain deadline; lag threshold) is tuned on the training days: the cheapest
setting whose pooled p95 queue wait (arrival to the start of the attempt that finished) meets the SLO.
Held-out days then report medians and spreads of p95 and max wait, replica-seconds and scale events.
Separately, each day's cost *at exactly the SLO* is read off each policy's curve by interpolating
replica-seconds between the two grid points whose p95 waits straddle it, so neither side gains from
where its grid points happen to fall.

    python -m bench.autoscaler_sim [--out bench/results/autoscaler.json] [--days 24] [--train 8]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import multiprocessing
import random
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from escriba_operator import algorithm
from escriba_operator.behavior import BehaviorState, Bounds, normalize, record_scale
from escriba_operator.policy import (
    BacklogTarget,
    Behavior,
    GpuGuard,
    Policy,
    PolicyType,
    RatePolicy,
    ScalingRules,
    SlotsGuard,
    ThroughputModel,
)

DAY_S = 86_400.0
SLO_P95_WAIT_S = 60.0
_TAIL_LIMIT_S = 6 * 3600.0  # stop a run whose fleet cannot finish the day's work
#: Below this many queued jobs the controller sees each job's duration (the operator's index does).
_DURATIONS_LIMIT = 5000

#: The HPA's default behavior (autoscaling/v2), which KEDA's ScaledObject uses unless told otherwise.
HPA_BEHAVIOR = Behavior(
    tolerance=0.1,
    scale_up=ScalingRules(
        0.0, policies=(RatePolicy(PolicyType.PODS, 4, 15.0), RatePolicy(PolicyType.PERCENT, 100, 15.0))
    ),
    scale_down=ScalingRules(300.0, policies=(RatePolicy(PolicyType.PERCENT, 100, 15.0),)),
)
#: The TranscriptionAutoscaler CRD's defaults.
ESCRIBA_BEHAVIOR = Behavior(burst_ratio=2.0)


@dataclass(frozen=True)
class Fleet:
    """The simulated transcription workers and the control loop around them."""

    slots: int = 4  # jobs one replica runs at once
    slot_speed: float = 10.0  # audio-seconds per second of one busy slot
    job_speed_sigma: float = 0.3  # log-normal spread of one job's speed
    day_speed_sigma: float = 0.1  # log-normal spread of a whole day's speed (model, GPU, mix)
    overhead_s: float = 3.0  # per job: fetch, decode, VAD, writing the result
    startup_s: tuple[float, float] = (45.0, 150.0)  # pod created -> ready
    interval_s: float = 15.0  # controller period
    metrics_window_s: float = 300.0  # the rate() window of the throughput query
    min_replicas: int = 0
    max_replicas: int = 60
    cooldown_s: float = 300.0  # idle time before the last replica goes (KEDA's cooldownPeriod)


@dataclass(frozen=True)
class Job:
    arrival: float
    audio_s: float


# The workload ------------------------------------------------------------------------------------------

#: (share, median seconds, sigma of log, min, max): clips, calls, meetings, lectures/podcasts.
_LENGTH_MIX = (
    (0.55, 12.0, 0.8, 2.0, 120.0),
    (0.30, 240.0, 0.7, 30.0, 1_800.0),
    (0.12, 2_700.0, 0.5, 900.0, 7_200.0),
    (0.03, 6_000.0, 0.4, 3_600.0, 10_800.0),
)

#: Arrivals per second by hour of day (a weekday in one time zone), before the day's own level.
_HOURLY_RATE = (
    0.03, 0.02, 0.02, 0.02, 0.02, 0.03, 0.06, 0.12, 0.25, 0.32, 0.35, 0.33,
    0.22, 0.28, 0.34, 0.35, 0.30, 0.20, 0.12, 0.08, 0.06, 0.05, 0.04, 0.03,
)  # fmt: skip


def _length(rng: random.Random, mix: Sequence[tuple[float, float, float, float, float]]) -> float:
    pick = rng.random()
    for share, median, sigma, low, high in mix:
        if pick < share:
            return min(max(rng.lognormvariate(math.log(median), sigma), low), high)
        pick -= share
    share, median, sigma, low, high = mix[-1]
    return min(max(rng.lognormvariate(math.log(median), sigma), low), high)


def workload(seed: int) -> list[Job]:
    """One day of arrivals: its own traffic level and hourly wobble, clip bursts and archive uploads."""
    rng = random.Random(seed)
    level = rng.uniform(0.6, 1.4)
    hourly = [r * level * rng.uniform(0.8, 1.25) for r in _HOURLY_RATE]
    jobs: list[Job] = []
    peak = max(hourly)
    t = 0.0
    while True:  # thinning of a Poisson process with the hourly rate
        t += rng.expovariate(peak)
        if t >= DAY_S:
            break
        if rng.random() < hourly[int(t // 3600)] / peak:
            jobs.append(Job(t, _length(rng, _LENGTH_MIX)))
    for _ in range(rng.randint(4, 12)):  # a contact centre drops a batch of voicemails
        start = rng.uniform(7 * 3600, 19 * 3600)
        for _ in range(rng.randint(100, 600)):
            jobs.append(Job(start + rng.uniform(0, 60), _length(rng, _LENGTH_MIX[:1])))
    for _ in range(rng.randint(1, 5)):  # someone uploads an archive of meetings and lectures
        start = rng.uniform(8 * 3600, 18 * 3600)
        for _ in range(rng.randint(10, 30)):
            jobs.append(Job(start + rng.uniform(0, 120), _length(rng, _LENGTH_MIX[2:])))
    jobs.sort(key=lambda job: job.arrival)
    return jobs


# The fleet ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """What a controller sees at a tick (what the operator reads from NATS, Prometheus and the API)."""

    now: float
    current: int
    ready: int
    waiting_jobs: int
    running_jobs: int
    backlog_s: float
    gpu_percent: float | None = None  # DCGM, one scrape old
    busy_slots_percent: float | None = None  # the workers' gauges, one scrape old
    job_slots: int | None = None
    throughput: float | None = None  # audio-s/s of one fully occupied replica, over the rate window
    durations: tuple[float, ...] = ()  # audio-seconds of each job waiting or running


Controller = Callable[[View], int]


@dataclass(eq=False)
class _Pod:
    created: float
    ready: bool = False
    running: dict[int, tuple[Job, float]] = field(default_factory=dict)  # token -> (job, started at)


@dataclass(frozen=True)
class Outcome:
    p95_wait_s: float
    max_wait_s: float
    replica_seconds: float
    scale_events: int
    jobs: int
    restarted_jobs: int
    waits: tuple[tuple[int, int], ...] = ()  # (whole seconds, count): pooled percentiles across days

    def as_dict(self) -> dict[str, float | int]:
        return {
            "p95_wait_s": round(self.p95_wait_s, 1),
            "max_wait_s": round(self.max_wait_s, 1),
            "replica_seconds": round(self.replica_seconds),
            "scale_events": self.scale_events,
            "restarted_jobs": self.restarted_jobs,
        }


def percentile(histogram: Iterable[tuple[int, int]], q: float) -> float:
    """The ``q`` quantile of waits counted per whole second."""
    items = sorted(histogram)
    total = sum(c for _, c in items)
    if total == 0:
        return 0.0
    rank, seen = math.ceil(q * total), 0
    for second, count in items:
        seen += count
        if seen >= rank:
            return float(second)
    return float(items[-1][0])


def simulate(
    jobs: Sequence[Job],
    fleet: Fleet,
    controller: Controller,
    *,
    seed: int = 0,
    durations: bool = True,
    protect_busy: bool = False,
) -> Outcome:
    """Event-driven replay: arrivals, pod readiness, job completions and controller ticks.

    ``durations``: show the controller each job's audio-seconds (the message-count rule needs none);
    ``protect_busy``: pods carry a deletion cost from their running jobs (the operator sets it)."""
    rng = random.Random(seed * 7919 + 1)
    day_speed = fleet.slot_speed * rng.lognormvariate(0.0, fleet.day_speed_sigma)
    events: list[tuple[float, int, str, Any]] = []
    counter = 0

    def push(at: float, kind: str, payload: Any = None) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (at, counter, kind, payload))

    for job in jobs:
        push(job.arrival, "arrival", job)
    push(0.0, "tick")
    pods = [_Pod(created=-3600.0, ready=True) for _ in range(max(1, fleet.min_replicas))]
    queue: deque[Job] = deque()
    waits: Counter[int] = Counter()
    max_wait = 0.0
    last_event = 0.0
    replica_seconds, busy_slot_seconds, audio_done = 0.0, 0.0, 0.0
    scale_events, finished, restarted = 0, 0, 0
    queued_s = running_s = 0.0
    busy = 0  # jobs running on all pods
    history: deque[tuple[float, float, float]] = deque()  # (t, audio done, busy slot-seconds)
    lagged: tuple[float | None, float | None] = (None, None)  # last scrape's GPU and busy-slots percent
    tokens = iter(range(1, 1 << 62))

    def service_s(job: Job) -> float:
        speed = day_speed * rng.lognormvariate(0.0, fleet.job_speed_sigma)
        return fleet.overhead_s * rng.uniform(0.5, 1.5) + job.audio_s / speed

    def dispatch(now: float) -> None:
        nonlocal queued_s, running_s, busy
        for pod in pods:
            while queue and pod.ready and len(pod.running) < fleet.slots:
                job = queue.popleft()
                queued_s -= job.audio_s
                running_s += job.audio_s
                busy += 1
                token = next(tokens)
                pod.running[token] = (job, now)
                push(now + service_s(job), "done", (pod, token))
            if not queue:
                return

    def scrape(ready: list[_Pod]) -> tuple[float | None, float | None]:
        if not ready:
            return None, None
        fractions = [len(p.running) / fleet.slots for p in ready]
        gpu = statistics.fmean(min(100.0, max(0.0, 100 * f**0.6 + rng.gauss(0, 4))) for f in fractions)
        return gpu, 100 * statistics.fmean(fractions)

    while events:
        now, _, kind, payload = heapq.heappop(events)
        dt = now - last_event
        replica_seconds += len(pods) * dt
        busy_slot_seconds += busy * dt
        last_event = now
        if kind == "arrival":
            queue.append(payload)
            queued_s += payload.audio_s
            dispatch(now)
        elif kind == "ready":
            if payload in pods:
                payload.ready = True
                dispatch(now)
        elif kind == "done":
            pod, token = payload
            if pod not in pods or token not in pod.running:
                continue  # the pod was killed: its job went back to the queue
            job, started = pod.running.pop(token)
            running_s -= job.audio_s
            busy -= 1
            audio_done += job.audio_s
            finished += 1
            wait = started - job.arrival
            waits[int(wait)] += 1
            max_wait = max(max_wait, wait)
            dispatch(now)
        elif kind == "tick":
            if (finished == len(jobs) and now >= DAY_S) or now > DAY_S + _TAIL_LIMIT_S:
                break
            history.append((now, audio_done, busy_slot_seconds))
            while history and history[0][0] < now - fleet.metrics_window_s:
                history.popleft()
            then = history[0]
            occupied_replica_s = (busy_slot_seconds - then[2]) / fleet.slots
            ready = [p for p in pods if p.ready]
            waiting = len(queue)
            running = busy
            known: tuple[float, ...] = ()
            if durations and waiting + running <= _DURATIONS_LIMIT:
                known = tuple(j.audio_s for j in queue) + tuple(
                    j.audio_s for p in pods for j, _ in p.running.values()
                )
            view = View(
                now=now,
                current=len(pods),
                ready=len(ready),
                waiting_jobs=waiting,
                running_jobs=running,
                backlog_s=max(queued_s + running_s, 0.0),
                gpu_percent=lagged[0],
                busy_slots_percent=lagged[1],
                job_slots=fleet.slots,
                throughput=(audio_done - then[1]) / occupied_replica_s if occupied_replica_s > 1.0 else None,
                durations=known,
            )
            lagged = scrape(ready)
            desired = controller(view)
            if desired != len(pods):
                scale_events += 1
                restarted += _scale(pods, desired, now, fleet, push, queue, rng, protect_busy=protect_busy)
                queued_s = sum(j.audio_s for j in queue)
                running_s = sum(j.audio_s for p in pods for j, _ in p.running.values())
                busy = sum(len(p.running) for p in pods)
            dispatch(now)
            push(now + fleet.interval_s, "tick")
    histogram = tuple(sorted(waits.items()))
    return Outcome(
        p95_wait_s=percentile(histogram, 0.95),
        max_wait_s=max_wait,
        replica_seconds=replica_seconds,
        scale_events=scale_events,
        jobs=finished,
        restarted_jobs=restarted,
        waits=histogram,
    )


def _scale(
    pods: list[_Pod],
    desired: int,
    now: float,
    fleet: Fleet,
    push: Callable[[float, str, Any], None],
    queue: deque[Job],
    rng: random.Random,
    *,
    protect_busy: bool = False,
) -> int:
    """Add starting pods, or remove pods as a ReplicaSet does: not ready first, then (``protect_busy``:
    the lowest pod-deletion-cost, i.e. the fewest running jobs) the newest, busy or idle. A removed worker
    hands its jobs back (they go to the front of the queue, their work lost). Returns the number of jobs
    handed back."""
    if desired > len(pods):
        for _ in range(desired - len(pods)):
            pod = _Pod(created=now)
            pods.append(pod)
            push(now + rng.uniform(*fleet.startup_s), "ready", pod)
        return 0

    def rank(p: _Pod) -> tuple[bool, int, float]:
        return p.ready, len(p.running) if protect_busy else 0, -p.created

    victims = sorted(pods, key=rank)[: len(pods) - desired]
    handed_back = 0
    for pod in victims:
        for job, _ in sorted(pod.running.values(), key=lambda r: r[0].arrival, reverse=True):
            queue.appendleft(job)
            handed_back += 1
        pod.running.clear()
        pods.remove(pod)
    return handed_back


# The two controllers -----------------------------------------------------------------------------------


def escriba_policy(drain_deadline_s: float, fleet: Fleet) -> Policy:
    return Policy(
        min_replicas=fleet.min_replicas,
        max_replicas=fleet.max_replicas,
        backlog=BacklogTarget(drain_deadline_s=drain_deadline_s, job_overhead_s=fleet.overhead_s),
        throughput=ThroughputModel(initial=30.0),
        gpu=GpuGuard(target_utilization=80.0),
        slots=SlotsGuard(target_busy_percent=90.0),
        behavior=ESCRIBA_BEHAVIOR,
        scale_to_zero_cooldown_s=fleet.cooldown_s,
    )


def escriba_controller(policy: Policy) -> Controller:
    state = algorithm.State()

    def control(view: View) -> int:
        nonlocal state

        def sample(value: float | None) -> algorithm.Sample | None:
            return algorithm.Sample(value, view.now) if value is not None else None

        obs = algorithm.Observation(
            now=view.now,
            current_replicas=view.current,
            ready_replicas=view.ready,
            backlog=algorithm.Backlog(
                view.waiting_jobs, view.running_jobs, view.backlog_s, view.now, durations=view.durations
            ),
            gpu_utilization=sample(view.gpu_percent),
            throughput=sample(view.throughput),
            busy_slots=sample(view.busy_slots_percent),
            job_slots=sample(float(view.job_slots) if view.job_slots else None),
        )
        decision = algorithm.decide(policy, obs, state)
        state = algorithm.applied(decision, policy, now=view.now)
        return decision.desired

    return control


def message_count_controller(
    lag_threshold: int, fleet: Fleet, behavior: Behavior = HPA_BEHAVIOR
) -> Controller:
    state = BehaviorState()
    bounds = Bounds(fleet.min_replicas, fleet.max_replicas, fleet.cooldown_s)

    def control(view: View) -> int:
        nonlocal state
        pending = view.waiting_jobs + view.running_jobs
        wanted = pending / lag_threshold
        if view.current > 0 and abs(wanted / view.current - 1) <= behavior.tolerance:
            rec = view.current
        else:
            rec = math.ceil(wanted)
        result = normalize(
            recommendation=rec,
            current=view.current,
            active=pending > 0,
            now=view.now,
            behavior=behavior,
            bounds=bounds,
            state=state,
        )
        state = record_scale(
            result.state, now=view.now, current=view.current, desired=result.desired, behavior=behavior
        )
        return result.desired

    return control


# Tuning on some days, reporting on the others ----------------------------------------------------------

DRAIN_DEADLINES_S = (30, 60, 120, 180, 240, 360, 600, 900, 1200)
LAG_THRESHOLDS = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24)
POLICIES = {
    "escriba": ("drainDeadlineSeconds", DRAIN_DEADLINES_S),
    "message_count": ("lagThreshold", LAG_THRESHOLDS),
}


def run_one(task: tuple[str, float, int]) -> tuple[str, float, int, Outcome]:
    """One policy at one knob on one day (a process-pool task)."""
    name, knob, seed = task
    fleet = Fleet()
    jobs = workload(seed)
    if name == "escriba":
        controller = escriba_controller(escriba_policy(knob, fleet))
    else:
        controller = message_count_controller(int(knob), fleet)
    ours = name == "escriba"
    return name, knob, seed, simulate(jobs, fleet, controller, seed=seed, durations=ours, protect_busy=ours)


def cost_at_slo(points: Sequence[tuple[float, float]]) -> float | None:
    """Replica-seconds at exactly the SLO's p95 wait, between the grid points that straddle it.

    ``points`` are (p95 wait, replica-seconds) of one day across a knob's grid. The cheapest crossing
    counts (a curve may wiggle); None when the grid never reaches or never leaves the SLO.
    """
    ordered = sorted(points, key=lambda p: p[1])
    best: float | None = None
    for (w1, c1), (w2, c2) in itertools.pairwise(ordered):
        if (w1 - SLO_P95_WAIT_S) * (w2 - SLO_P95_WAIT_S) <= 0 and w1 != w2:
            cost = c1 + (SLO_P95_WAIT_S - w1) * (c2 - c1) / (w2 - w1)
            best = cost if best is None else min(best, cost)
    return best


def _spread(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    return {
        "median": round(statistics.median(ordered), digits),
        "p10": round(ordered[max(0, math.ceil(0.1 * n) - 1)], digits),
        "p90": round(ordered[max(0, math.ceil(0.9 * n) - 1)], digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
    }


def evaluate(
    results: dict[str, dict[float, dict[int, Outcome]]], train: Sequence[int], test: Sequence[int]
) -> dict[str, Any]:
    """Tune each policy on ``train`` days, report it on ``test`` days, and both at exactly the SLO."""
    report: dict[str, Any] = {}
    for name, (knob_name, _grid) in POLICIES.items():
        by_knob = results[name]
        tuning = []
        for knob, days in sorted(by_knob.items()):
            pooled: Counter[int] = Counter()
            for seed in train:
                pooled.update(dict(days[seed].waits))
            cost = statistics.median(days[s].replica_seconds for s in train)
            tuning.append((knob, percentile(pooled.items(), 0.95), cost))
        meeting = [t for t in tuning if t[1] <= SLO_P95_WAIT_S]
        knob, train_p95, _ = min(meeting, key=lambda t: t[2]) if meeting else min(tuning, key=lambda t: t[1])
        chosen = by_knob[knob]
        held = [chosen[s] for s in test]
        pooled_test: Counter[int] = Counter()
        for outcome in held:
            pooled_test.update(dict(outcome.waits))
        at_slo = [
            cost_at_slo([(by_knob[k][s].p95_wait_s, by_knob[k][s].replica_seconds) for k in by_knob])
            for s in test
        ]
        report[name] = {
            knob_name: knob,
            "train_pooled_p95_wait_s": round(train_p95, 1),
            "tuned_meets_slo_on_training_days": bool(meeting),
            "held_out_days": len(test),
            "held_out_days_meeting_slo": sum(1 for o in held if o.p95_wait_s <= SLO_P95_WAIT_S),
            "held_out_pooled_p95_wait_s": round(percentile(pooled_test.items(), 0.95), 1),
            "p95_wait_s": _spread([o.p95_wait_s for o in held]),
            "max_wait_s": _spread([o.max_wait_s for o in held]),
            "replica_seconds": _spread([o.replica_seconds for o in held]),
            "scale_events": _spread([float(o.scale_events) for o in held]),
            "restarted_jobs": _spread([float(o.restarted_jobs) for o in held]),
            "replica_seconds_at_slo": {
                "days_with_a_crossing": sum(1 for c in at_slo if c is not None),
                **(
                    _spread([c for c in at_slo if c is not None])
                    if any(c is not None for c in at_slo)
                    else {}
                ),
            },
            "_at_slo": at_slo,
            "tuning": [
                {
                    knob_name: k,
                    "train_pooled_p95_wait_s": round(p, 1),
                    "train_median_replica_seconds": round(c),
                }
                for k, p, c in tuning
            ],
        }
    esc, mc = report["escriba"], report["message_count"]
    paired = [
        e / m
        for e, m in zip(esc.pop("_at_slo"), mc.pop("_at_slo"), strict=True)
        if e is not None and m is not None
    ]
    held_ratio = [
        results["escriba"][esc["drainDeadlineSeconds"]][s].replica_seconds
        / results["message_count"][mc["lagThreshold"]][s].replica_seconds
        for s in test
    ]
    report["comparison"] = {
        "held_out_replica_seconds_ratio_escriba_over_message_count": _spread(held_ratio, 3),
        "at_slo_replica_seconds_ratio_escriba_over_message_count": _spread(paired, 3) if paired else None,
        "at_slo_paired_days": len(paired),
        "held_out_scale_events_ratio": round(
            esc["scale_events"]["median"] / max(mc["scale_events"]["median"], 1.0), 3
        ),
    }
    return report


def run(
    days: int,
    train_days: int,
    log: Callable[[str], None],
    *,
    processes: int = 2,
    grids: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """``grids`` replaces a policy's knob grid (a test's coarser one: a day costs about a second)."""
    seeds = list(range(1, days + 1))
    train, test = seeds[:train_days], seeds[train_days:]
    chosen = {name: (grids or {}).get(name, grid) for name, (_, grid) in POLICIES.items()}
    tasks = [(name, float(k), s) for name, grid in chosen.items() for k in grid for s in seeds]
    results: dict[str, dict[float, dict[int, Outcome]]] = {name: {} for name in POLICIES}
    started = time.perf_counter()
    if processes > 1:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            outcomes = list(pool.imap_unordered(run_one, tasks, chunksize=4))
    else:
        outcomes = [run_one(t) for t in tasks]
    for name, knob, seed, outcome in outcomes:
        results[name].setdefault(knob, {})[seed] = outcome
    log(f"{len(tasks)} simulated days in {time.perf_counter() - started:.0f} s")
    report = evaluate(results, train, test)
    fleet = Fleet()
    sizes = [len(workload(s)) for s in seeds]
    audio = [sum(j.audio_s for j in workload(s)) / 3600 for s in seeds]
    report["workload"] = {
        "days": days,
        "training_days": train,
        "held_out_days": test,
        "jobs_per_day": _spread([float(n) for n in sizes]),
        "audio_hours_per_day": _spread(audio),
        "slo_p95_wait_s": SLO_P95_WAIT_S,
        "fleet": {
            "slots_per_replica": fleet.slots,
            "audio_s_per_s_per_full_replica": fleet.slots * fleet.slot_speed,
            "job_overhead_s": fleet.overhead_s,
            "startup_s": list(fleet.startup_s),
            "interval_s": fleet.interval_s,
            "max_replicas": fleet.max_replicas,
        },
    }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/autoscaler.json"))
    parser.add_argument("--days", type=int, default=24, help="days (seeds 1..N) to simulate")
    parser.add_argument("--train", type=int, default=8, help="the first N days tune the knobs")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    if not 0 < args.train < args.days:
        parser.error("need 0 < --train < --days")
    report = run(args.days, args.train, lambda line: print(line, flush=True), processes=args.processes)
    print()
    print(
        f"SLO: p95 queue wait <= {SLO_P95_WAIT_S:g} s;"
        f" tuned on {args.train} days, held out {args.days - args.train}"
    )
    print(
        f"{'':<14} {'knob':<24} {'days met':>8} {'p95 wait s':>18} {'max wait s':>18}"
        f" {'replica-s':>22} {'scale events':>16}"
    )
    for name in POLICIES:
        row = report[name]
        knob_name = POLICIES[name][0]

        def show(key: str, row: dict[str, Any] = row) -> str:
            s = row[key]
            return f"{s['median']:.0f} [{s['p10']:.0f}-{s['p90']:.0f}]"

        print(
            f"{name:<14} {knob_name + '=' + format(row[knob_name], 'g'):<24} "
            f"{row['held_out_days_meeting_slo']:>3}/{row['held_out_days']:<4} {show('p95_wait_s'):>18} "
            f"{show('max_wait_s'):>18} {show('replica_seconds'):>22} {show('scale_events'):>16}"
        )
    comparison = report["comparison"]
    held = comparison["held_out_replica_seconds_ratio_escriba_over_message_count"]
    print(
        "held-out replica-seconds, escriba / message_count:"
        f" median {held['median']} [{held['p10']}-{held['p90']}]"
    )
    at_slo = comparison["at_slo_replica_seconds_ratio_escriba_over_message_count"]
    if at_slo:
        print(
            f"at exactly the SLO ({comparison['at_slo_paired_days']} days): median {at_slo['median']}"
            f" [{at_slo['p10']}-{at_slo['p90']}]"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
