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
import sys
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from escriba.common.settings import load
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
    results: dict[tuple[float, int], tuple[float, float]] = {}
    for batch in args.batch_sizes:
        table = ((float("inf"), batch),)
        engine = WhisperEngine(dataclasses.replace(base, batch_sizes_cpu=table, batch_sizes_cuda=table))
        engine.load()
        engine.transcribe(clips[0])  # warm-up: first-call allocations are not what we measure
        for length in args.lengths:
            audio = build_speech(clips, length)
            best = (float("inf"), float("inf"))
            for _ in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                transcript = engine.transcribe(audio)
                best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
            results[(length, batch)] = best
            print(
                f"{length:6.0f} s  batch {batch:3d}: wall {best[0]:7.2f} s, cpu {best[1]:7.2f} s, "
                f"{len(transcript.text.split())} words",
                file=sys.stderr,
                flush=True,
            )
        engine.close()
        print(
            f"# model {engine.model_name}, device {engine.device}, compute {engine.compute_type}, "
            f"threads {engine.cpu_threads}",
            file=sys.stderr,
        )

    print("wall s / cpu s" + "".join(f"{'b=' + str(b):>14}" for b in args.batch_sizes))
    for length in args.lengths:
        row = "".join(
            f"{results[(length, b)][0]:7.1f} /{results[(length, b)][1]:5.1f}" for b in args.batch_sizes
        )
        print(f"{length:6.0f} s audio " + row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
