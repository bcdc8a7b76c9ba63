"""``make bench-gpu``: the GPU run in one go, on a CUDA machine with the bundled (or a mounted) model.

A GPU node is usually lent for minutes, not hours, so the run is one command with a time budget
(8 minutes by default) that leaves numbers however it ends:

1. ``device``: CTranslate2 must see a CUDA device, and the model must load and transcribe on it
   (missing CUDA or cuDNN libraries show up here, in seconds, not after the recordings are built);
2. ``tune``: ``escriba.transcription.batchbench`` measures batch sizes by audio length and picks the
   CUDA batch table (the smallest batch within 5 % of the fastest, for each length);
3. the transcription benchmarks of ``make bench`` with that table: two long recordings against plain
   faster-whisper, the cached upload again (p50/p99), and 100 and 300 short clips at once (the
   pipeline, and the engine alone on decoded samples), each from interleaved repeats, WER beside each.

Every finished step, and every repeat, rewrites ``bench/results/gpu.json`` (atomically) and a short
text summary beside it, and prints its figures, so a run cut off by the budget or by the machine going
back still leaves everything measured until then. A repeat is started only when the time left covers
what the previous one of its kind took. Never run by the tests or CI: it needs a GPU.

    python -m bench.gpu                             # defaults: int8_float16, tiny.en, 8 minutes
    python -m bench.gpu --model /models/faster-whisper-large-v3 --budget-s 600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.repeats import Spread, load_average, spread

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = RESULTS_DIR / "gpu.json"
DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "data"
TUNE_AUDIO = ("jfk.flac", "stereo_diarization.wav", "hotwords.mp3")
#: Seconds kept back at the end: stopping the local stack and writing the last results.
RESERVE_S = 20.0
#: No benchmark repeat takes less (building the recordings alone takes seconds): with less time left
#: the run stops there rather than start one only to cut it off.
MIN_REPEAT_S = 10.0


class NoCudaError(RuntimeError):
    """This machine cannot run the GPU benchmark (no device, or the model does not run on it)."""


# Arguments --------------------------------------------------------------------------------------


def _ints(raw: str) -> list[int]:
    values = [int(x) for x in raw.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {raw!r}")
    return values


def _floats(raw: str) -> list[float]:
    values = [float(x) for x in raw.split(",") if x.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, got {raw!r}")
    return values


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {raw!r}")
    return value


def _count(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {raw!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (JSON)")
    parser.add_argument(
        "--summary", type=Path, default=None, help="text summary (default: the results file with .txt)"
    )
    parser.add_argument("--budget-s", type=_positive, default=480.0, help="the whole run's time limit (s)")
    parser.add_argument("--model", default="", help="model directory or name; default: the bundled tiny.en")
    parser.add_argument("--compute-type", default="int8_float16", help="CTranslate2 precision on the GPU")
    parser.add_argument(
        "--lengths", type=_floats, default=[30.0, 120.0, 300.0, 600.0], help="tuning: audio lengths (s)"
    )
    parser.add_argument(
        "--batch-sizes", type=_ints, default=[8, 16, 32, 64], help="tuning: batch sizes to measure"
    )
    parser.add_argument("--tune-repeats", type=_count, default=2, help="tuning: runs per cell (best kept)")
    parser.add_argument(
        "--tune-share", type=float, default=0.3, help="tuning: most of the budget it may take (fraction)"
    )
    parser.add_argument(
        "--batch-table",
        default="",
        help="skip tuning and use this CUDA table (SECONDS:BATCH pairs, e.g. '600:16,inf:32')",
    )
    parser.add_argument("--clips", type=_ints, default=[100, 300], help="short clips submitted at once")
    parser.add_argument("--repeats", type=_count, default=3, help="interleaved repeats of each comparison")
    parser.add_argument("--long-s", type=_positive, default=300.0, help="length of the long recordings (s)")
    parser.add_argument("--cache-repeats", type=_count, default=20, help="cached uploads timed (p50/p99)")
    args = parser.parse_args(argv)
    if not 0.0 < args.tune_share < 1.0:
        parser.error("--tune-share must be between 0 and 1")
    if args.summary is None:
        args.summary = args.out.with_suffix(".txt")
    return args


# Time budget ------------------------------------------------------------------------------------


class Budget:
    """The run's time limit, and what each step may still take of it."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_s = total_s
        self._clock = clock
        self._started = clock()

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    @property
    def remaining_s(self) -> float:
        return max(0.0, self.total_s - self.elapsed_s)

    def allows(self, estimate_s: float, reserve_s: float = RESERVE_S) -> bool:
        """Whether a step expected to take ``estimate_s`` fits, ``reserve_s`` kept for the end."""
        return self.remaining_s - reserve_s >= estimate_s

    def timeout_s(self, reserve_s: float = RESERVE_S) -> float:
        """How long the next step may run before it is cut off (at least a second, so it can start)."""
        return max(1.0, self.remaining_s - reserve_s)


