"""The autoscaler simulation behind ``make bench-autoscaler``: its accounting, and the claim it backs."""

from __future__ import annotations

import itertools
import math

import pytest

from bench import autoscaler_sim as sim


def test_the_fleet_accounts_waits_replica_seconds_and_scale_events() -> None:
    fleet = sim.Fleet(speed=10.0, overhead_s=0.0, startup_s=30.0, interval_s=10.0)
    jobs = [sim.Job(arrival=0.0, audio_s=100.0)] * 3  # 10 s of work each
    seen: list[sim.View] = []

    def two_replicas(view: sim.View) -> int:
        seen.append(view)
        return 2

    outcome = sim.simulate(jobs, fleet, two_replicas)
    # One ready replica takes the jobs at 0, 10 and 20 s; the second is still starting until 30 s.
    assert outcome.p95_wait_s == 20.0
    assert outcome.scale_events == 1
    assert outcome.replica_seconds == pytest.approx(2 * sim.DAY_S)
    first = seen[0]
    assert (first.current, first.ready, first.waiting_jobs, first.running_jobs) == (1, 1, 2, 1)
    assert first.backlog_s == 300.0 and first.gpu_percent == fleet.gpu_busy_percent
    assert seen[1].throughput == pytest.approx(10.0)  # 100 audio-s in 10 busy seconds


def test_the_message_count_rule_counts_pending_and_unacknowledged_messages() -> None:
    fleet = sim.Fleet()
    control = sim.message_count_controller(2.5, fleet)
    view = sim.View(
        now=0.0,
        current=1,
        ready=1,
        waiting_jobs=8,
        running_jobs=2,
        backlog_s=99.0,
        gpu_percent=None,
        throughput=None,
    )
    assert control(view) == math.ceil(10 / 2.5)


def test_the_day_is_seeded_bursty_and_mixed() -> None:
    day = sim.workload(7)
    assert day == sim.workload(7) and day != sim.workload(8)
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(day))
    night = sum(1 for job in day if job.arrival < 5 * 3600)
    office = sum(1 for job in day if 9 * 3600 <= job.arrival < 14 * 3600)
    assert office > 5 * night
    clips = sum(1 for job in day if job.audio_s <= 120)
    long_files = sum(1 for job in day if job.audio_s >= 3600)
    assert clips > len(day) / 2 and long_files > 50


@pytest.mark.timeout(300)
def test_escriba_meets_the_slo_with_fewer_replica_seconds_than_the_tuned_message_count_rule() -> None:
    result = sim.run(7, lambda line: None)
    escriba, counting = result["escriba"], result["message_count"]
    assert escriba["meets_slo"] and counting["meets_slo"]
    assert escriba["p95_wait_s"] <= sim.SLO_P95_WAIT_S and counting["p95_wait_s"] <= sim.SLO_P95_WAIT_S
    assert escriba["replica_seconds"] < counting["replica_seconds"]
    cheaper = [t for t in counting["tried"] if t["replica_seconds"] < counting["replica_seconds"]]
    assert all(t["p95_wait_s"] > sim.SLO_P95_WAIT_S for t in cheaper)
