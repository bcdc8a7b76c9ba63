"""The status an autoscaler reports: conditions, their transitions, and the signal values."""

from __future__ import annotations

from escriba_operator import status
from escriba_operator.algorithm import Backlog, Decision, Observation, Sample, State, decide
from escriba_operator.policy import BacklogTarget, GpuGuard, Policy, ThroughputModel
from escriba_operator.status import Outcome, Problem

POLICY = Policy(
    min_replicas=1,
    max_replicas=4,
    backlog=BacklogTarget(drain_deadline_s=60.0),
    throughput=ThroughputModel(initial=10.0),
    gpu=GpuGuard(80.0),
)


def decision(seconds: float = 1200.0, jobs: int = 2, gpu: float | None = 50.0, current: int = 2) -> Decision:
    obs = Observation(
        now=1_700_000_000.0,
        current_replicas=current,
        ready_replicas=current,
        backlog=Backlog(jobs, 0, seconds, observed_at=1_700_000_000.0) if seconds >= 0 else None,
        gpu_utilization=Sample(gpu, 1_700_000_000.0) if gpu is not None else None,
    )
    return decide(POLICY, obs, State())


def by_type(conditions: list[status.Condition]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in conditions}


def test_all_signals_read_and_nothing_limited() -> None:
    outcome = Outcome(decision(), ready_replicas=2, gpu_configured=True, throughput_configured=True)
    assert by_type(status.conditions(outcome)) == {
        "Ready": ("True", "SignalsAvailable"),
        "ScalingActive": ("True", "SignalsAvailable"),
        "ScalingLimited": ("False", "DesiredWithinRange"),
        "BacklogAvailable": ("True", "Read"),
        "GPUUtilizationAvailable": ("True", "Read"),
        "ThroughputAvailable": ("True", "Read"),
    }


def test_a_missing_signal_makes_ready_false_and_scaling_uses_the_fallback() -> None:
    problem = Problem("ConsumerNotFound", "consumer 'transcription' not found on stream 'ESCRIBA_JOBS'")
    outcome = Outcome(decision(seconds=-1), backlog_problem=problem, gpu_configured=False)
    conditions = by_type(status.conditions(outcome))
    assert conditions["Ready"] == ("False", "ConsumerNotFound")
    assert conditions["ScalingActive"] == ("True", "FallbackInUse")
    assert conditions["BacklogAvailable"] == ("False", "ConsumerNotFound")
    assert "GPUUtilizationAvailable" not in conditions


def test_without_a_decision_nothing_is_active_or_known() -> None:
    outcome = Outcome(None, blocked=Problem("TargetNotFound", "Deployment escriba/x not found"))
    conditions = by_type(status.conditions(outcome))
    assert conditions["Ready"] == ("False", "TargetNotFound")
    assert conditions["ScalingActive"] == ("False", "TargetNotFound")
    assert conditions["ScalingLimited"] == ("Unknown", "NoDecision")
    assert status.body(outcome, [], generation=3) == {"observedGeneration": 3, "conditions": []}


def test_a_conflict_stops_scaling_but_the_signals_stay_ready() -> None:
    conflict = Problem("ConflictingAutoscaler", "HorizontalPodAutoscaler cpu also targets Deployment x")
    conditions = by_type(status.conditions(Outcome(decision(), blocked=conflict)))
    assert conditions["Ready"] == ("True", "SignalsAvailable")
    assert conditions["ScalingActive"] == ("False", "ConflictingAutoscaler")


def test_a_bound_that_limits_the_decision_is_reported() -> None:
    limited = decision(seconds=60_000.0, jobs=50)
    assert limited.desired == 4
    [scaling_limited] = [c for c in status.conditions(Outcome(limited)) if c.type == "ScalingLimited"]
    assert (scaling_limited.status, scaling_limited.reason) == ("True", "TooManyReplicas")
    assert "asked for 50 replicas, 4 are allowed" in scaling_limited.message