# Results as they come ---------------------------------------------------------------------------


class PartialResults:
    """The results file and its text summary, rewritten after every step and every repeat, so what a
    cut-off run leaves on disk is everything it measured. ``complete`` turns true only at the end."""

    def __init__(
        self, path: Path, summary_path: Path, budget: Budget, *, echo: Callable[[str], None] | None = None
    ) -> None:
        self.path = path
        self.summary_path = summary_path
        self.budget = budget
        self._echo = echo or (
            lambda line: print(f"[bench-gpu {time.strftime('%H:%M:%S')}] {line}", flush=True)
        )
        self.data: dict[str, Any] = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "complete": False,
            "budget_s": budget.total_s,
            "elapsed_s": 0.0,
            "load_average_at_start": load_average(),
            "steps": {},
            "keys": {},
            "spreads": {},
            "details": {},
        }

    def say(self, line: str) -> None:
        self._echo(line)

    def step(self, name: str, status: str, **payload: Any) -> None:
        """A step's outcome: ``done``, ``skipped``, ``failed`` or ``cut off`` (with the reason)."""
        self.data["steps"][name] = {"status": status, "at_s": round(self.budget.elapsed_s, 1), **payload}
        reason = payload.get("reason") or payload.get("error") or ""
        self.say(f"{name}: {status}" + (f" ({reason})" if reason else ""))
        self.write()

    def figure(self, key: str, values: Sequence[float]) -> Spread:
        """A figure from its repeats so far: the median is the key's value, the range beside it."""
        figure = spread(values)
        self.data["keys"][key] = figure.median
        self.data["spreads"][key] = figure.as_dict()
        return figure

    def value(self, key: str, value: float) -> None:
        self.data["keys"][key] = value

    def detail(self, name: str, value: Any) -> None:
        self.data["details"][name] = value

    def finish(self) -> None:
        """The run ended: complete when no step failed or was cut off."""
        self.data["complete"] = all(s["status"] in ("done", "skipped") for s in self.data["steps"].values())
        self.write()

    def summary(self) -> str:
        lines = [
            f"bench-gpu {self.data['generated_at']}: "
            + ("complete" if self.data["complete"] else "PARTIAL (cut off or failed)")
            + f", {self.data['elapsed_s']:.0f} s of {self.data['budget_s']:.0f} s",
        ]
        device = self.data["details"].get("device")
        if device:
            lines.append(f"device: {device.get('name', '?')}, model {device.get('model', '?')}")
        table = self.data["details"].get("batch_table_cuda")
        if table:
            lines.append(f"CUDA batch table: {table}")
        for name, step in self.data["steps"].items():
            if step["status"] != "done":
                lines.append(f"step {name}: {step['status']} {step.get('reason') or step.get('error') or ''}")
        for key, value in self.data["keys"].items():
            figure = self.data["spreads"].get(key)
            if figure is not None and len(figure["values"]) > 1:
                lines.append(
                    f"{key}: {value:.3f} [{figure['min']:.3f}-{figure['max']:.3f}] x{len(figure['values'])}"
                )
            else:
                lines.append(f"{key}: {value:.3f}")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.budget.elapsed_s, 1)
        self.data["load_average_now"] = load_average()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for target, text in (
            (self.path, json.dumps(self.data, indent=2) + "\n"),
            (self.summary_path, self.summary()),
        ):
            # Whole files only: a run killed mid-write leaves the previous version, never half of one.
            temporary = target.with_name(f".{target.name}.tmp")
            temporary.write_text(text)
            os.replace(temporary, target)


