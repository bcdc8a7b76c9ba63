"""The chart's operator and autoscalers, as the real helm renders them: the endpoint allow-list, the
replicas and peering, the workers' job slots instead of a fixed jobs-per-replica."""

from __future__ import annotations

from typing import Any

import pytest

from escriba.common.settings import load
from escriba_operator.endpoints import AllowList
from escriba_operator.settings import OperatorSettings
from escriba_operator.spec import parse
from tests.support import helm

pytestmark = pytest.mark.timeout(120)


def _kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _operator(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [d for d in _kind(objects, "Deployment") if d["metadata"]["name"] == f"{helm.RELEASE}-operator"]
    return dep


def _env(dep: dict[str, Any]) -> dict[str, str]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("name", ["default", "gpu", "cpu"])
def test_the_operator_may_reach_exactly_the_addresses_its_autoscalers_name(name: str) -> None:
    objects = list(helm.render(name))
    settings = load(OperatorSettings, _env(_operator(objects)))
    allowed = AllowList.of(settings.allowed_endpoints)
    assert allowed.entries  # never "anything"
    for tas in _kind(objects, "TranscriptionAutoscaler"):
        for url in parse(tas["spec"]).endpoints():
            assert allowed.allows(url), (url, allowed.entries)
    assert not allowed.allows("nats://attacker.example:4222")
    assert not allowed.allows("http://169.254.169.254/latest/meta-data")


def test_an_explicit_allow_list_replaces_the_derived_one() -> None:
    objects = helm.template(None, "--set-json", 'operator.allowedEndpoints=["*.corp:4222"]')
    assert _env(_operator(objects))["ESCRIBA_OPERATOR_ALLOWED_ENDPOINTS"] == "*.corp:4222"


def test_two_operator_replicas_need_peering_and_roll_instead_of_recreate() -> None:
    with pytest.raises(helm.HelmError, match=r"needs operator\.peering\.enabled"):
        helm.template(None, "--set", "operator.replicas=2")
    objects = helm.template(None, "--set", "operator.replicas=2", "--set", "operator.peering.enabled=true")
    dep = _operator(objects)
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"] == {"type": "RollingUpdate"}
    env = _env(dep)
    assert env["ESCRIBA_OPERATOR_STANDALONE"] == "false" and "ESCRIBA_OPERATOR_PRIORITY" not in env
    assert _env(_operator(list(helm.render("default"))))["ESCRIBA_OPERATOR_PEERING_LIFETIME_S"] == "60"


def test_jobs_per_replica_comes_from_the_workers_gauge_unless_set() -> None:
    objects = helm.template(None, "--set", "autoscaling.prometheusUrl=http://prometheus:9090")
    (tas,) = _kind(objects, "TranscriptionAutoscaler")
    spec = parse(tas["spec"])
    assert "jobsPerReplica" not in tas["spec"]["queue"]
    assert spec.job_slots is not None and "escriba_job_slots" in spec.job_slots.query
    assert spec.policy.slots is not None and spec.policy.slots.target_busy_percent == 90
    assert spec.throughput is not None and "escriba_job_slots" in spec.throughput.query
    assert spec.policy.backlog.job_overhead_s == 1
    (plain,) = _kind(list(helm.render("default")), "TranscriptionAutoscaler")
    assert "slots" not in plain["spec"]  # no Prometheus, no gauge to read


def test_each_models_slots_queries_read_its_own_pods() -> None:
    for tas in _kind(list(helm.render("gpu")), "TranscriptionAutoscaler"):
        mine = tas["spec"]["scaleTargetRef"]["name"]
        slots = tas["spec"]["slots"]
        queries = (slots["capacityQuery"], slots["busyQuery"], slots["busyByPodQuery"])
        for query in (*queries, tas["spec"]["throughput"]["query"]):
            assert f'pod=~"{mine}-' in query, query
