"""``make bench``: Escriba against the tools it replaces, side by side on this machine, in one run.

Every headline number is a ratio of two things measured in the same run on the same machine (or a
latency), so a slow or busy machine moves both sides. Prints a table and writes
``bench/results/latest.json``; see ``bench/README.md`` for what each key means.

    python -m bench.run                       # everything (several minutes on 2 CPU cores)
    python -m bench.run --only preprocess     # one part; merged into the existing results file
    python -m bench.run --device cuda --compute-type int8_float16 --only transcription \\
        --out bench/results/gpu-latest.json   # the GPU run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import audio
from bench.repeats import load_average, spread

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PARTS = ("transcription", "cli", "preprocess", "listing", "rss", "objects")

#: key -> (target, "min" when the value must reach it, "max" when it must stay under it, or None).
TARGETS: dict[str, tuple[float | None, str | None]] = {
    "pipeline_vs_plain_ratio": (0.9, "min"),
    # Speed only counts at equal accuracy: the WER of both sides, on the same recordings, beside it.
    "pipeline_vs_plain_wer_pipeline": (None, None),
    "pipeline_vs_plain_wer_plain": (None, None),
    "short_clips_throughput_ratio": (2.0, "min"),
    "short_clips_wer_pipeline": (None, None),
    "short_clips_wer_plain": (None, None),
    "short_clips_engine_throughput_ratio": (2.5, "min"),
    "short_clips_engine_wer_shared": (None, None),
    "short_clips_engine_wer_plain": (None, None),
    # 30 short real files: `escriba transcribe` (files in flight together) vs a plain faster-whisper loop.
    "cli_many_files_vs_plain_ratio": (1.0, "min"),
    "cli_many_files_wer_cli": (None, None),
    "cli_many_files_wer_plain": (None, None),
    "preprocess_vs_ffmpeg_loudnorm_ratio": (10.0, "min"),
    "cache_hit_speedup": (100.0, "min"),
    # The cached 5-minute upload as a latency: the ratio above moves with the first run's speed.
    "cache_hit_p50_ms": (None, None),
    "cache_hit_p99_ms": (None, None),
    "list_tasks_p99_ms": (None, None),
    "list_tasks_index_speedup": (None, None),
    "transcription_peak_rss_mb_60min": (None, None),
    # Preprocess peak RSS (the process, as the worker runs one job) at three lengths: flat, not growing.
    "preprocess_peak_rss_mb_10min": (None, None),
    "preprocess_peak_rss_mb_60min": (None, None),
    "preprocess_peak_rss_mb_240min": (None, None),
    "create_task_p99_ms": (None, None),
    "object_read_vs_nats_py_ratio": (None, None),
}

log = logging.getLogger("bench")


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# Transcription, caching and CreateTask: one local stack ----------------------------------------


async def build_long_files(
    folder: Path, long_s: float, seeds: Sequence[int]
) -> list[tuple[Path, float, str]]:
    files: list[tuple[Path, float, str]] = []
    for seed in seeds:
        samples, said = audio.joined_speech_with_text(long_s, seed=seed)
        path = folder / f"long-{seed}.mp3"
        await asyncio.to_thread(path.write_bytes, audio.encode_mp3(samples))
        files.append((path, audio.duration_s(samples), said))
    return files


async def build_clip_files(
    folder: Path, count: int, seed: int
) -> tuple[list[tuple[Path, float]], list[npt.NDArray[np.float32]], list[str]]:
    """``count`` short clips as MP3 files, decoded samples of those files, and their transcripts."""
    from faster_whisper import decode_audio

    clips_with_text = audio.short_clips(count, seed=seed)
    files: list[tuple[Path, float]] = []
    for index, (clip, _) in enumerate(clips_with_text):
        path = folder / f"clip-{seed}-{index:03d}.mp3"
        await asyncio.to_thread(path.write_bytes, audio.encode_mp3(clip))
        files.append((path, audio.duration_s(clip)))
    samples = [np.asarray(decode_audio(str(p)), dtype=np.float32) for p, _ in files]
    return files, samples, [text for _, text in clips_with_text]


#: Seeds of a repeat's recordings: every repeat uploads new bytes (no cache hit from an earlier one).
def repeat_seeds(repeat: int) -> tuple[tuple[int, int], int]:
    return (1 + 10 * repeat, 2 + 10 * repeat), 3 + 10 * repeat


async def _transcription(args: argparse.Namespace, keys: dict[str, Any], details: dict[str, Any]) -> None:
    """The long-file and short-clip comparisons ``--repeats`` times, interleaved (each repeat flips
    which side goes first, on recordings of its own), then the cache hit and CreateTask latency."""
    from bench import transcription as tr
    from escriba.client import EscribaClient
    from escriba.common.settings import load
    from escriba.local.stack import LocalStack, StackConfig
    from escriba.transcription.settings import TranscriptionSettings

    env = _engine_env(args)
    settings = load(TranscriptionSettings, {**os.environ, **env})
    with tempfile.TemporaryDirectory(prefix="escriba-bench-") as tmp:
        folder = Path(tmp)
        _say("loading plain faster-whisper and starting the local stack")
        plain = await asyncio.to_thread(tr.PlainWhisper, settings)
        config = StackConfig(port=0, env={"ESCRIBA_LOG_LEVEL": "WARNING", **env})
        async with LocalStack(config) as stack, EscribaClient(stack.address) as client:
            engine = stack.transcription_engine
            assert engine is not None
            details["engine"] = {
                "device": engine.device,
                "compute_type": engine.compute_type,
                "model": engine.model_name,
                "cpu_threads": engine.cpu_threads,
                "num_workers": engine.num_workers,
                "request_slots": engine.request_slots,
                "cross_task_batching": engine.batcher is not None,
                "encoder_context": engine.encoder_context,
            }
            # Warm both sides (first calls initialise thread pools, VAD sessions, caches).
            warm = audio.DATA_DIR / "jfk.flac"
            await asyncio.to_thread(plain.transcribe, str(warm), 11.0)
            await tr.through_pipeline(client, warm)

            longs: list[tr.LongComparison] = []
            shorts: list[tr.ShortClipsComparison] = []
            clip_files: list[tuple[Path, float]] = []
            cache_measured = False
            for repeat in range(args.repeats):
                long_seeds, clip_seed = repeat_seeds(repeat)
                tag = f"repeat {repeat + 1}/{args.repeats}"
                _say(f"{tag}: building recordings (2 x {args.long_s:g}+ s, {args.clips} short clips, MP3)")
                long_files = await build_long_files(folder, args.long_s, long_seeds)
                clip_files, clip_samples, clip_texts = await build_clip_files(folder, args.clips, clip_seed)

                _say(f"{tag}: long recordings, plain faster-whisper vs pipeline")
                long = await tr.compare_long(client, plain, long_files, repeat=repeat)
                longs.append(long)
                _say(
                    f"{tag}: pipeline_vs_plain_ratio {long.ratio:.3f} (WER pipeline {long.pipeline_wer:.4f},"
                    f" plain {long.plain_wer:.4f}; load {os.getloadavg()[0]:.2f})"
                )
                if not cache_measured:
                    cache_measured = True
                    _say(f"the same upload {args.cache_repeats} more times (caches)")
                    hit = await tr.cache_hit(
                        client,
                        long_files[0][0],
                        long.pipeline_runs[0],
                        long_files[0][2],
                        times=args.cache_repeats,
                    )
                    keys["cache_hit_speedup"] = hit.speedup
                    keys["cache_hit_p50_ms"] = hit.p50_ms
                    keys["cache_hit_p99_ms"] = hit.p99_ms
                    details["cache_hit"] = {
                        "first_s": hit.first_s,
                        "cached_s": hit.cached_s,
                        "cached_p50_ms": hit.p50_ms,
                        "cached_p99_ms": hit.p99_ms,
                        "transcript_from_cache": hit.from_cache,
                        "wer_first": hit.first_wer,
                        "wer_cached": hit.cached_wer,
                        "upload_bytes": long_files[0][0].stat().st_size,
                        "audio_s": long_files[0][1],
                    }

                _say(f"{tag}: {len(clip_files)} short clips, plain loop vs all at once")
                short = await tr.compare_short_clips(
                    client, plain, engine, clip_files, clip_samples, clip_texts, plain_first=repeat % 2 == 0
                )
                shorts.append(short)
                _say(
                    f"{tag}: short_clips_throughput_ratio {short.ratio:.3f} (WER pipeline"
                    f" {short.pipeline_wer:.4f}, plain {short.plain_wer:.4f}), engine"
                    f" {short.engine_ratio:.3f} (WER shared {short.engine_shared_wer:.4f}, plain"
                    f" {short.engine_plain_wer:.4f}); load {os.getloadavg()[0]:.2f}"
                )

            figures = {
                "pipeline_vs_plain_ratio": spread([c.ratio for c in longs]),
                "pipeline_vs_plain_wer_pipeline": spread([c.pipeline_wer for c in longs]),
                "pipeline_vs_plain_wer_plain": spread([c.plain_wer for c in longs]),
                "short_clips_throughput_ratio": spread([c.ratio for c in shorts]),
                "short_clips_wer_pipeline": spread([c.pipeline_wer for c in shorts]),
                "short_clips_wer_plain": spread([c.plain_wer for c in shorts]),
                "short_clips_engine_throughput_ratio": spread([c.engine_ratio for c in shorts]),
                "short_clips_engine_wer_shared": spread([c.engine_shared_wer for c in shorts]),
                "short_clips_engine_wer_plain": spread([c.engine_plain_wer for c in shorts]),
            }
            for key, figure in figures.items():
                keys[key] = figure.median
                details.setdefault("spreads", {})[key] = figure.as_dict()
            details["pipeline_vs_plain"] = {
                "repeats": [
                    {
                        "audio_s": c.audio_s,
                        "plain_s": c.plain_s,
                        "pipeline_s": c.pipeline_s,
                        "plain_rtfx": c.plain_rtfx,
                        "pipeline_rtfx": c.pipeline_rtfx,
                        "wer_pipeline": c.pipeline_wer,
                        "wer_plain": c.plain_wer,
                        "pipeline_stage_timings_ms": c.pipeline_timings_ms,
                    }
                    for c in longs
                ]
            }
            details["short_clips"] = {
                "repeats": [
                    {
                        "clips": c.clips,
                        "order": list(c.order),
                        "audio_s": c.audio_s,
                        "plain_s": c.plain_s,
                        "pipeline_s": c.pipeline_s,
                        "plain_rtfx": c.audio_s / c.plain_s,
                        "pipeline_rtfx": c.audio_s / c.pipeline_s,
                        "wer_pipeline": c.pipeline_wer,
                        "wer_plain": c.plain_wer,
                        "pipeline_mean_stage_timings_ms": c.mean_timings_ms,
                        "pipeline_batches": c.batches,
                        "engine_plain_s": c.engine_plain_s,
                        "engine_shared_s": c.engine_shared_s,
                        "engine_wer_plain": c.engine_plain_wer,
                        "engine_wer_shared": c.engine_shared_wer,
                        "profile_plain_loop": c.profile_plain,
                        "profile_shared_batches": c.profile_shared,
                    }
                    for c in shorts
                ]
            }

            _say("CreateTask latency")
            keys["create_task_p99_ms"], details["create_task"] = await _create_task_p99(
                client, stack.address, clip_files[0][0]
            )


async def _cli(args: argparse.Namespace, keys: dict[str, Any], details: dict[str, Any]) -> None:
    from bench import cli_files
    from bench import transcription as tr
    from escriba.client import EscribaClient
    from escriba.common.settings import load
    from escriba.local.stack import LocalStack, StackConfig
    from escriba.transcription.settings import TranscriptionSettings

    env = _engine_env(args)
    settings = load(TranscriptionSettings, {**os.environ, **env})
    with tempfile.TemporaryDirectory(prefix="escriba-bench-cli-") as tmp:
        files = await asyncio.to_thread(cli_files.short_files, Path(tmp))
        _say("loading plain faster-whisper and starting the local stack")
        plain = await asyncio.to_thread(tr.PlainWhisper, settings)
        config = StackConfig(port=0, http_port=0, env={"ESCRIBA_LOG_LEVEL": "WARNING", **env})
        async with LocalStack(config) as stack, EscribaClient(stack.address) as client:
            warm = audio.DATA_DIR / "jfk.flac"
            await asyncio.to_thread(plain.transcribe, str(warm), 11.0)
            await tr.through_pipeline(client, warm)
            _say(f"{len(files)} short real files: plain faster-whisper loop vs `escriba transcribe`")
            result = await cli_files.compare(stack.address, plain, files)
    keys["cli_many_files_vs_plain_ratio"] = result.ratio
    keys["cli_many_files_wer_cli"] = result.cli_wer
    keys["cli_many_files_wer_plain"] = result.plain_wer
    details["cli_many_files"] = {
        "files": result.files,
        "audio_s": result.audio_s,
        "plain_s": result.plain_s,
        "cli_s": result.cli_s,
        "jobs": result.jobs,
        "cli_failures": result.cli_failures,
        "cli_includes": "process start-up, connection, uploads, the whole pipeline",
    }


def _engine_env(args: argparse.Namespace) -> dict[str, str]:
    env = {}
    if args.device:
        env["ESCRIBA_TRANSCRIPTION_DEVICE"] = args.device
    if args.compute_type:
        env["ESCRIBA_TRANSCRIPTION_COMPUTE_TYPE"] = args.compute_type
    if args.model:
        env["ESCRIBA_TRANSCRIPTION_MODEL"] = args.model
    return env


async def _create_task_p99(client: Any, address: str, clip: Path) -> tuple[float, dict[str, Any]]:
    """``bench.load``'s measurement when that module offers one (``create_task_p99_ms(address)``),
    else a simple one: CreateTask calls of a short clip, 4 at a time, latency of each call."""
    with contextlib.suppress(ImportError):
        load_module = importlib.import_module("bench.load")
        measure: Callable[..., Any] | None = getattr(load_module, "create_task_p99_ms", None)
        if measure is not None:
            value = measure(address)
            if inspect.isawaitable(value):
                value = await value
            return float(value), {"source": "bench.load.create_task_p99_ms"}
    from escriba.client import make_spec

    latencies: list[float] = []
    slots = asyncio.Semaphore(4)

    async def one() -> None:
        async with slots:
            started = time.perf_counter()
            await client.create_task(clip, make_spec(clip.name))
            latencies.append((time.perf_counter() - started) * 1000.0)

    await asyncio.gather(*(one() for _ in range(100)))
    return float(np.percentile(latencies, 99)), {
        "source": "bench.run (100 CreateTask calls of a short MP3, 4 at a time, pipeline running)",
        "calls": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50)),
        "upload_bytes": len(await asyncio.to_thread(clip.read_bytes)),
    }


# The other parts ----------------------------------------------------------------------------------


async def _preprocess(args: argparse.Namespace, keys: dict[str, Any], details: dict[str, Any]) -> None:
    from bench import preprocess

    samples = audio.joined_speech(args.long_s, seed=1)
    data = audio.encode_mp3(samples)
    _say("preprocess vs ffmpeg loudnorm (5-minute MP3)")
    result = await asyncio.to_thread(preprocess.compare, data, audio.duration_s(samples))
    keys["preprocess_vs_ffmpeg_loudnorm_ratio"] = result.speed_ratio("command")
    keys["preprocess_vs_ffmpeg_loudnorm_mono_first_ratio"] = result.speed_ratio("mono_first")
    details["preprocess"] = {
        "audio_s": result.audio_s,
        "escriba_s": result.escriba_s,
        "escriba_lufs": result.escriba_lufs,
        "ffmpeg_s": result.ffmpeg_s,
        "ffmpeg_lufs": result.ffmpeg_lufs,
        "loudness_gap_lu": {chain: result.loudness_gap_lu(chain) for chain in result.ffmpeg_s},
        "escriba_profile_s": result.profile,
    }


async def _listing(args: argparse.Namespace, keys: dict[str, Any], details: dict[str, Any]) -> None:
    from bench import listing

    _say(f"ListTasks on {args.rows:,} tasks, with and without the indexes")
    result = await listing.run(rows=args.rows)
    keys["list_tasks_p99_ms"] = result.p99_ms
    keys["list_tasks_index_speedup"] = result.speedup
    details["list_tasks"] = {
        "rows": result.rows,
        "fill_s": result.fill_s,
        "indexed_p50_ms": result.p(result.indexed_ms, 50),
        "indexed_p99_ms": result.p99_ms,
        "no_indexes_p50_ms": result.p(result.plain_ms, 50),
        "no_indexes_p99_ms": result.p(result.plain_ms, 99),
        "calls": {"indexed": len(result.indexed_ms), "no_indexes": len(result.plain_ms)},
        "median_ms_by_listing": {
            k: {"indexed": v[0], "no_indexes": v[1]} for k, v in result.per_filter_median_ms.items()
        },
    }


async def _rss(args: argparse.Namespace, keys: dict[str, Any], details: dict[str, Any]) -> None:
    from bench import rss

    minutes = args.rss_s / 60
    _say(f"peak memory of a transcription worker on {minutes:g} minutes (limit {args.rss_timeout_s:g} s)")
    env = {**os.environ, "ESCRIBA_LOG_LEVEL": "WARNING", **_engine_env(args)}
    result = await asyncio.to_thread(rss.measure, args.rss_s, args.rss_timeout_s, env)
    keys["transcription_peak_rss_mb_60min"] = result.peak_rss_mb
    details["transcription_rss"] = {
        "audio_s": result.audio_s,
        "speech_s": result.speech_s,
        "words": result.words,
        "peak_rss_mb": result.peak_rss_mb,
        "rss_after_model_load_mb": result.model_rss_mb,
        "wall_s": result.wall_s,
        "complete": result.complete,
    }
    _say("peak memory of preprocessing 10, 60 and 240 minutes (speech and silence, 44.1 kHz stereo MP3)")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="escriba-bench-preprocess-rss-") as tmp:
        for minutes in (10, 60, 240):
            upload = rss.preprocess_input(Path(tmp) / f"{minutes}min.mp3", minutes)
            run = await asyncio.to_thread(rss.measure_preprocess, upload, "plain")
            upload.unlink()
            keys[f"preprocess_peak_rss_mb_{minutes}min"] = run.peak_rss_mb
            runs[f"{minutes}min"] = {
                "audio_s": run.audio_s,
                "base_rss_mb": run.base_rss_mb,
                "peak_rss_mb": run.peak_rss_mb,
                "growth_mb": run.growth_mb,
                "wall_s": run.wall_s,
            }
    details["preprocess_rss"] = {
        "what": "escriba.preprocess.engine.Preprocessor.preprocess from a file to a file, as the worker"
        " runs a job; base: the process before it, codecs warmed up",
        **runs,
    }


async def _objects(args: argparse.Namespace, keys: dict[str, Any], details: dict[str, Any]) -> None:
    from bench import objects

    _say("object-store reads: direct gets against nats-py's ObjectStore.get (5 and 60 MiB)")
    result = await objects.compare()
    keys["object_read_vs_nats_py_ratio"] = result.ratio(60)
    details["object_reads"] = {
        "direct_s": result.direct_s,
        "nats_py_s": result.nats_py_s,
        "ratio_by_mib": {size: result.ratio(size) for size in result.direct_s},
    }


# Report -----------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _met(key: str, value: float) -> bool | None:
    target, sense = TARGETS.get(key, (None, None))
    if target is None or not math.isfinite(value):
        return None
    return value >= target if sense == "min" else value <= target


def _table(keys: dict[str, Any], spreads: dict[str, dict[str, Any]]) -> str:
    """One line per key; a figure measured in several repeats shows its median, then [min-max]."""
    lines = [f"{'key':<40} {'value':>10} {'[min-max] of repeats':>24} {'target':>8}  met", "-" * 92]
    for key, value in keys.items():
        target, sense = TARGETS.get(key, (None, None))
        met = _met(key, value)
        shown = "" if target is None else (">= " if sense == "min" else "<= ") + f"{target:g}"
        mark = {True: "yes", False: "NO", None: ""}[met]
        figure = spreads.get(key)
        span = ""
        if figure is not None and len(figure["values"]) > 1:
            span = f"[{figure['min']:.3f}-{figure['max']:.3f}] x{len(figure['values'])}"
        lines.append(f"{key:<40} {value:>10.3f} {span:>24} {shown:>8}  {mark}")
    return "\n".join(lines)


def _at_least_one(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _merged_details(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A partial run's details over the earlier file's; the spreads merge key by key, so a part run
    alone keeps the other parts' ranges."""
    merged = {**previous, **new}
    merged["spreads"] = {**previous.get("spreads", {}), **new.get("spreads", {})}
    return merged


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts (repeatable)")
    parser.add_argument("--skip", action="append", choices=PARTS, default=[], help="leave these parts out")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (JSON)")
    parser.add_argument("--device", default="", help="transcription device (cpu, cuda); default: the setting")
    parser.add_argument("--compute-type", default="", help="CTranslate2 precision; default: the setting")
    parser.add_argument("--model", default="", help="model directory or name; default: the bundled tiny.en")
    parser.add_argument("--long-s", type=float, default=300.0, help="length of the long recordings (s)")
    parser.add_argument("--clips", type=int, default=100, help="short clips submitted at once")
    parser.add_argument(
        "--repeats",
        type=_at_least_one,
        default=3,
        help="interleaved repeats of each transcription comparison (median and min-max reported)",
    )
    parser.add_argument(
        "--cache-repeats",
        type=_at_least_one,
        default=20,
        help="cached uploads timed for the cache-hit p50/p99",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="tasks in the ListTasks table")
    parser.add_argument("--rss-s", type=float, default=3600.0, help="memory test recording length (s)")
    parser.add_argument("--rss-timeout-s", type=float, default=900.0, help="memory test time limit (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    parts = [p for p in (args.only or PARTS) if p not in args.skip]
    runners: dict[str, Callable[[argparse.Namespace, dict[str, Any], dict[str, Any]], Awaitable[None]]] = {
        "transcription": _transcription,
        "cli": _cli,
        "preprocess": _preprocess,
        "listing": _listing,
        "rss": _rss,
        "objects": _objects,
    }
    keys: dict[str, Any] = {}
    details: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    loads: dict[str, dict[str, dict[str, float]]] = {}
    for part in parts:
        started = time.perf_counter()
        before = load_average()
        await runners[part](args, keys, details)
        loads[part] = {"before": before, "after": load_average()}
        seconds[part] = time.perf_counter() - started
        _say(f"{part}: load average {before['1m']:.2f} before, {loads[part]['after']['1m']:.2f} after")

    previous: dict[str, Any] = {}
    if set(parts) != set(PARTS) and args.out.exists():
        previous = json.loads(args.out.read_text())
    merged_keys = {**previous.get("keys", {}), **keys}
    order = [*TARGETS, *sorted(set(merged_keys) - set(TARGETS))]
    ordered_keys = {k: merged_keys[k] for k in order if k in merged_keys}
    merged_details = _merged_details(previous.get("details", {}), details)
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parts_run": parts,
        "machine": _machine(),
        "keys": ordered_keys,
        "targets": {
            k: {"target": TARGETS[k][0], "sense": TARGETS[k][1], "met": _met(k, merged_keys[k])}
            for k in TARGETS
            if k in merged_keys and TARGETS[k][0] is not None
        },
        "seconds_by_part": {**previous.get("seconds_by_part", {}), **seconds},
        "load_average_by_part": {**previous.get("load_average_by_part", {}), **loads},
        "details": merged_details,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    print()
    print(_table(ordered_keys, merged_details["spreads"]))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