def test_transition_times_move_only_when_the_status_does() -> None:
    first = status.merge_conditions([], [status.Condition("Ready", "True", "SignalsAvailable")], "T1")
    again = status.merge_conditions(first, [status.Condition("Ready", "True", "SignalsAvailable")], "T2")
    reason = status.merge_conditions(again, [status.Condition("Ready", "True", "Other")], "T3")
    flipped = status.merge_conditions(reason, [status.Condition("Ready", "False", "NoData")], "T4")
    assert [c["lastTransitionTime"] for c in (*first, *again, *reason, *flipped)] == ["T1", "T1", "T1", "T4"]


def test_changed_conditions_are_the_new_ones_and_those_whose_status_or_reason_moved() -> None:
    before = [{"type": "Ready", "status": "True", "reason": "SignalsAvailable"}]
    same = [status.Condition("Ready", "True", "SignalsAvailable")]
    assert status.changed(before, same) == []
    moved = [status.Condition("Ready", "False", "NoData"), status.Condition("ScalingActive", "True", "X")]
    assert [c.type for c in status.changed(before, moved)] == ["Ready", "ScalingActive"]


def test_the_status_body_carries_each_signal_and_the_decision() -> None:
    chosen = decision(seconds=1800.0, jobs=3, gpu=62.5)
    detail = {"waitingJobs": 3, "runningJobs": 0, "jobs": 3}
    outcome = Outcome(chosen, ready_replicas=2, backlog_detail=detail, last_scale_time="2024-05-01T10:00:00Z")
    body = status.body(outcome, [], generation=7)
    assert body["observedGeneration"] == 7
    assert (body["currentReplicas"], body["readyReplicas"], body["desiredReplicas"]) == (2, 2, 3)
    assert (body["backlogSeconds"], body["pendingJobs"], body["gpuUtilization"]) == (1800.0, 3, 62.5)
    assert body["limitedBy"] == "Backlog" and body["lastScaleTime"] == "2024-05-01T10:00:00Z"
    assert body["signals"]["backlog"] == {
        "state": "Fresh",
        "value": 1800.0,
        "recommendation": 3,
        "reason": None,
        "message": None,
        **detail,
    }
    assert body["signals"]["gpu"]["recommendation"] == 2  # busy, not saturated: holds what is there
    assert body["signals"]["throughput"]["source"] == "Initial" and body["throughput"] == 10.0


def test_timestamps_are_rfc3339_utc() -> None:
    assert status.timestamp(0.0) == "1970-01-01T00:00:00Z"
    assert status.timestamp(1_700_000_000.9) == "2023-11-14T22:13:20Z"


def test_the_learned_throughput_round_trips_through_the_status() -> None:
    learned = decide(
        POLICY,
        Observation(
            now=1_700_000_000.0,
            current_replicas=1,
            ready_replicas=1,
            backlog=Backlog(1, 0, 60.0, observed_at=1_700_000_000.0),
            throughput=Sample(27.5, 1_700_000_000.0),
        ),
        State(),
    )
    written = status.body(Outcome(learned, ready_replicas=1), [], generation=1)
    restored = status.restored_throughput(written)
    assert restored is not None and restored.value == 27.5 and restored.measured_at == 1_700_000_000.0
    assert status.restored_throughput(status.body(Outcome(decision()), [], generation=1)) is None  # Initial
    for broken in (
        {},
        {
            "signals": {
                "throughput": {"source": "Measured", "value": "fast", "measuredAt": "2026-01-01T00:00:00Z"}
            }
        },
        {
            "signals": {
                "throughput": {"source": "Measured", "value": -1, "measuredAt": "2026-01-01T00:00:00Z"}
            }
        },
        {"signals": {"throughput": {"source": "Measured", "value": 5, "measuredAt": "yesterday"}}},
    ):
        assert status.restored_throughput(broken) is None


def test_the_slots_signal_is_reported_with_the_jobs_per_replica_it_gave() -> None:
    outcome = Outcome(
        decision(), ready_replicas=2, slots_configured=True, slots_problem=Problem("NoData", "none")
    )
    written = status.body(outcome, [], generation=1)
    assert (
        written["signals"]["slots"]["state"] == "Disabled"
        and written["signals"]["slots"]["jobsPerReplica"] == 1
    )
    assert by_type(status.conditions(outcome))["JobSlotsAvailable"] == ("False", "NoData")
