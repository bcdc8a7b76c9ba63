"""GPU metrics from NVML: present per GPU where NVML sees one, absent (not zero) everywhere else.

There is no GPU here, so NVML is replaced by a small fake module with pynvml's names (the one stand-in
these tests allow); what is checked is the collector's reading, labelling and registration logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from escriba.common.metrics import GPU_MEMORY_USED, GPU_UTILIZATION, GpuCollector, register_gpu_metrics


class NVMLError(Exception):
    pass


@dataclass
class FakeNvml:
    """pynvml's calls the collector uses, over a list of (utilization percent, memory used) per GPU."""

    gpus: list[tuple[int, int]] = field(default_factory=list)
    init_fails: bool = False
    broken: set[int] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    NVMLError: type[Exception] = NVMLError

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_fails:
            raise NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self.calls.append("utilization")
        if handle in self.broken:
            raise NVMLError("GPU is lost")
        return SimpleNamespace(gpu=self.gpus[handle][0], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        if handle in self.broken:
            raise NVMLError("GPU is lost")
        return SimpleNamespace(used=self.gpus[handle][1], total=80 * 2**30, free=0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels.get("gpu", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_gpu_is_read_at_scrape_time() -> None:
    nvml = FakeNvml(gpus=[(37, 5 * 2**30), (100, 2**20)])
    registry = CollectorRegistry()
    collector = register_gpu_metrics(registry, nvml)
    assert collector is not None and collector.gpu_count == 2
    assert samples(registry) == {
        (GPU_UTILIZATION, "0"): pytest.approx(0.37),
        (GPU_UTILIZATION, "1"): 1.0,
        (GPU_MEMORY_USED, "0"): 5 * 2**30,
        (GPU_MEMORY_USED, "1"): 2**20,
    }
    nvml.gpus[0] = (0, 0)  # the next scrape reads NVML again
    assert samples(registry)[(GPU_UTILIZATION, "0")] == 0.0


def test_without_nvml_nothing_is_registered() -> None:
    nvml = FakeNvml(init_fails=True)
    registry = CollectorRegistry()
    assert register_gpu_metrics(registry, nvml) is None
    assert samples(registry) == {}
    assert GPU_UTILIZATION not in generate_latest(registry).decode()


def test_nvml_without_a_gpu_registers_nothing_and_shuts_nvml_down() -> None:
    nvml = FakeNvml(gpus=[])
    registry = CollectorRegistry()
    assert register_gpu_metrics(registry, nvml) is None
    assert GPU_MEMORY_USED not in generate_latest(registry).decode()
    assert nvml.calls == ["init", "shutdown"]


def test_a_gpu_that_cannot_be_read_has_no_sample_while_the_others_do() -> None:
    nvml = FakeNvml(gpus=[(10, 1), (20, 2)], broken={0})
    registry = CollectorRegistry()
    register_gpu_metrics(registry, nvml)
    assert samples(registry) == {(GPU_UTILIZATION, "1"): pytest.approx(0.2), (GPU_MEMORY_USED, "1"): 2}


def test_registering_reads_no_gpu_until_a_scrape() -> None:
    nvml = FakeNvml(gpus=[(10, 1)])
    registry = CollectorRegistry(auto_describe=True)
    collector = register_gpu_metrics(registry, nvml)
    assert isinstance(collector, GpuCollector)
    assert [m.name for m in collector.describe()] == [GPU_UTILIZATION, GPU_MEMORY_USED]
    assert "utilization" not in nvml.calls
    generate_latest(registry)
    assert nvml.calls.count("utilization") == 1


def test_on_this_machine_the_real_nvml_decides() -> None:
    """With the real pynvml: registered exactly when NVML initialises and counts a GPU."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        gpus = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        gpus = 0
    registry = CollectorRegistry()
    collector = register_gpu_metrics(registry)
    assert (collector is not None) == (gpus > 0)
    assert (GPU_UTILIZATION in generate_latest(registry).decode()) == (gpus > 0)
