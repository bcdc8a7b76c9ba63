"""The autoscaler simulation behind ``make bench-autoscaler``: its accounting, the fleet's Kubernetes
behaviour, the two rules, and the held-out evaluation (no single seed's figures are pinned here: those
are the benchmark's output, in operator/README.md)."""

from __future__ import annotations

import itertools
import math
import random
from collections import deque

import pytest

from bench import autoscaler_sim as sim


def exact_fleet(**changes: object) -> sim.Fleet:
    """A fleet without noise: one slot, 10 audio-s/s, no overhead, pods ready after 30 s."""
    base = {
        "slots": 1,
        "slot_speed": 10.0,
        "job_speed_sigma": 0.0,
        "day_speed_sigma": 0.0,
        "overhead_s": 0.0,
        "startup_s": (30.0, 30.0),
        "interval_s": 10.0,
    }
    return sim.Fleet(**{**base, **changes})  # type: ignore[arg-type]


def test_the_fleet_accounts_waits_replica_seconds_and_scale_events() -> None:
    fleet = exact_fleet()
    jobs = [sim.Job(arrival=0.0, audio_s=100.0)] * 3  # 10 s of work each
    seen: list[sim.View] = []

    def two_replicas(view: sim.View) -> int:
        seen.append(view)
        return 2

    outcome = sim.simulate(jobs, fleet, two_replicas)
    # One ready replica takes the jobs at 0, 10 and 20 s; the second is still starting until 30 s.
    assert outcome.p95_wait_s == 20.0 and outcome.max_wait_s == 20.0
    assert outcome.scale_events == 1 and outcome.restarted_jobs == 0 and outcome.jobs == 3
    assert outcome.replica_seconds == pytest.approx(2 * sim.DAY_S)
    first = seen[0]
    assert (first.current, first.ready, first.waiting_jobs, first.running_jobs) == (1, 1, 2, 1)
    assert first.backlog_s == 300.0 and first.durations == (100.0, 100.0, 100.0)
    assert first.gpu_percent is None and first.busy_slots_percent is None  # one scrape behind
    assert seen[1].busy_slots_percent == 100.0 and seen[1].job_slots == 1
    assert seen[2].throughput == pytest.approx(10.0)  # 100 audio-s in 10 s of one full replica


def test_kubernetes_removes_pods_not_ready_first_then_the_newest_busy_or_not() -> None:
    fleet = exact_fleet()
    old_job, new_job = sim.Job(0.0, 60.0), sim.Job(5.0, 7200.0)
    old = sim._Pod(created=0.0, ready=True, running={1: (old_job, 0.0)})
    new = sim._Pod(created=100.0, ready=True, running={2: (new_job, 100.0)})
    starting = sim._Pod(created=50.0)
    pods = [old, new, starting]
    queue: deque[sim.Job] = deque([sim.Job(9.0, 1.0)])
    handed_back = sim._scale(pods, 1, 200.0, fleet, lambda *_: None, queue, random.Random(1))
    assert pods == [old]
    assert handed_back == 1 and queue[0] is new_job  # its 3-hour job starts over, first in line

    # With deletion costs from the running jobs (what the operator sets), the idle pod goes instead.
    busy = sim._Pod(created=100.0, ready=True, running={3: (new_job, 100.0)})
    idle = sim._Pod(created=0.0, ready=True)
    pods = [idle, busy]
    assert (
        sim._scale(pods, 1, 200.0, fleet, lambda *_: None, deque(), random.Random(1), protect_busy=True) == 0
    )
    assert pods == [busy]


def test_the_message_count_rule_counts_pending_and_unacknowledged_messages() -> None:
    control = sim.message_count_controller(3, sim.Fleet())
    view = sim.View(now=0.0, current=1, ready=1, waiting_jobs=8, running_jobs=2, backlog_s=99.0)
    assert control(view) == math.ceil(10 / 3)  # within the HPA's 4 pods or 100 % per 15 s


def test_days_are_seeded_bursty_mixed_and_different() -> None:
    days = [sim.workload(seed) for seed in range(1, 7)]
    assert days[0] == sim.workload(1)
    for day in days:
        assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(day))
        night = sum(1 for job in day if job.arrival < 5 * 3600)
        office = sum(1 for job in day if 9 * 3600 <= job.arrival < 14 * 3600)
        assert office > 4 * night
        assert sum(1 for job in day if job.audio_s <= 120) > len(day) / 2
        assert max(job.audio_s for job in day) <= 3 * 3600
    sizes = [len(day) for day in days]
    assert max(sizes) > 1.3 * min(sizes)  # the level changes from day to day


def test_the_cost_at_the_slo_is_interpolated_between_the_straddling_grid_points() -> None:
    assert sim.cost_at_slo([(90.0, 100.0), (30.0, 200.0), (10.0, 400.0)]) == pytest.approx(150.0)
    assert sim.cost_at_slo([(10.0, 100.0), (20.0, 200.0)]) is None  # never reaches the SLO's wait
    assert sim.cost_at_slo([(80.0, 100.0), (70.0, 200.0)]) is None  # never meets it


@pytest.mark.timeout(240)
def test_knobs_are_tuned_on_training_days_and_reported_on_the_others() -> None:
    # Every third point of each grid: the rules are the benchmark's, a day costs about a second.
    grids = {name: grid[::3] for name, (_, grid) in sim.POLICIES.items()}
    report = sim.run(3, 1, lambda line: None, processes=2, grids=grids)
    assert report["workload"]["training_days"] == [1] and report["workload"]["held_out_days"] == [2, 3]
    for name, (knob_name, _) in sim.POLICIES.items():
        row = report[name]
        assert row[knob_name] in grids[name] and row["held_out_days"] == 2
        assert [t[knob_name] for t in row["tuning"]] == list(grids[name])
        tuning = row["tuning"]
        meeting = [t for t in tuning if t["train_pooled_p95_wait_s"] <= sim.SLO_P95_WAIT_S]
        if meeting:  # the cheapest setting that met the SLO on the training day, not the best on test days
            cheapest = min(meeting, key=lambda t: t["train_median_replica_seconds"])
            assert row[knob_name] == cheapest[knob_name]
        spread = row["replica_seconds"]
        assert spread["min"] <= spread["p10"] <= spread["median"] <= spread["p90"] <= spread["max"]
        waits = row["p95_wait_s"]  # the pooled p95 of two days lies between the days' own
        assert waits["min"] - 1 <= row["held_out_pooled_p95_wait_s"] <= waits["max"] + 1
    assert report["comparison"]["at_slo_paired_days"] <= 2
