"""Reading TranscriptionAutoscaler specs: defaults as the API server applies them, and bad specs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from escriba.common.errors import InvalidInputError
from escriba.common.settings import SettingsError, load
from escriba_operator.policy import FallbackMode, PolicyType, SelectPolicy
from escriba_operator.settings import OperatorSettings
from escriba_operator.signals import SignalError, SignalMissingError, parse_by_label, parse_result
from escriba_operator.spec import (
    DEFAULT_GPU_QUERY,
    DEFAULT_SLOTS_QUERY,
    DEFAULT_THROUGHPUT_QUERY,
    InvalidSpecError,
    parse,
    with_defaults,
)

MINIMAL: dict[str, Any] = {
    "scaleTargetRef": {"name": "escriba-transcription"},
    "maxReplicas": 8,
    "queue": {"natsUrl": "nats://nats:4222", "drainDeadlineSeconds": 120},
}


def spec(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(MINIMAL)
    for path, value in changes.items():
        node = out
        *parents, leaf = path.split("__")
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


def test_a_minimal_spec_takes_every_default() -> None:
    parsed = parse(MINIMAL)
    assert (parsed.target.api_version, parsed.target.kind) == ("apps/v1", "Deployment")
    assert parsed.dry_run is False
    assert (parsed.queue.stream, parsed.queue.consumer, parsed.queue.secret_name) == (
        "ESCRIBA_JOBS",
        "transcription",
        None,
    )
    policy = parsed.policy
    assert (policy.min_replicas, policy.max_replicas) == (1, 8)
    assert policy.backlog.drain_deadline_s == 120 and policy.backlog.seconds_per_replica is None
    assert policy.backlog.fallback.mode is FallbackMode.HOLD and policy.backlog.fallback.stale_after_s == 60
    assert policy.throughput.initial == 30 and policy.throughput.smoothing_s == 300
    assert policy.gpu is None and parsed.gpu is None and parsed.throughput is None
    assert policy.behavior.tolerance == 0.1
    assert policy.behavior.scale_up.stabilization_window_s == 0
    assert [(p.type, p.value, p.period_s) for p in policy.behavior.scale_up.policies] == [
        (PolicyType.PODS, 4, 60.0),
        (PolicyType.PERCENT, 100, 60.0),
    ]
    assert policy.behavior.scale_down.stabilization_window_s == 300
    assert policy.behavior.scale_down.select is SelectPolicy.MAX
    assert (policy.activation_backlog_s, policy.scale_to_zero_cooldown_s) == (0, 300)


def test_defaults_fill_absent_fields_inside_given_objects_only() -> None:
    filled = with_defaults(spec(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}}))
    assert filled["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60
    assert filled["behavior"]["scaleDown"]["policies"] == [
        {"type": "Percent", "value": 50, "periodSeconds": 60}
    ]
    assert filled["behavior"]["scaleUp"]["selectPolicy"] == "Max"
    assert "gpu" not in filled  # optional, and without a default object
    assert filled["queue"]["fallback"] == {"mode": "Hold", "replicas": 0, "staleAfterSeconds": 60}
    assert MINIMAL["queue"] == {"natsUrl": "nats://nats:4222", "drainDeadlineSeconds": 120}  # not mutated


def test_the_gpu_section_turns_the_guard_on_and_lends_its_endpoint_to_throughput() -> None:
    parsed = parse(spec(gpu={"prometheusUrl": "http://prometheus:9090/"}, queue__fallback={"mode": "Static"}))
    assert parsed.policy.gpu is not None and parsed.policy.gpu.target_utilization == 80
    assert parsed.gpu is not None and parsed.gpu.query == DEFAULT_GPU_QUERY
    assert parsed.gpu.url == "http://prometheus:9090"
    assert parsed.throughput is not None and parsed.throughput.url == "http://prometheus:9090"
    assert parsed.throughput.query == DEFAULT_THROUGHPUT_QUERY
    assert parsed.policy.backlog.fallback.mode is FallbackMode.STATIC


def test_the_slots_section_reads_the_workers_job_slots_and_turns_their_guard_on() -> None:
    parsed = parse(spec(slots={"prometheusUrl": "http://prometheus:9090/"}))
    assert parsed.policy.slots is not None and parsed.policy.slots.target_busy_percent == 90
    assert parsed.job_slots is not None and parsed.job_slots.query == DEFAULT_SLOTS_QUERY
    assert parsed.busy_slots is not None and parsed.busy_slots.url == "http://prometheus:9090"
    assert parsed.throughput is not None and parsed.throughput.url == "http://prometheus:9090"
    assert parsed.endpoints() == ["nats://nats:4222", *["http://prometheus:9090"] * 4]
    assert parse(MINIMAL).policy.behavior.burst_ratio == 2
    assert parse(MINIMAL).policy.backlog.job_overhead_s == 1


def test_a_labelled_vector_reads_by_label_and_skips_samples_without_it() -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"pod": "a"}, "value": [1.0, "2"]},
                {"metric": {"pod": "b"}, "value": [1.0, "NaN"]},
                {"metric": {}, "value": [1.0, "5"]},
            ],
        },
    }
    assert parse_by_label(body, "q", "pod") == {"a": 2.0}


def test_an_error_answer_is_reported_by_its_type_never_its_text() -> None:
    answer = {"status": "error", "errorType": "bad_data", "error": "root:x:0:0 from the endpoint"}
    with pytest.raises(SignalError) as raised:
        parse_result(answer, "q")
    assert "bad_data" in raised.value.message and "root:x" not in raised.value.message
    with pytest.raises(SignalError) as odd:
        parse_result({"status": "error", "errorType": "<script>"}, "q")
    assert "<script>" not in odd.value.message
    with pytest.raises(SignalError):
        parse_by_label({"status": "error", "error": "secret text"}, "q", "pod")


def test_a_fixed_target_per_replica_instead_of_a_deadline() -> None:
    parsed = parse(spec(queue__drainDeadlineSeconds=None, queue__targetBacklogSecondsPerReplica=900))
    assert parsed.policy.backlog.seconds_per_replica == 900 and parsed.policy.backlog.drain_deadline_s is None


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"queue__drainDeadlineSeconds": None}, "exactly one"),
        ({"queue__targetBacklogSecondsPerReplica": 10}, "exactly one"),
        ({"queue__drainDeadlineSeconds": 0}, "drainDeadlineSeconds must be above 0"),
        ({"minReplicas": 9}, "above spec.maxReplicas"),
        ({"maxReplicas": 0}, "maxReplicas must be at least 1"),
        ({"minReplicas": True}, "minReplicas must be an integer"),
        ({"scaleTargetRef": None}, "scaleTargetRef is required"),
        ({"scaleTargetRef__kind": "StatefulSet"}, "must be one of Deployment"),
        ({"queue__natsUrl": "http://nats:4222"}, "natsUrl must start with nats://"),
        ({"gpu": {"prometheusUrl": "prometheus:9090"}}, "gpu.prometheusUrl must be an http"),
        ({"gpu": {"prometheusUrl": "http://p", "targetUtilizationPercent": 120}}, "at most 100"),
        ({"behavior": {"tolerance": 1.5}}, "tolerance must be below 1"),
        (
            {"behavior": {"scaleUp": {"policies": [{"type": "Replicas", "value": 1, "periodSeconds": 1}]}}},
            "Pods",
        ),
        ({"behavior": {"scaleUp": {"policies": "fast"}}}, "policies must be a list"),
        ({"queue__fallback": {"mode": "Max"}}, "must be one of Hold, Static"),
        ({"dryRun": "yes"}, "dryRun must be true or false"),
        (
            {"queue__credentialsSecretRef": {"name": "x/../../../kube-system/secrets/admin"}},
            "credentialsSecretRef.name must be a Kubernetes object name",
        ),
        ({"queue__tlsSecretRef": {"name": "../other"}}, "tlsSecretRef.name must be a Kubernetes object name"),
        ({"scaleTargetRef__name": "a/../../b"}, "scaleTargetRef.name must be a Kubernetes object name"),
        ({"behavior": {"burstRatio": 0.5}}, "burstRatio must be 0"),
        ({"slots": {"prometheusUrl": "http://p", "targetBusyPercent": 101}}, "at most 100"),
    ],
)
def test_a_spec_the_schema_would_reject_is_an_invalid_input(changes: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidSpecError, match=names) as raised:
        parse(spec(**changes))
    assert isinstance(raised.value, InvalidInputError) and raised.value.reason == "InvalidSpec"


def _vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [1.0, v]} for v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_query_results_average_a_vector_and_read_a_scalar() -> None:
    assert parse_result(_vector("90", "70"), "q") == 80.0
    assert parse_result(_vector("50", "NaN"), "q") == 50.0
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "12.5"]}}
    assert parse_result(scalar, "q") == 12.5


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        (_vector(), True),
        (_vector("NaN", "+Inf"), True),
        ({"status": "error", "error": "parse error"}, False),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, False),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": []}]}}, False),
        ("not json object", False),
    ],
)
def test_query_results_without_a_value_are_missing_or_failed(body: Any, missing: bool) -> None:
    with pytest.raises(SignalError) as raised:
        parse_result(body, "q")
    assert isinstance(raised.value, SignalMissingError) is missing
    assert raised.value.reason == ("NoData" if missing else "QueryFailed")


def test_operator_settings_come_from_escriba_operator_variables() -> None:
    defaults = load(OperatorSettings, {})
    assert defaults.namespaces == () and defaults.interval_s == 15.0 and not defaults.standalone
    custom = load(
        OperatorSettings,
        {
            "ESCRIBA_OPERATOR_NAMESPACES": "escriba, gpu-*",
            "ESCRIBA_OPERATOR_INTERVAL_S": "0.5",
            "ESCRIBA_OPERATOR_STANDALONE": "true",
            "ESCRIBA_OPERATOR_PRIORITY": "10",
        },
    )
    assert custom.namespaces == ("escriba", "gpu-*") and custom.interval_s == 0.5
    assert custom.standalone and custom.priority == 10
    with pytest.raises(SettingsError, match="ESCRIBA_OPERATOR_METRICS_PORT"):
        load(OperatorSettings, {"ESCRIBA_OPERATOR_METRICS_PORT": "70000"})
    with pytest.raises(SettingsError, match="ESCRIBA_OPERATOR_INTERVAL_S"):
        load(OperatorSettings, {"ESCRIBA_OPERATOR_INTERVAL_S": "0"})
    with pytest.raises(SettingsError, match="ESCRIBA_OPERATOR_LOG_LEVEL"):
        load(OperatorSettings, {"ESCRIBA_OPERATOR_LOG_LEVEL": "loud"})
