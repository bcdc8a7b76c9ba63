"""The chart's preprocess pods fit their worst case (issue 15, class 2): memory and /tmp, from the settings.

Preprocess memory no longer grows with the upload or the recording (a job holds a fixed amount plus a
little per second of audio, :func:`escriba.preprocess.engine.job_memory_bound`, checked by
``test_preprocess_memory.py`` with psutil); uploads, canonical audio and spools go to /tmp instead.
For every values file, the worst case is computed from what the rendered preprocess container reads
(its longest audio, largest upload and the files it takes at once: its JetStream worker's jobs plus its
PreprocessService's calls) and must fit under its memory limit and its /tmp emptyDir's size limit. The
old chart (2 GiB limit, 4 h allowed, 2 jobs, about 1 GiB an hour each) would have needed 8 GiB.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from escriba.common.settings import load
from escriba.pipeline.settings import WorkerSettings
from escriba.preprocess.engine import MAX_SEPARATE_CHANNELS, process_memory_bound, spool_disk_bound
from escriba.preprocess.settings import PreprocessSettings
from tests.support import helm

pytestmark = pytest.mark.timeout(120)

Manifest = dict[str, Any]
_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity_bytes(value: str | int) -> int:
    """A Kubernetes quantity of bytes (``2Gi``, ``512M``, ``1073741824``)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([kMGT]i?)?", str(value))
    assert found, f"not a byte quantity: {value!r}"
    return int(float(found.group(1)) * _UNITS[found.group(2) or ""])


@pytest.fixture(scope="module", autouse=True)
def helm_binary() -> None:
    helm.helm_path()


def preprocess_pod(values: str) -> tuple[Manifest, dict[str, str]]:
    """The preprocess Deployment's pod spec and the ESCRIBA_* values its container gets."""
    rendered = helm.render(values)
    deployment = next(
        o
        for o in rendered
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{helm.RELEASE}-preprocess"
    )
    spec = deployment["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "preprocess")
    maps = {o["metadata"]["name"]: o.get("data") or {} for o in rendered if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return spec, env


@pytest.mark.parametrize("values", list(helm.values_files()))
def test_preprocess_worst_case_fits_the_pod(values: str) -> None:
    spec, env = preprocess_pod(values)
    settings = load(PreprocessSettings, env)
    worker = load(WorkerSettings, env)
    enabled = worker.enabled and bool(env.get("ESCRIBA_NATS_URL"))
    jobs = (worker.max_in_flight or settings.max_concurrency if enabled else 0) + settings.max_concurrency
    container = next(c for c in spec["containers"] if c["name"] == "preprocess")

    limit = quantity_bytes(container["resources"]["limits"]["memory"])
    needed = process_memory_bound(settings.max_duration_s, jobs)
    assert needed <= limit, (
        f"{values}: {jobs} preprocess jobs of {settings.max_duration_s:g} s need up to"
        f" {needed / 2**20:.0f} MiB; the limit is {limit / 2**20:.0f} MiB"
    )

    tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
    disk = jobs * spool_disk_bound(
        settings.max_duration_s, settings.max_input_bytes, channels=MAX_SEPARATE_CHANNELS
    )
    size_limit = quantity_bytes(tmp["emptyDir"]["sizeLimit"])
    assert disk <= size_limit, (
        f"{values}: {jobs} preprocess jobs may spool {disk / 2**30:.1f} GiB in /tmp;"
        f" its size limit is {size_limit / 2**30:.1f} GiB"
    )


def test_the_worst_case_follows_the_settings() -> None:
    # The bound is what the chart is checked against, so it must move with the settings it reads.
    assert process_memory_bound(4 * 3600, 4) > process_memory_bound(3600, 4) > process_memory_bound(3600, 2)
    assert process_memory_bound(4 * 3600, 4) < 700 * 2**20  # the default: 4 jobs of 4 hours
    assert spool_disk_bound(3600, 2**30, channels=8) > spool_disk_bound(3600, 2**30, channels=1)
