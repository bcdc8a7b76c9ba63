"""Measure which batch sizes pay off, to fill ``ESCRIBA_TRANSCRIPTION_BATCH_SIZES_*`` from data.

Builds speech of each requested length by repeating the given recordings (half a second of silence
between them, so VAD cuts windows the way it does on real speech), transcribes it through the real
engine with each batch size, and prints the best wall time of ``--repeats`` runs. Run it on the node
type and model you deploy, e.g.::

    python -m escriba.transcription.batchbench tests/data/jfk.flac tests/data/stereo_diarization.wav \\
        tests/data/hotwords.mp3 --lengths 30,60,120,300 --batch-sizes 1,2,4,8,16

Measured on the development machine (2 CPU cores shared with other jobs, so wall times are noisy;
tiny.en, int8, 2 threads, beam 5, VAD and word timestamps on; jfk.flac and hotwords.mp3 repeated), best
wall seconds / CPU seconds of 3 runs::

    audio      b=1          b=2          b=4          b=8          b=16
    60 s     2.5 /  3.3   1.9 /  2.4   1.9 /  2.7   2.7 /  2.3   2.3 /  2.9
    120 s    7.9 /  6.5   4.2 /  4.8   3.2 /  5.0   4.5 /  4.7   3.2 /  5.0
    300 s   13.1 / 13.5  11.1 / 11.3  12.9 / 11.1   9.7 / 12.4   8.3 / 11.8
    300 s (second run)   11.2 / 12.0  11.4 / 12.3   9.3 / 12.4  10.0 / 14.0

Batch 1 wastes CPU; from batch 2 on the CPU work is flat, and on long audio batches of 8 or more let
CTranslate2 keep both threads busy (wall below CPU time), so the CPU default is 4 up to 120 s (at most
four windows: a larger batch changes nothing) and 8 beyond.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from escriba.common.settings import load
from escriba.transcription.batching import BatchTable
from escriba.transcription.engine import SAMPLE_RATE_HZ, WhisperEngine
from escriba.transcription.settings import TranscriptionSettings

GAP_S = 0.5


def build_speech(clips: Sequence[npt.NDArray[np.float32]], length_s: float) -> npt.NDArray[np.float32]:
    """``length_s`` seconds made of ``clips`` one after another (cycled), each followed by a short gap."""
    gap = np.zeros(int(GAP_S * SAMPLE_RATE_HZ), dtype=np.float32)
    target = int(length_s * SAMPLE_RATE_HZ)
    parts: list[npt.NDArray[np.float32]] = []
    total = 0
    index = 0
    while total < target:
        for part in (clips[index % len(clips)], gap):
            parts.append(part)
            total += part.shape[0]
        index += 1
    return np.concatenate(parts)[:target]


#: ``(length_s, batch_size) -> (best wall seconds, CPU seconds)`` of one measurement.
Measurements = dict[tuple[float, int], tuple[float, float]]


def measure(
    clips: Sequence[npt.NDArray[np.float32]],
    base: TranscriptionSettings,
    *,
    lengths: Sequence[float],
    batch_sizes: Sequence[int],
    repeats: int = 2,
    deadline: float | None = None,
    report: Callable[[float, int, float, float, int], None] | None = None,
) -> Measurements:
    """Best wall (and CPU) seconds of ``repeats`` runs for each length and batch size, through the real
    engine. Past ``deadline`` (a ``time.monotonic()`` value) no further length is started, so a
    caller with a time budget keeps what was measured (a length some sizes missed is chosen among the
    others)."""
    results: Measurements = {}
    for batch in batch_sizes:
        if deadline is not None and time.monotonic() >= deadline:
            break
        table = ((float("inf"), batch),)
        engine = WhisperEngine(dataclasses.replace(base, batch_sizes_cpu=table, batch_sizes_cuda=table))
        engine.load()
        try:
            engine.transcribe(clips[0])  # warm-up: first-call allocations are not what we measure
            for length in lengths:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                audio = build_speech(clips, length)
                best = (float("inf"), float("inf"))
                words = 0
                for _ in range(repeats):
                    wall, cpu = time.perf_counter(), time.process_time()
                    transcript = engine.transcribe(audio)
                    best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
                    words = len(transcript.text.split())
                results[(length, batch)] = best
                if report is not None:
                    report(length, batch, best[0], best[1], words)
        finally:
            engine.close()
    return results


def tuned_table(results: Measurements, *, tolerance: float = 0.05) -> BatchTable:
    """The batch table the measurements call for: for each length, the smallest batch size within
    ``tolerance`` of the fastest (a larger one would only hold more memory and make short requests
    wait for long ones); the longest length's row covers all longer audio. Rows that repeat the next
    row's size are merged."""
    lengths = sorted({length for length, _ in results})
    if not lengths:
        raise ValueError("no measurements")
    chosen: list[tuple[float, int]] = []
    for length in lengths:
        walls = {batch: wall for (at, batch), (wall, _) in results.items() if at == length}
        fastest = min(walls.values())
        size = min(batch for batch, wall in walls.items() if wall <= fastest * (1.0 + tolerance))
        chosen.append((length, size))
    chosen[-1] = (float("inf"), chosen[-1][1])
    merged: list[tuple[float, int]] = []
    for row in reversed(chosen):
        if merged and merged[-1][1] == row[1]:
            continue  # the longer row already covers this length with the same size
        merged.append(row)
    return tuple(reversed(merged))


def format_table(table: BatchTable) -> str:
    """The table as ``ESCRIBA_TRANSCRIPTION_BATCH_SIZES_*`` spells it (``120:4,inf:8``)."""
    return ",".join(f"{'inf' if math.isinf(up_to) else f'{up_to:g}'}:{size}" for up_to, size in table)


def _ints(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def _floats(raw: str) -> list[float]:
    return [float(x) for x in raw.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("audio", nargs="+", help="speech recordings to build the test audio from")
    parser.add_argument("--lengths", type=_floats, default=[30.0, 60.0, 120.0, 300.0], help="seconds")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from faster_whisper import decode_audio

    clips = [
        np.asarray(decode_audio(path, sampling_rate=SAMPLE_RATE_HZ), dtype=np.float32) for path in args.audio
    ]
    base = load(TranscriptionSettings)

    def report(length: float, batch: int, wall: float, cpu: float, words: int) -> None:
        print(
            f"{length:6.0f} s  batch {batch:3d}: wall {wall:7.2f} s, cpu {cpu:7.2f} s, {words} words",
            file=sys.stderr,
            flush=True,
        )

    results = measure(
        clips, base, lengths=args.lengths, batch_sizes=args.batch_sizes, repeats=args.repeats, report=report
    )
    print("wall s / cpu s" + "".join(f"{'b=' + str(b):>14}" for b in args.batch_sizes))
    for length in args.lengths:
        row = "".join(
            f"{results[(length, b)][0]:7.1f} /{results[(length, b)][1]:5.1f}" for b in args.batch_sizes
        )
        print(f"{length:6.0f} s audio " + row)
    print(f"suggested table (smallest batch within 5 % of the fastest): {format_table(tuned_table(results))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
