"""checkov on the rendered chart, passing only the failed checks the chart README lists, with reasons.

Shared by ``make chart-scan`` (``python -m tests.support.chart_scan``) and the test that runs it in
``make test``: the chart is rendered with the default values and every ``helm/escriba/ci/*.yaml`` (as
the other chart checks do), each rendering is scanned with ``checkov --framework kubernetes``, and every
failed check must match a row of the README's "Security scan (checkov)" table: the check id and a glob
on ``Kind/name``. The table is parsed from the README, so what is documented and what is tolerated are
one list; a table entry no rendering needs any longer fails too. checkov lives in a virtualenv of its
own (``scripts/install-checkov.sh``): in the project's it would downgrade packages the services use.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import helm

README = helm.CHART_DIR / "README.md"
SECTION = "## Security scan (checkov)"
INSTALL_SCRIPT = helm.REPO_ROOT / "scripts" / "install-checkov.sh"
DEFAULT_CHECKOV = helm.REPO_ROOT / ".tools" / "checkov" / "bin" / "checkov"

_ROW = re.compile(r"^\|\s*`(?P<check>CKV2?_K8S_\d+)`[^|]*\|(?P<resources>[^|]+)\|(?P<reason>[^|]+)\|\s*$")


@dataclass(frozen=True)
class Allowance:
    """One README row: a check tolerated on the resources its globs match, and why."""

    check: str
    resources: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Finding:
    """A failed check on one rendered resource."""

    check: str
    name: str
    resource: str  # Kind/name

    def __str__(self) -> str:
        return f"{self.check} ({self.name}) on {self.resource}"


@dataclass
class Outcome:
    """What the scan of every rendering found."""

    findings: dict[str, list[Finding]] = field(default_factory=dict)
    unexplained: list[tuple[str, Finding]] = field(default_factory=list)
    unused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unexplained and not self.unused


def allowances(text: str | None = None) -> list[Allowance]:
    """The rows of the README's table (raises when the section or its rows are missing)."""
    text = README.read_text() if text is None else text
    if SECTION not in text:
        raise ValueError(f"{README} has no section {SECTION!r}")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows: list[Allowance] = []
    for line in section.splitlines():
        match = _ROW.match(line.strip())
        if not match:
            continue
        globs = tuple(re.findall(r"`([^`]+)`", match["resources"]))
        reason = match["reason"].strip()
        if not globs or len(reason) < 20:
            raise ValueError(f"README row for {match['check']} needs resource globs and a reason: {line}")
        rows.append(Allowance(match["check"], globs, reason))
    if not rows:
        raise ValueError(f"the {SECTION!r} section of {README} has no table rows")
    return rows


@functools.cache
def checkov_path() -> Path:
    """``$ESCRIBA_CHECKOV``, or the pinned one in ``.tools/checkov`` (installed on first use; checked
    once per process, as the check itself starts checkov)."""
    override = os.environ.get("ESCRIBA_CHECKOV")
    if override:
        return Path(override)
    subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=900)
    return DEFAULT_CHECKOV


def _resource(raw: str) -> str:
    """checkov's ``Kind.namespace.name`` (graph checks append the pod's labels) as ``Kind/name``."""
    kind, _, rest = raw.partition(".")
    _, _, name = rest.partition(".")
    return f"{kind}/{name.split('.helm.sh/', 1)[0]}"


def scan(objects: Iterable[dict[str, Any]]) -> list[Finding]:
    """Every failed check checkov reports on ``objects``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rendered.yaml"
        path.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))
        done = subprocess.run(
            [
                str(checkov_path()),
                "--framework",
                "kubernetes",
                "-f",
                str(path),
                "-o",
                "json",
                "--skip-download",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_COLOR": "1"},
        )
    if done.returncode not in (0, 1):  # 1: some check failed
        raise RuntimeError(f"checkov failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    reports = json.loads(done.stdout)
    failed: list[Finding] = []
    for report in reports if isinstance(reports, list) else [reports]:
        if report.get("check_type") not in (None, "kubernetes"):
            continue
        for check in report["results"]["failed_checks"]:
            failed.append(Finding(check["check_id"], check["check_name"], _resource(check["resource"])))
    return sorted(set(failed), key=str)


def scan_many(renderings: dict[str, Iterable[dict[str, Any]]]) -> dict[str, list[Finding]]:
    """:func:`scan` of each rendering, one checkov process per CPU at a time (a run is mostly its
    single-threaded start-up). One process per rendering, never one over all: checkov's graph checks
    join resources across the files of a run, so one rendering's NetworkPolicy would cover another's
    pods and hide the finding."""
    checkov_path()  # installed once, before the runs start
    materialized = {name: list(objects) for name, objects in renderings.items()}
    with ThreadPoolExecutor(max_workers=max(1, min(len(materialized), os.cpu_count() or 1))) as pool:
        futures = {name: pool.submit(scan, objects) for name, objects in materialized.items()}
        return {name: future.result() for name, future in futures.items()}


def scan_all() -> dict[str, list[Finding]]:
    """The failed checks of every rendering: the default values and each ``ci/`` file."""
    return scan_many({name: helm.template(values) for name, values in helm.values_files().items()})


def evaluate(findings: dict[str, list[Finding]], rows: Sequence[Allowance], out: Any = sys.stdout) -> Outcome:
    """Match every finding against the rows; print one line per rendering and per problem."""
    used: set[tuple[str, str]] = set()
    outcome = Outcome(findings=findings)
    for name, found in findings.items():
        explained = 0
        for finding in found:
            matches = [
                (row.check, glob)
                for row in rows
                if row.check == finding.check
                for glob in row.resources
                if fnmatch.fnmatchcase(finding.resource, glob)
            ]
            used.update(matches)
            if matches:
                explained += 1
            else:
                outcome.unexplained.append((name, finding))
                print(f"FAIL {name}: {finding} is not listed in {README.name}", file=out)
        status = "ok  " if explained == len(found) else "FAIL"
        print(
            f"{status} {name}: {explained} of {len(found)} failed checks listed with their reason", file=out
        )
    for row in rows:
        for glob in row.resources:
            if (row.check, glob) not in used:
                outcome.unused.append((row.check, glob))
                print(
                    f"FAIL {row.check} on {glob}: listed in {README.name} but no rendering fails it", file=out
                )
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.chart_scan", description=__doc__)
    parser.parse_args(argv)
    return 0 if evaluate(scan_all(), allowances()).ok else 1


if __name__ == "__main__":
    sys.exit(main())