# The device -------------------------------------------------------------------------------------


def check_cuda() -> dict[str, Any]:
    """What CTranslate2 sees of CUDA; :class:`NoCudaError` when it sees no device."""
    import ctranslate2

    count = ctranslate2.get_cuda_device_count()
    if count < 1:
        raise NoCudaError(
            "no CUDA device: CTranslate2 sees 0 GPUs (ctranslate2.get_cuda_device_count()). make bench-gpu "
            "runs only on a machine with an NVIDIA GPU, its driver and the CUDA 12 libraries; on a CPU "
            "machine use make bench."
        )
    info: dict[str, Any] = {
        "cuda_devices": count,
        "compute_types": sorted(ctranslate2.get_supported_compute_types("cuda")),
        "ctranslate2": ctranslate2.__version__,
    }
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            if out:
                info["name"], info["memory"], info["driver"] = [
                    p.strip() for p in out.splitlines()[0].split(",")
                ]
    return info


def engine_env(args: argparse.Namespace, table: str = "") -> dict[str, str]:
    env = {"ESCRIBA_TRANSCRIPTION_DEVICE": "cuda", "ESCRIBA_TRANSCRIPTION_COMPUTE_TYPE": args.compute_type}
    if args.model:
        env["ESCRIBA_TRANSCRIPTION_MODEL"] = args.model
    if table:
        env["ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CUDA"] = table
    return env


def _probe_model(args: argparse.Namespace) -> dict[str, Any]:
    """Load the model on the GPU and transcribe jfk.flac: the libraries a GPU run needs, proven."""
    from faster_whisper import decode_audio

    from escriba.common.settings import load
    from escriba.transcription.engine import WhisperEngine
    from escriba.transcription.settings import TranscriptionSettings

    engine = WhisperEngine(load(TranscriptionSettings, {**os.environ, **engine_env(args)}))
    try:
        engine.load()
        started = time.perf_counter()
        text = engine.transcribe(decode_audio(str(DATA_DIR / "jfk.flac"))).text
        return {
            "model": engine.model_name,
            "compute_type": engine.compute_type,
            "load_s": engine.load_seconds,
            "jfk_s": time.perf_counter() - started,
            "jfk_text": text,
        }
    except Exception as exc:
        raise NoCudaError(
            f"CTranslate2 sees a CUDA device but the model does not run on it: {exc} (check the NVIDIA "
            "driver, the CUDA 12 cuBLAS and cuDNN 9 libraries, and --compute-type)"
        ) from exc
    finally:
        engine.close()


def _tune(args: argparse.Namespace, budget: Budget, results: PartialResults) -> str:
    """The CUDA batch table from measurements, within the tuning share of the budget."""
    from faster_whisper import decode_audio

    from escriba.common.settings import load
    from escriba.transcription import batchbench
    from escriba.transcription.settings import TranscriptionSettings

    clips = [decode_audio(str(DATA_DIR / name)) for name in TUNE_AUDIO]
    base = load(TranscriptionSettings, {**os.environ, **engine_env(args)})
    cells: list[dict[str, float]] = []

    def report(length: float, batch: int, wall: float, cpu: float, words: int) -> None:
        cells.append({"length_s": length, "batch": batch, "wall_s": wall, "cpu_s": cpu, "words": words})
        results.say(f"tune: {length:g} s, batch {batch}: {wall:.2f} s")
        results.detail("tune_cells", cells)

    deadline = time.monotonic() + min(budget.remaining_s * args.tune_share, budget.timeout_s())
    measured = batchbench.measure(
        clips,
        base,
        lengths=args.lengths,
        batch_sizes=args.batch_sizes,
        repeats=args.tune_repeats,
        deadline=deadline,
        report=report,
    )
    if not measured:
        return ""
    return batchbench.format_table(batchbench.tuned_table(measured))


