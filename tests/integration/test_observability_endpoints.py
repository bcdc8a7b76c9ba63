"""Every service, run as its own `escriba serve` process, exposes on /metrics the metrics that
docs/OBSERVABILITY.md documents for it, from start-up, with its own labels; one task moves them."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from escriba.client import EscribaClient
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from tests.support import media
from tests.support.grpc_servers import free_port
from tests.support.stack import run_task, stack_config, status_name

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "OBSERVABILITY.md"
SERVICES = ("gateway", "preprocess", "transcription", "correction")
GRPC_SERVICE = {
    "gateway": "TaskService",
    "preprocess": "PreprocessService",
    "transcription": "TranscriptionService",
    "correction": "CorrectionService",
}
CACHE = {"preprocess": "normalized_audio", "transcription": "transcript", "correction": "correction"}


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    labels: tuple[str, ...]
    services: tuple[str, ...]
    gpu_only: bool


def documented() -> list[Row]:
    text = DOC.read_text()
    table = text[text.index("## Metrics") : text.index("### The operator")]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`escriba_"):
            continue
        rows.append(
            Row(
                name=cells[0].strip("`"),
                kind=cells[1],
                labels=tuple(re.findall(r"`(\w+)`", cells[2])),
                services=tuple(s for s in SERVICES if s in cells[3]),
                gpu_only="GPU only" in cells[3],
            )
        )
    assert len(rows) >= 10
    return rows


def sample_names(row: Row) -> set[str]:
    if row.kind == "histogram":
        return {f"{row.name}_bucket", f"{row.name}_count", f"{row.name}_sum"}
    return {row.name}


def scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def own_series(row: Row, service: str, samples: list[Sample]) -> list[Sample]:
    """The row's samples carrying ``service``'s own label values (its stage, cache, gRPC service)."""
    found = []
    for s in samples:
        if s.name not in sample_names(row):
            continue
        if "stage" in row.labels and s.labels.get("stage") != service:
            continue
        if "cache" in row.labels and s.labels.get("cache") != CACHE.get(service):
            continue
        if "method" in row.labels and not s.labels.get("method", "").startswith(
            f"/escriba.v1.{GRPC_SERVICE[service]}/"
        ):
            continue
        found.append(s)
    return found


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return bool(pynvml.nvmlDeviceGetCount())
    except Exception:
        return False


@pytest.fixture(scope="module")
def metrics_ports() -> dict[str, int]:
    return {service: free_port() for service in SERVICES}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    nats_server: EmbeddedNats, postgres_dsn: str, metrics_ports: dict[str, int]
) -> AsyncIterator[LocalStack]:
    env = {f"ESCRIBA_LOCAL_METRICS_PORT_{s.upper()}": str(p) for s, p in metrics_ports.items()}
    config = stack_config(nats_server.url, postgres_dsn, mode="processes", env=env)
    config.restart = False
    async with LocalStack(config) as running:
        yield running


async def test_each_service_exposes_its_documented_metrics_from_start_up(
    stack: LocalStack, metrics_ports: dict[str, int]
) -> None:
    gpu = gpu_present()
    for service in SERVICES:
        samples = await asyncio.to_thread(scrape, metrics_ports[service])
        names = {s.name for s in samples}
        for row in documented():
            if service not in row.services:
                continue
            if row.gpu_only and not gpu:
                assert not (sample_names(row) & names), f"{service} exposes {row.name} without a GPU"
                continue
            assert own_series(row, service, samples), f"{service} does not expose {row.name}"


async def test_one_task_moves_every_stages_metrics(stack: LocalStack, metrics_ports: dict[str, int]) -> None:
    async with EscribaClient(stack.address) as client:
        task = await run_task(client, media.JFK)
    assert status_name(task) == "completed", task.error
    after = {s: await asyncio.to_thread(scrape, p) for s, p in metrics_ports.items()}

    gateway = after["gateway"]
    create = "/escriba.v1.TaskService/CreateTask"
    assert value(gateway, "escriba_grpc_requests_total", method=create, code="OK") >= 1
    assert value(gateway, "escriba_grpc_request_duration_seconds_count", method=create) >= 1
    for stage in ("preprocess", "transcription", "correction"):
        samples = after[stage]
        assert value(samples, "escriba_queue_wait_seconds_count", stage=stage) >= 1, stage
        assert value(samples, "escriba_stage_duration_seconds_count", stage=stage) >= 1, stage
        assert value(samples, "escriba_cache_requests_total", cache=CACHE[stage]) >= 1, stage
    for stage in ("preprocess", "transcription"):
        assert value(after[stage], "escriba_audio_seconds_total", stage=stage) >= 10.0, stage
    transcription = after["transcription"]
    assert value(transcription, "escriba_real_time_factor_count", stage="transcription") >= 1
    assert value(transcription, "escriba_transcription_batch_size_count") >= 1
    (load,) = [s for s in transcription if s.name == "escriba_model_load_seconds"]
    assert load.value > 0 and load.labels["device"] in ("cpu", "cuda")


async def test_preprocess_jobs_observe_their_real_time_factor(
    stack: LocalStack, metrics_ports: dict[str, int], tmp_path: Path
) -> None:
    before = value(
        await asyncio.to_thread(scrape, metrics_ports["preprocess"]), "escriba_real_time_factor_count"
    )
    # Audio never seen by this stack, so the normalized-audio cache misses and the stage does the work.
    path = media.write(tmp_path / "jfk.mp3", media.speech_as("mp3"))
    async with EscribaClient(stack.address) as client:
        task = await run_task(client, path)
    assert status_name(task) == "completed", task.error
    after = value(
        await asyncio.to_thread(scrape, metrics_ports["preprocess"]), "escriba_real_time_factor_count"
    )
    assert after == before + 1
