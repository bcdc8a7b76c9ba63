"""The shipped CRD and example: valid for Kubernetes, structural, and in step with the operator's code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from escriba_operator import spec as spec_module
from escriba_operator.policy import FallbackMode, PolicyType

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
CRD_PATH = OPERATOR / "crds" / "transcriptionautoscalers.yaml"
EXAMPLE_PATH = OPERATOR / "examples" / "transcriptionautoscaler.yaml"
K8S_VERSION = "1.30.0"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    [version] = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLE_PATH.read_text()))


def test_the_crd_is_a_valid_kubernetes_object(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
    assert crd["metadata"]["name"] == f"{spec_module.PLURAL}.{spec_module.GROUP}"
    assert crd["spec"]["scope"] == "Namespaced"
    [version] = crd["spec"]["versions"]
    assert version["name"] == spec_module.VERSION
    assert version["subresources"] == {"status": {}}


def test_the_kopf_peering_crds_are_valid_kubernetes_objects() -> None:
    documents = list(yaml.safe_load_all((OPERATOR / "crds" / "kopf-peering.yaml").read_text()))
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    assert {d["metadata"]["name"] for d in crds} == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    for document in crds:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Violations of the structural-schema rules: every node typed, value-only oneOf branches."""
    problems = []
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    for branch in node.get("oneOf", []):
        if set(branch) - {"required"}:
            problems.append(f"{path}: oneOf branch with {sorted(branch)}")
    for name, child in (node.get("properties") or {}).items():
        problems += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _walk(node["items"], f"{path}[]")
    return problems


def test_the_schema_is_structural(schema: dict[str, Any]) -> None:
    assert _walk(schema, "") == []


def _defaults(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, child in (node.get("properties") or {}).items():
        if child.get("type") == "object" and child.get("properties"):
            nested = _defaults(child)
            if nested:
                out[name] = nested
        elif "default" in child:
            out[name] = child["default"]
    return out


def _objects_defaulted_empty(node: dict[str, Any]) -> set[str]:
    found = set()
    for name, child in (node.get("properties") or {}).items():
        if child.get("type") == "object":
            if child.get("default") == {}:
                found.add(name)
            found |= _objects_defaulted_empty(child)
    return found


def test_the_crd_defaults_are_the_operators_defaults(schema: dict[str, Any]) -> None:
    spec_schema = schema["properties"]["spec"]
    assert _defaults(spec_schema) == spec_module.DEFAULTS
    assert _objects_defaulted_empty(spec_schema) == spec_module._DEFAULTED_OBJECTS


def test_the_printer_columns_point_at_fields_the_schema_declares(
    crd: dict[str, Any], schema: dict[str, Any]
) -> None:
    [version] = crd["spec"]["versions"]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:5] == ["Target", "Replicas", "Desired", "Backlog-s", "GPU-%"] and names[-1] == "Age"
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata."):
            continue  # ObjectMeta is not in the CRD's schema
        node: dict[str, Any] | None = schema
        for part in column["jsonPath"].strip(".").split("."):
            node = ((node or {}).get("properties") or {}).get(part)
        assert node is not None, column["jsonPath"]


def _validator(schema: dict[str, Any]) -> jsonschema.Draft4Validator:
    # OpenAPI 3.0 schemas use draft-4 keywords (exclusiveMinimum is a boolean); x-kubernetes-* are ignored.
    return jsonschema.Draft4Validator(schema)


def test_the_example_is_valid_and_parses(schema: dict[str, Any], example: dict[str, Any]) -> None:
    _validator(schema).validate(example)
    parsed = spec_module.parse(example["spec"])
    assert parsed.target.name == "escriba-transcription"
    assert (parsed.policy.min_replicas, parsed.policy.max_replicas) == (0, 16)
    assert parsed.policy.backlog.drain_deadline_s == 180
    assert parsed.policy.backlog.fallback.mode is FallbackMode.HOLD
    assert parsed.policy.gpu is not None and parsed.policy.gpu.target_utilization == 80
    assert parsed.gpu is not None and parsed.throughput is not None
    assert parsed.throughput.url == parsed.gpu.url == "http://prometheus-operated.monitoring:9090"
    assert parsed.policy.behavior.scale_up.policies[0].type is PolicyType.PODS
    assert parsed.policy.scale_to_zero_cooldown_s == 600
    assert parsed.queue.secret_name == "escriba-operator-nats"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drainDeadlineSeconds": None}, "is not valid under any of the given schemas"),
        ({"targetBacklogSecondsPerReplica": 600}, "is valid under each of"),
        ({"natsUrl": "http://nats:4222"}, "does not match"),
    ],
)
def test_the_schema_rejects_a_bad_queue(
    schema: dict[str, Any], example: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    bad = yaml.safe_load(yaml.safe_dump(example))
    for key, value in change.items():
        if value is None:
            bad["spec"]["queue"].pop(key)
        else:
            bad["spec"]["queue"][key] = value
    with pytest.raises(jsonschema.ValidationError, match=message):
        _validator(schema).validate(bad)
    with pytest.raises(spec_module.InvalidSpecError):
        spec_module.parse(bad["spec"])


def test_the_rbac_manifest_is_valid_and_covers_the_api_calls() -> None:
    documents = list(yaml.safe_load_all((OPERATOR / "rbac.yaml").read_text()))
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    [role] = [d for d in documents if d["kind"] == "ClusterRole"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        ("escriba.io", "transcriptionautoscalers", "watch"),
        ("escriba.io", "transcriptionautoscalers/status", "patch"),
        ("apps", "deployments", "get"),
        ("apps", "deployments/scale", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "list"),
        ("", "secrets", "get"),
        ("", "events", "create"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
    }
    assert needed <= granted
