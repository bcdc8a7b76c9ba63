"""docs/OBSERVABILITY.md is the metrics contract: every declared metric has a row with its real type and
labels, and nothing is documented that is not declared. Plus the small pure helpers behind the metrics."""

from __future__ import annotations

import datetime
import importlib
import re
from pathlib import Path

import pytest
from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import CollectorRegistry

from escriba.bus.worker import JobMeta
from escriba.common import metrics
from escriba_operator.metrics import Metrics as OperatorMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "OBSERVABILITY.md"
SERVICES = ("gateway", "preprocess", "transcription", "correction")
_ROW = re.compile(r"^\| `(escriba_[a-z0-9_]+)` \| (\w+) \|([^|]*)\|")


def documented(section: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) for the rows of the table under ``section`` (a heading's text)."""
    text = DOC.read_text()
    start = text.index(section)
    following = text.find("\n#", start + len(section))
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text[start : following if following > 0 else None].splitlines():
        match = _ROW.match(line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} is documented twice"
            rows[name] = (kind, tuple(re.findall(r"`(\w+)`", labels)))
    return rows


def declared(registry_metrics: list[MetricWrapperBase]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name -> (type, labels), as a scrape shows them (counters with their ``_total``)."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for metric in registry_metrics:
        (family,) = metric.describe()
        name = family.name + "_total" if isinstance(metric, Counter) else family.name
        found[name] = (family.type, tuple(metric._labelnames))
    return found


def test_every_service_metric_is_documented_with_its_type_and_labels() -> None:
    objects = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    expected = declared(objects)
    # The GPU gauges come from a collector registered only where NVML sees a GPU.
    expected[metrics.GPU_UTILIZATION] = ("gauge", ("gpu",))
    expected[metrics.GPU_MEMORY_USED] = ("gauge", ("gpu",))
    assert documented("## Metrics") == expected


def test_every_operator_metric_is_documented_with_its_type_and_labels() -> None:
    operator = OperatorMetrics()
    registry: CollectorRegistry = operator.registry
    objects = [v for v in vars(operator).values() if isinstance(v, MetricWrapperBase)]
    assert len(objects) == len(list(registry.collect()))
    assert documented("### The operator") == declared(objects)


def test_every_documented_service_row_names_known_services() -> None:
    text = DOC.read_text()
    section = text[text.index("## Metrics") : text.index("### The operator")]
    for line in section.splitlines():
        if _ROW.match(line):
            services = line.split("|")[4]
            named = re.findall(r"[a-z]+", services.replace("GPU only", ""))
            assert named and set(named) <= set(SERVICES), line


def test_grpc_methods_come_from_the_service_descriptors() -> None:
    importlib.import_module("escriba.v1.tasks_pb2")  # a service registers its descriptors on import
    methods = metrics.grpc_methods("escriba.v1.TaskService")
    assert "/escriba.v1.TaskService/CreateTask" in methods
    assert "/escriba.v1.TaskService/WatchTask" in methods
    assert metrics.grpc_methods("escriba.v1.NoSuchService") == []


@pytest.mark.parametrize(
    ("method", "stage"),
    [
        ("/escriba.v1.TaskService/CreateTask", "gateway"),
        ("/escriba.v1.PreprocessService/Preprocess", "preprocess"),
        ("/escriba.v1.TranscriptionService/Transcribe", "transcription"),
        ("/escriba.v1.CorrectionService/Correct", "correction"),
        ("/other.Thing/Do", "thing"),
    ],
)
def test_rpc_errors_are_labelled_with_their_service_stage(method: str, stage: str) -> None:
    assert metrics.rpc_stage(method) == stage


def _meta(timestamp: datetime.datetime | None) -> JobMeta:
    return JobMeta(
        stream="S", consumer="c", stream_seq=1, delivery_count=1, max_deliver=3, timestamp=timestamp
    )


def test_queue_wait_is_measured_from_the_jobs_stored_time() -> None:
    stored = datetime.datetime(2026, 1, 5, 10, 0, 0, tzinfo=datetime.UTC)
    later = stored + datetime.timedelta(seconds=2.5)
    assert _meta(stored).waited_s(later) == 2.5
    # A worker whose clock is behind the NATS server's reads no wait rather than a negative one.
    assert _meta(later).waited_s(stored) == 0.0
    assert _meta(None).waited_s(later) is None
