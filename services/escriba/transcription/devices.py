"""Turn the ``auto`` settings into the concrete device, precision and thread count.

Resolved once at load so the values the model really runs with are logged and reported, and so one
container image serves GPU and CPU nodes alike without per-node configuration.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import ctranslate2

DEVICES = ("auto", "cpu", "cuda")

#: What CTranslate2 accepts; ``auto`` is ours (see :func:`resolve_compute_type`).
COMPUTE_TYPES = (
    "auto",
    "default",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)


def cuda_device_count() -> int:
    """CUDA devices CTranslate2 can use (0 without a GPU or a CUDA runtime)."""
    return int(ctranslate2.get_cuda_device_count())


def resolve_device(requested: str, cuda_devices: int | None = None) -> str:
    """``auto`` picks CUDA when CTranslate2 sees a GPU; an explicit choice is kept as is."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; expected one of {', '.join(DEVICES)}")
    if requested != "auto":
        return requested
    count = cuda_device_count() if cuda_devices is None else cuda_devices
    return "cuda" if count > 0 else "cpu"


def resolve_compute_type(requested: str, device: str) -> str:
    """``auto``: 8-bit weights everywhere (4x less memory than float32, near-equal accuracy), with
    float16 activations on a GPU where they run on tensor cores."""
    if requested not in COMPUTE_TYPES:
        raise ValueError(f"unknown compute type {requested!r}; expected one of {', '.join(COMPUTE_TYPES)}")
    if requested != "auto":
        return requested
    return "int8_float16" if device == "cuda" else "int8"


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """The container's CPU limit (cgroup v2 ``cpu.max``: "QUOTA PERIOD" or "max PERIOD"), rounded up."""
    try:
        quota, _, period = cpu_max.read_text().strip().partition(" ")
    except OSError:
        return None
    if quota == "max" or not period:
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def resolve_cpu_threads(requested: int, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """0 means every CPU this process may use: its affinity, capped by a container CPU limit (a pod
    limited to 2 CPUs on a 64-core node must not start 64 threads), rather than CTranslate2's fixed
    default of 4, which oversubscribes a small node and under-uses a large one."""
    if requested < 0:
        raise ValueError(f"CPU threads must be >= 0, got {requested}")
    if requested:
        return requested
    available = len(os.sched_getaffinity(0)) or 1
    limit = cgroup_cpu_limit(cpu_max)
    return min(available, limit) if limit else available


#: Model workers ``num_workers=0`` gives on a CPU at most: one per CPU up to this many (each holds its
#: own working memory; the weights are shared), then more threads per worker.
MAX_AUTO_CPU_WORKERS = 8


def resolve_workers(
    device: str, *, cpus: int = 0, num_workers: int = 0, cpu_threads: int = 0, cpu_max: Path = CGROUP_CPU_MAX
) -> tuple[int, int]:
    """``(model workers, threads per worker)`` from the settings (0: auto for each).

    On a CPU, auto is one model worker per CPU (up to :data:`MAX_AUTO_CPU_WORKERS`), each with two
    threads: calls side by side beat one call on every core (beam search's small matrix products
    leave a second thread idle: on 2 cores with tiny.en, 100 short clips took 42 s as two 1-thread
    workers, 44 s as two 2-thread workers, against about 33 % more as one 2-thread worker), while a
    worker running alone still has two cores for its encoder, which halves with a second thread (a
    lone request is as fast as with one worker; with one thread per worker it would take twice as
    long to encode). Explicit workers get the CPUs divided among them. On CUDA one worker feeds the
    device and batches fill it. ``cpus``: the CPUs the model may use in all (0:
    :func:`resolve_cpu_threads`' count).
    """
    if min(cpus, num_workers, cpu_threads) < 0:
        raise ValueError(f"CPUs, workers and threads must be >= 0, got {cpus}, {num_workers}, {cpu_threads}")
    budget = resolve_cpu_threads(cpus, cpu_max)
    if num_workers:
        workers = num_workers
        threads = cpu_threads or max(1, budget // workers)
    elif device == "cuda":
        workers, threads = 1, cpu_threads or budget
    else:
        workers = min(budget, MAX_AUTO_CPU_WORKERS)
        threads = cpu_threads or max(min(budget, AUTO_THREADS_PER_CPU_WORKER), budget // workers)
    return workers, threads


#: Threads per auto CPU worker (fewer only with fewer CPUs): see :func:`resolve_workers`.
AUTO_THREADS_PER_CPU_WORKER = 2