# The transcription benchmarks ---------------------------------------------------------------------


async def _benchmarks(args: argparse.Namespace, table: str, budget: Budget, results: PartialResults) -> None:
    from bench import audio
    from bench import run as bench_run
    from bench import transcription as tr
    from escriba.client import EscribaClient
    from escriba.common.settings import load
    from escriba.local.stack import LocalStack, StackConfig
    from escriba.transcription.settings import TranscriptionSettings

    env = engine_env(args, table)
    settings = load(TranscriptionSettings, {**os.environ, **env})
    with tempfile.TemporaryDirectory(prefix="escriba-bench-gpu-") as tmp:
        folder = Path(tmp)
        plain = await asyncio.to_thread(tr.PlainWhisper, settings)
        config = StackConfig(port=0, env={"ESCRIBA_LOG_LEVEL": "WARNING", **env})
        async with LocalStack(config) as stack, EscribaClient(stack.address) as client:
            engine = stack.transcription_engine
            assert engine is not None
            results.detail(
                "engine",
                {
                    "device": engine.device,
                    "compute_type": engine.compute_type,
                    "model": engine.model_name,
                    "request_slots": engine.request_slots,
                    "encoder_context": engine.encoder_context,
                },
            )
            warm = audio.DATA_DIR / "jfk.flac"
            await asyncio.to_thread(plain.transcribe, str(warm), 11.0)
            await tr.through_pipeline(client, warm)

            async def long_repeat(repeat: int) -> None:
                long_seeds, _ = bench_run.repeat_seeds(repeat)
                files = await bench_run.build_long_files(folder, args.long_s, long_seeds)
                long = await tr.compare_long(client, plain, files, repeat=repeat)
                longs.append(long)
                results.figure("pipeline_vs_plain_ratio", [c.ratio for c in longs])
                results.figure("pipeline_vs_plain_wer_pipeline", [c.pipeline_wer for c in longs])
                results.figure("pipeline_vs_plain_wer_plain", [c.plain_wer for c in longs])
                results.say(
                    f"long repeat {repeat + 1}: ratio {long.ratio:.3f}, pipeline {long.pipeline_rtfx:.0f}x,"
                    f" plain {long.plain_rtfx:.0f}x real time"
                )
                if repeat == 0:
                    hit = await tr.cache_hit(
                        client, files[0][0], long.pipeline_runs[0], files[0][2], times=args.cache_repeats
                    )
                    results.value("cache_hit_p50_ms", hit.p50_ms)
                    results.value("cache_hit_p99_ms", hit.p99_ms)
                    results.value("cache_hit_speedup", hit.speedup)
                    results.detail(
                        "cache_hit",
                        {"first_s": hit.first_s, "cached_s": hit.cached_s, "wer_cached": hit.cached_wer},
                    )

            def short_repeat(count: int) -> Callable[[int], Any]:
                shorts: list[tr.ShortClipsComparison] = []

                async def one(repeat: int) -> None:
                    _, clip_seed = bench_run.repeat_seeds(repeat)
                    files, samples, texts = await bench_run.build_clip_files(folder, count, clip_seed + count)
                    short = await tr.compare_short_clips(
                        client, plain, engine, files, samples, texts, plain_first=repeat % 2 == 0
                    )
                    shorts.append(short)
                    for key, values in (
                        ("short_clips_throughput_ratio", [c.ratio for c in shorts]),
                        ("short_clips_wer_pipeline", [c.pipeline_wer for c in shorts]),
                        ("short_clips_wer_plain", [c.plain_wer for c in shorts]),
                        ("short_clips_engine_throughput_ratio", [c.engine_ratio for c in shorts]),
                        ("short_clips_engine_wer_shared", [c.engine_shared_wer for c in shorts]),
                        ("short_clips_engine_wer_plain", [c.engine_plain_wer for c in shorts]),
                    ):
                        results.figure(f"{key}_{count}", values)
                    results.detail(
                        f"short_clips_{count}",
                        [
                            {
                                "audio_s": c.audio_s,
                                "plain_s": c.plain_s,
                                "pipeline_s": c.pipeline_s,
                                "engine_plain_s": c.engine_plain_s,
                                "engine_shared_s": c.engine_shared_s,
                                "batches": c.batches,
                                "profile_plain_loop": c.profile_plain,
                                "profile_shared_batches": c.profile_shared,
                            }
                            for c in shorts
                        ],
                    )
                    results.say(
                        f"{count} clips repeat {repeat + 1}: pipeline {short.ratio:.2f}x plain, engine"
                        f" {short.engine_ratio:.2f}x, {short.batches['mean_batch']:.1f} windows per call"
                    )

                return one

            longs: list[tr.LongComparison] = []
            kinds: list[tuple[str, Callable[[int], Any]]] = [("long", long_repeat)]
            kinds += [(f"clips_{count}", short_repeat(count)) for count in args.clips]
            for name, body in kinds:
                await _repeated(name, body, args.repeats, budget, results)


