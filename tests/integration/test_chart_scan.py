"""checkov on every rendering of the chart fails no check but those the chart README lists, each with
its reason; the table is what the scan reads, so a regression or a stale entry fails here."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest

from tests.support import chart_scan, helm

pytestmark = pytest.mark.timeout(900)


REGRESSED = "regressed"


def regressed_rendering() -> list[dict[str, Any]]:
    """The default rendering with network policies off and a secret in the environment."""
    objects = helm.template(
        None, "--set", "networkPolicy.enabled=false", "--set", "gateway.extraEnv[0].name=X"
    )
    gateway = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-gateway")
    )
    gateway["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "ESCRIBA_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}
    )
    return objects


@pytest.fixture(scope="module")
def scanned() -> dict[str, list[chart_scan.Finding]]:
    """Every rendering and the regressed one, scanned side by side (a checkov run is mostly its start-up)."""
    helm.helm_path()
    chart_scan.checkov_path()
    renderings = {name: helm.template(values) for name, values in helm.values_files().items()}
    return chart_scan.scan_many({**renderings, REGRESSED: regressed_rendering()})


@pytest.fixture(scope="module")
def findings(scanned: dict[str, list[chart_scan.Finding]]) -> dict[str, list[chart_scan.Finding]]:
    return {name: found for name, found in scanned.items() if name != REGRESSED}


def test_every_rendering_fails_only_the_listed_checks(findings: dict[str, list[chart_scan.Finding]]) -> None:
    out = io.StringIO()
    outcome = chart_scan.evaluate(findings, chart_scan.allowances(), out)
    assert outcome.ok, out.getvalue()
    assert set(findings) == set(helm.values_files())


def test_an_unlisted_failure_and_a_stale_entry_both_fail(
    findings: dict[str, list[chart_scan.Finding]],
) -> None:
    rows = chart_scan.allowances()
    without_38 = [r for r in rows if r.check != "CKV_K8S_38"]
    outcome = chart_scan.evaluate(findings, without_38, io.StringIO())
    assert {f.check for _, f in outcome.unexplained} == {"CKV_K8S_38"}
    stale = [*rows, dataclasses.replace(rows[0], check="CKV_K8S_20", resources=("Deployment/*",))]
    outcome = chart_scan.evaluate(findings, stale, io.StringIO())
    assert outcome.unexplained == [] and outcome.unused == [("CKV_K8S_20", "Deployment/*")]


def test_the_scan_catches_what_the_safe_defaults_fixed(scanned: dict[str, list[chart_scan.Finding]]) -> None:
    """Policies off and a secret in the environment are findings no README row excuses."""
    outcome = chart_scan.evaluate({REGRESSED: scanned[REGRESSED]}, chart_scan.allowances(), io.StringIO())
    assert {"CKV2_K8S_6", "CKV_K8S_35"} <= {f.check for _, f in outcome.unexplained}


def test_every_row_gives_a_reason() -> None:
    for row in chart_scan.allowances():
        assert row.reason.endswith(".") and len(row.reason) > 40, row
