"""The chart's safe defaults, rendered by the real helm: a NetworkPolicy for every pod with only the
gateway open to outside callers, credentials mounted as files and never in the environment, database
TLS verified (host name included) whenever a CA is given, the stream and bucket caps on every service,
and the purge CronJob that makes retention happen."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from escriba.bus.settings import NatsSettings
from escriba.common.settings import load
from escriba.db.settings import RetentionSettings
from tests.support import helm

pytestmark = pytest.mark.timeout(180)

Manifest = dict[str, Any]
VALUES = list(helm.values_files())
SECRET_BEARING = ("ESCRIBA_DATABASE_URL", "ESCRIBA_NATS_USER", "ESCRIBA_NATS_PASSWORD", "ESCRIBA_NATS_TOKEN")


@pytest.fixture(scope="module", autouse=True)
def helm_binary() -> None:
    helm.helm_path()


def pods(objects: tuple[Manifest, ...] | list[Manifest]) -> Iterator[tuple[Manifest, Manifest, Manifest]]:
    """(object, pod template metadata, pod spec) of everything that runs a pod."""
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Deployment", "Job"):
            template = obj["spec"]["template"]
        elif kind == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        elif kind == "Pod":
            template = obj
        else:
            continue
        yield obj, template["metadata"], template["spec"]


def policies(objects: tuple[Manifest, ...] | list[Manifest]) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}


def selecting(objects: tuple[Manifest, ...] | list[Manifest], labels: dict[str, str]) -> list[Manifest]:
    return [
        p
        for p in policies(objects).values()
        if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
    ]


def named(objects: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


# NetworkPolicy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES)
def test_every_pod_of_the_release_is_selected_by_a_network_policy(name: str) -> None:
    objects = helm.render(name)
    for obj, meta, _ in pods(objects):
        chosen = selecting(objects, meta["labels"])
        assert len(chosen) == 1, f"{helm.describe(obj)} is selected by {len(chosen)} NetworkPolicies"
        assert "Ingress" in chosen[0]["spec"]["policyTypes"]


def test_only_the_gateway_is_open_to_callers_outside_the_release() -> None:
    objects = helm.render("default")
    release = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "escriba", "app.kubernetes.io/instance": helm.RELEASE}
        }
    }
    for policy_name, policy in policies(objects).items():
        rules = policy["spec"]["ingress"]
        component = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        if component == "gateway":
            # The public API: any source, on its gRPC, health and HTTP ports only.
            (rule,) = rules
            assert "from" not in rule
            assert {p["port"] for p in rule["ports"]} == {"grpc", "health", "http"}
        elif component in ("preprocess", "transcription", "correction"):
            (rule,) = rules
            assert rule["from"] == [release], policy_name
        else:
            assert rules == [], policy_name  # operator, migrations, purge, helm test: nothing calls them


def test_gateway_peers_narrow_the_gateway_to_the_release_and_those_peers() -> None:
    objects = helm.render("cpu")
    gateway = named(objects, "NetworkPolicy", f"{helm.RELEASE}-gateway")
    (rule, _metrics) = gateway["spec"]["ingress"]
    assert len(rule["from"]) == 3  # the release's pods, clients and ingress-nginx


def test_with_egress_the_jobs_reach_only_what_they_use() -> None:
    objects = helm.render("cpu")  # egress rules on there
    ports = {
        name: sorted({str(p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]})
        for name, policy in policies(objects).items()
    }
    assert ports[f"{helm.RELEASE}-migrate"] == ["53", "5432"]
    assert ports[f"{helm.RELEASE}-purge"] == ["4222", "53", "5432"]
    assert ports[f"{helm.RELEASE}-test"] == ["53", "health"]


def test_network_policies_can_still_be_turned_off() -> None:
    rendered = helm.template(None, "--set", "networkPolicy.enabled=false")
    assert policies(rendered) == {}


# Credentials as files --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES)
def test_no_secret_reaches_a_container_as_an_environment_variable(name: str) -> None:
    for obj, _, spec in pods(helm.render(name)):
        for c in spec["containers"] + spec.get("initContainers", []):
            for item in c.get("env", []):
                assert "secretKeyRef" not in item.get("valueFrom", {}), (helm.describe(obj), item["name"])
                assert item["name"] not in SECRET_BEARING, (helm.describe(obj), item["name"])
            assert not any("secretRef" in source for source in c.get("envFrom", [])), helm.describe(obj)


# Database TLS ----------------------------------------------------------------------------------------


def container_env(_obj: Manifest, spec: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in spec["containers"][0].get("env", [])}


def test_a_ca_for_the_database_means_verify_full() -> None:
    objects = helm.render("existing-secrets")  # tls.ca given, databaseSslMode left empty
    checked = 0
    for obj, _, spec in pods(objects):
        env = container_env(obj, spec)
        if "PGSSLROOTCERT" in env:
            assert env["PGSSLMODE"] == "verify-full", helm.describe(obj)
            checked += 1
    assert checked >= 6  # the four services, the migrations, the purge


def test_an_explicit_verifying_mode_is_kept_and_a_non_verifying_one_with_a_ca_is_refused() -> None:
    with_ca = ("--set", "tls.ca.secretName=internal-ca", "--set", "database.url=postgresql://a@b/c")
    objects = helm.template(
        None, *with_ca, "--set", "database.existingSecret=", "--set", "tls.databaseSslMode=verify-ca"
    )
    env = container_env(*next((o, s) for o, _, s in pods(objects) if o["kind"] == "Deployment"))
    assert env["PGSSLMODE"] == "verify-ca"
    for mode in ("require", "prefer", "allow"):
        with pytest.raises(helm.HelmError, match=f"tls.databaseSslMode {mode} does not verify"):
            helm.template(None, *with_ca, "--set", f"tls.databaseSslMode={mode}")
    # Without a CA nothing is imposed: libpq's own default.
    default = helm.render("default")
    assert all("PGSSLMODE" not in container_env(o, s) for o, _, s in pods(default))


# Stream and bucket caps ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES)
def test_every_service_gets_the_stream_and_bucket_caps(name: str) -> None:
    objects = helm.render(name)
    shared = named(objects, "ConfigMap", f"{helm.RELEASE}-config")["data"]
    settings = load(NatsSettings, shared)
    defaults = NatsSettings()
    for field in dataclasses.fields(NatsSettings):
        variable = field.metadata["env"]
        if variable.endswith("_MAX_BYTES"):
            assert variable in shared, variable
            if name == "default":
                assert getattr(settings, field.name) == getattr(defaults, field.name), variable


def test_a_cap_set_in_values_reaches_the_services_and_a_tiny_one_is_refused() -> None:
    rendered = helm.template(None, "--set", "nats.maxBytes.audio=21474836480")
    shared = named(tuple(rendered), "ConfigMap", f"{helm.RELEASE}-config")["data"]
    assert load(NatsSettings, shared).audio_max_bytes == 20 * 1024**3
    with pytest.raises(helm.HelmError, match="maxBytes"):
        helm.template(None, "--set", "nats.maxBytes.jobs=1024")


# Purge -----------------------------------------------------------------------------------------------


def test_the_purge_cronjob_runs_escriba_purge_with_the_retention_values(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {"purge": {"schedule": "*/30 * * * *", "retentionDays": 14, "archivedRetentionDays": 2.5}}
        )
    )
    objects = helm.template(values)
    (cron,) = [o for o in objects if o["kind"] == "CronJob"]
    assert cron["metadata"]["name"] == f"{helm.RELEASE}-purge"
    assert cron["spec"]["schedule"] == "*/30 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["args"] == ["purge"] and spec["restartPolicy"] == "Never"
    env = container_env(cron, spec)
    settings = load(RetentionSettings, env)
    assert (settings.retention_days, settings.archived_retention_days) == (14, 2.5)
    # It reaches the same database and NATS as the services: the shared config and the same files.
    assert {"configMapRef": {"name": f"{helm.RELEASE}-config"}} in c["envFrom"]
    assert env["ESCRIBA_DATABASE_URL_FILE"].startswith("/var/run/escriba/database/")


def test_the_purge_cronjob_is_on_by_default_and_can_be_turned_off() -> None:
    assert [o["metadata"]["name"] for o in helm.render("default") if o["kind"] == "CronJob"] == [
        f"{helm.RELEASE}-purge"
    ]
    assert [o for o in helm.template(None, "--set", "purge.enabled=false") if o["kind"] == "CronJob"] == []


def test_an_archived_retention_longer_than_the_retention_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="archivedRetentionDays"):
        helm.template(None, "--set", "purge.retentionDays=3,purge.archivedRetentionDays=7")


def test_notes_say_when_tasks_are_purged_and_warn_when_nothing_will_be() -> None:
    default = helm.notes(None)
    assert f'30 days after they end (7 when archived) by the CronJob "{helm.RELEASE}-purge"' in default
    assert "WARNING: purge.enabled is false" not in default
    assert "WARNING: purge.enabled is false" in helm.notes(None, "--set", "purge.enabled=false")


def test_notes_warn_when_scraping_is_on_but_the_policies_admit_no_scraper() -> None:
    warning = "networkPolicy.metricsFrom is\n  empty"
    assert warning in helm.notes(None, "--set", "metrics.serviceMonitor.enabled=true")
    assert warning not in helm.notes(helm.values_files()["cpu"])  # metricsFrom set there
    assert warning not in helm.notes(None)  # nothing scrapes
