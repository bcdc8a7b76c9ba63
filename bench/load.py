"""Load on TaskService: many short uploads at once, CreateTask latency (p50/p99) and what it cost.

Uploads are distinct files that decode to the same few clips of real speech: each carries its own
index in a RIFF ``LIST/INFO`` comment, so every upload has its own sha256 (the preprocess stage decodes
and normalizes each one: no upload-cache hit), while the normalized audio - and so the transcript cache
key - is shared by every upload of one clip. With ``distinct`` clips, the model runs about ``distinct``
times however many tasks there are: the load is on the gateway, the bus, the database and preprocessing,
which is what a burst of short tasks stresses.

    python -m bench.load --tasks 1000 --concurrency 1000   # a local stack of its own; prints a report

``bench.run`` calls :func:`create_task_p99_ms` against the stack it already runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np

from escriba.audio.decode import decode_audio
from escriba.audio.pcm import SAMPLE_RATE_HZ, to_int16
from escriba.client import EscribaClient, make_spec
from escriba.common.client import byte_chunks, write_all
from escriba.v1 import tasks_pb2

SPEECH = Path(__file__).resolve().parents[1] / "tests" / "data" / "jfk.flac"
#: Answers that mean "not now": the client retries them (a burst past the gateway's concurrent-RPC
#: limit is refused with RESOURCE_EXHAUSTED by design).
RETRYABLE = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})


def _chunk(tag: bytes, payload: bytes) -> bytes:
    pad = b"\0" if len(payload) % 2 else b""
    return tag + struct.pack("<I", len(payload)) + payload + pad


def tagged_wav(pcm: np.ndarray, rate: int, comment: str) -> bytes:
    """A mono 16-bit WAV of ``pcm`` with ``comment`` in its LIST/INFO chunk (ICMT)."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    text = comment.encode() + b"\0"
    info = _chunk(b"LIST", b"INFO" + _chunk(b"ICMT", text))
    body = b"WAVE" + _chunk(b"fmt ", fmt) + info + _chunk(b"data", pcm.astype("<i2").tobytes())
    return b"RIFF" + struct.pack("<I", len(body)) + body


def distinct_uploads(
    count: int, *, distinct: int = 20, seconds: float = 1.5, speech_file: Path = SPEECH
) -> list[bytes]:
    """``count`` uploads of different bytes over ``distinct`` clips of real speech (see the module doc),
    cut from the first minute of ``speech_file``."""
    speech = decode_audio(speech_file, max_duration_s=3600.0).samples[: 60 * SAMPLE_RATE_HZ]
    length = int(seconds * SAMPLE_RATE_HZ)
    span = max(1, speech.size - length)
    clips = [to_int16(speech[(i * span) // distinct :][:length]) for i in range(distinct)]
    return [tagged_wav(clips[i % distinct], SAMPLE_RATE_HZ, f"escriba load {i}") for i in range(count)]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): a value that was measured, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LatencyReport:
    """CreateTask latencies (ms, the accepted attempt of each upload) and what the burst cost."""

    calls: int
    concurrency: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    retries: int
    upload_bytes: int
    wall_s: float
    task_ids: list[str] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, float | int]:
        data = asdict(self)
        data.pop("task_ids")
        return data


def refused(exc: grpc.aio.AioRpcError) -> bool:
    """The gateway turned the attempt away before accepting it (worth retrying).

    A client-streaming call refused while the client is still writing (the concurrent-RPC limit answers
    at once) reaches grpc's asyncio client as INTERNAL from the failed send, not as the server's
    RESOURCE_EXHAUSTED (grpc/grpc#36066); nothing was created, since a task exists only once the whole
    upload was read.
    """
    if exc.code() in RETRYABLE:
        return True
    return exc.code() == grpc.StatusCode.INTERNAL and "SendMessageOperation" in (
        exc.debug_error_string() or ""
    )


def _requests(spec: tasks_pb2.TaskSpec, data: bytes) -> Iterator[tasks_pb2.CreateTaskRequest]:
    yield tasks_pb2.CreateTaskRequest(spec=spec)
    for chunk in byte_chunks(data):
        yield tasks_pb2.CreateTaskRequest(chunk=chunk)


async def _create(client: EscribaClient, data: bytes, name: str) -> tasks_pb2.Task:
    call = client.stub.CreateTask(metadata=client.metadata)
    writer = asyncio.create_task(write_all(call, _requests(make_spec(name), data)))
    try:
        task: tasks_pb2.Task = await call
    finally:
        await writer
    return task


async def measure_create_task(
    address: str,
    uploads: Sequence[bytes],
    *,
    concurrency: int | None = None,
    max_attempts: int = 100,
    retry_delay_s: float = 0.2,
) -> LatencyReport:
    """Submit every upload (``concurrency`` at a time; ``None``: all at once) and time each CreateTask.

    A refused attempt (past the gateway's concurrent-RPC limit, or UNAVAILABLE: see :func:`refused`) is
    retried after a short pause and counted in ``retries``; the latency is the accepted attempt's.
    """
    limit = concurrency or len(uploads)
    slots = asyncio.Semaphore(limit)
    latencies: list[float] = []
    ids: list[str] = []
    retries = 0

    async def one(index: int, data: bytes) -> None:
        nonlocal retries
        async with slots:
            for attempt in range(1, max_attempts + 1):
                started = time.perf_counter()
                try:
                    task = await _create(client, data, f"load-{index}.wav")
                except grpc.aio.AioRpcError as exc:
                    if not refused(exc) or attempt == max_attempts:
                        raise
                    retries += 1
                    await asyncio.sleep(retry_delay_s * (1 + index % 5) / 3)
                    continue
                latencies.append((time.perf_counter() - started) * 1000.0)
                ids.append(task.id)
                return

    started = time.perf_counter()
    async with EscribaClient(address) as client:
        await asyncio.gather(*(one(i, data) for i, data in enumerate(uploads)))
    return LatencyReport(
        calls=len(latencies),
        concurrency=limit,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=math.nan),
        retries=retries,
        upload_bytes=sum(len(u) for u in uploads),
        wall_s=time.perf_counter() - started,
        task_ids=ids,
    )


async def create_task_p99_ms(address: str, *, tasks: int = 200, concurrency: int = 16) -> float:
    """CreateTask p99 in ms: ``tasks`` short distinct uploads, ``concurrency`` at a time (bench.run)."""
    report = await measure_create_task(address, distinct_uploads(tasks), concurrency=concurrency)
    return report.p99_ms


async def _main(args: argparse.Namespace) -> dict[str, float | int]:
    from escriba.local.stack import LocalStack, StackConfig

    uploads = distinct_uploads(args.tasks, distinct=args.distinct)
    async with LocalStack(StackConfig(port=0, mode=args.mode)) as stack:
        report = await measure_create_task(stack.address, uploads, concurrency=args.concurrency or None)
    return report.summary()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--distinct", type=int, default=20, help="different clips among the uploads")
    parser.add_argument("--concurrency", type=int, default=0, help="CreateTask calls at once (0: all)")
    parser.add_argument("--mode", choices=("in_process", "processes"), default="in_process")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_main(args)), indent=2))


if __name__ == "__main__":
    main()