async def _repeated(
    name: str,
    body: Callable[[int], Any],
    repeats: int,
    budget: Budget,
    results: PartialResults,
    *,
    min_repeat_s: float = MIN_REPEAT_S,
) -> None:
    """``repeats`` runs of one benchmark while the budget lasts: a repeat starts only when the time
    left covers the previous one's, and one that overruns is cut off (what finished is kept)."""
    last_s = 0.0
    done = 0
    for repeat in range(repeats):
        if not budget.allows(max(min_repeat_s, last_s * 1.1)):
            results.step(
                name,
                "cut off",
                repeats=done,
                reason=f"{budget.remaining_s:.0f} s left, a repeat took {last_s:.0f} s",
            )
            return
        started = budget.elapsed_s
        try:
            await asyncio.wait_for(body(repeat), timeout=budget.timeout_s())
        except TimeoutError:
            results.step(name, "cut off", repeats=done, reason="the time budget ran out mid-repeat")
            return
        last_s = budget.elapsed_s - started
        done += 1
    results.step(name, "done", repeats=done)


# The run ------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, budget: Budget | None = None) -> int:
    budget = budget or Budget(args.budget_s)
    results = PartialResults(args.out, args.summary, budget)
    try:
        device = check_cuda()
        device.update(
            await asyncio.wait_for(asyncio.to_thread(_probe_model, args), timeout=budget.timeout_s())
        )
    except (NoCudaError, TimeoutError) as exc:
        reason = str(exc) or "loading the model on the GPU did not finish within the budget"
        results.step("device", "failed", error=reason)
        print(f"bench-gpu: {reason}", file=sys.stderr)
        return 2
    results.detail("device", device)
    results.step("device", "done")

    table = args.batch_table
    if table:
        results.step("tune", "skipped", reason="--batch-table given")
    else:
        try:
            table = await asyncio.to_thread(_tune, args, budget, results)
        except Exception as exc:  # a failed tuning still leaves the benchmarks with the default table
            results.step("tune", "failed", error=f"{type(exc).__name__}: {exc}")
        else:
            results.step(
                "tune",
                "done" if table else "cut off",
                table=table,
                reason="" if table else "no cell measured",
            )
    results.detail("batch_table_cuda", table or "(the default ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CUDA)")

    try:
        await asyncio.wait_for(
            _benchmarks(args, table, budget, results), timeout=budget.timeout_s(reserve_s=5.0)
        )
    except TimeoutError:
        results.step("benchmarks", "cut off", reason="the time budget ran out")
    else:
        results.step("benchmarks", "done")
    results.finish()
    print(results.summary(), end="")
    print(f"written to {args.out} and {args.summary}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
