"""``make eval``: word error rate of Escriba against plain faster-whisper, side by side, on real speech.

Three sides, the same recordings, the same model, device, precision and CPU threads:

- ``pipeline``: every file uploaded to the local stack and transcribed as ``escriba transcribe`` runs
  it (upload, preprocess, transcription, correction), with the server's defaults; the corrected text
  is what a user gets, so that is what is scored;
- ``plain_batched``: ``BatchedInferencePipeline(model).transcribe(file, batch_size=8)`` with its own
  defaults (VAD on), what a user of faster-whisper's fast path writes;
- ``plain_sequential``: ``WhisperModel.transcribe(file, vad_filter=True)``, its slow, careful path.

It prints a per-file table (errors of each side, the longest stretch of detected speech without text)
and writes JSON with ``wer_pipeline``, ``wer_plain_batched``, ``wer_plain_sequential`` and
``wer_ratio`` (pipeline over the better plain side). Nothing here is tuned per file; the same
defaults are what users get on recordings this corpus does not hold.

    python -m bench.eval                               # all three sides (about 5 minutes on 2 cores)
    python -m bench.eval --model bundled --model package:base   # WER per model, side by side
    python -m bench.eval --sides pipeline,plain_batched
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import wer

RESULTS = Path(__file__).resolve().parent / "results" / "eval.json"
SIDES = ("pipeline", "plain_batched", "plain_sequential")
PLAIN_BATCH_SIZE = 8
#: "no speech silently dropped": the most detected speech a file may have without any text (s).
MAX_UNCOVERED_S = 3.0


def _say(message: str) -> None:
    print(f"[eval {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class SideResult:
    text: str
    segments: list[tuple[float, float]]
    seconds: float
    score: wer.Score = field(default_factory=lambda: wer.Score(0, 0))
    uncovered_s: float = 0.0


# Sides --------------------------------------------------------------------------------------------


def _plain_model(env: dict[str, str]) -> Any:
    """The model as ``make bench``'s plain side loads it: the engine's model, device, precision and
    threads."""
    from bench.transcription import PlainWhisper
    from escriba.common.settings import load
    from escriba.transcription.settings import TranscriptionSettings

    return PlainWhisper(load(TranscriptionSettings, env)).model


def _plain(model: Any, side: str, recording: wer.Recording) -> SideResult:
    from faster_whisper import BatchedInferencePipeline

    started = time.perf_counter()
    if side == "plain_batched":
        raw, _ = BatchedInferencePipeline(model).transcribe(str(recording.path), batch_size=PLAIN_BATCH_SIZE)
    else:
        raw, _ = model.transcribe(str(recording.path), vad_filter=True)
    segments = list(raw)
    return SideResult(
        text="".join(s.text for s in segments).strip(),
        segments=[(float(s.start), float(s.end)) for s in segments],
        seconds=time.perf_counter() - started,
    )


async def _pipeline(recordings: Sequence[wer.Recording], env: dict[str, str], jobs: int) -> list[SideResult]:
    from escriba.client import EscribaClient, make_spec
    from escriba.local.stack import LocalStack, StackConfig
    from escriba.pipeline.taskpb import status_from_pb

    config = StackConfig(port=0, env={"ESCRIBA_LOG_LEVEL": "WARNING", **env})
    slots = asyncio.Semaphore(jobs)
    async with LocalStack(config) as stack, EscribaClient(stack.address) as client:

        async def one(recording: wer.Recording) -> SideResult:
            async with slots:
                started = time.perf_counter()
                task = await client.transcribe(recording.path, make_spec(recording.name))
                seconds = time.perf_counter() - started
            status = status_from_pb(task.status)
            if status is None or status.value != "completed":
                raise RuntimeError(f"{recording.name}: task ended {status}: {task.error}")
            result = task.result
            return SideResult(
                text=result.corrected_text or result.text,
                segments=[(s.start_s, s.end_s) for s in result.segments],
                seconds=seconds,
            )

        return list(await asyncio.gather(*(one(r) for r in recordings)))


# Run ----------------------------------------------------------------------------------------------


def _decoded(recording: wer.Recording) -> Any:
    from faster_whisper import decode_audio

    return np.asarray(decode_audio(str(recording.path)), dtype=np.float32)


async def evaluate(
    recordings: Sequence[wer.Recording], sides: Sequence[str], env: dict[str, str], jobs: int
) -> dict[str, list[SideResult]]:
    results: dict[str, list[SideResult]] = {}
    if "pipeline" in sides:
        _say(f"pipeline: {len(recordings)} files through the local stack ({jobs} at a time)")
        results["pipeline"] = await _pipeline(recordings, env, jobs)
    plain_sides = [s for s in sides if s != "pipeline"]
    if plain_sides:
        model = await asyncio.to_thread(_plain_model, env)
        for side in plain_sides:
            _say(f"{side}: {len(recordings)} files")
            results[side] = [await asyncio.to_thread(_plain, model, side, r) for r in recordings]
    _say("scoring (whisper-normalizer + jiwer) and finding uncovered speech (Silero VAD)")
    for index, recording in enumerate(recordings):
        speech = wer.speech_stretches(await asyncio.to_thread(_decoded, recording))
        for side_results in results.values():
            r = side_results[index]
            r.score = wer.score(recording.reference, r.text)
            r.uncovered_s = wer.longest_uncovered(speech, r.segments)
    return results


def report(recordings: Sequence[wer.Recording], results: dict[str, list[SideResult]]) -> dict[str, Any]:
    sides = list(results)
    header = f"{'file':<44} {'s':>6} {'words':>5} " + " ".join(f"{s[:16]:>16}" for s in sides)
    lines = [header, "-" * len(header)]
    files = []
    for index, recording in enumerate(recordings):
        cells = []
        entry: dict[str, Any] = {"file": recording.name, "duration_s": recording.duration_s}
        for side in sides:
            r = results[side][index]
            cells.append(f"{r.score.errors:>5} err {r.uncovered_s:>5.1f}s")
            entry[side] = {
                "errors": r.score.errors,
                "wer": r.score.wer,
                "longest_uncovered_speech_s": r.uncovered_s,
                "seconds": r.seconds,
                "text": r.text,
            }
        entry["words"] = results[sides[0]][index].score.words
        files.append(entry)
        lines.append(
            f"{recording.name[:44]:<44} {recording.duration_s:>6.1f} {entry['words']:>5} " + " ".join(cells)
        )
    totals = {side: wer.total(r.score for r in results[side]) for side in sides}
    lines.append("-" * len(header))
    lines.append(
        f"{'WER (errors / words)':<57} "
        + " ".join(f"{totals[s].wer:>7.2%} {totals[s].errors:>3}/{totals[s].words:<4}" for s in sides)
    )
    print("\n".join(lines))
    summary: dict[str, Any] = {f"wer_{side}": totals[side].wer for side in sides}
    plain = [totals[s].wer for s in sides if s.startswith("plain_")]
    if "pipeline" in totals and plain:
        best = min(plain)
        summary["wer_ratio"] = totals["pipeline"].wer / best if best else float("inf")
    for side in sides:
        summary[f"max_uncovered_speech_s_{side}"] = max(r.uncovered_s for r in results[side])
    if "pipeline" in results:
        summary["files_with_uncovered_speech_over_3s"] = [
            recordings[i].name for i, r in enumerate(results["pipeline"]) if r.uncovered_s > MAX_UNCOVERED_S
        ]
    return {"summary": summary, "errors": {s: totals[s].errors for s in sides}, "files": files}


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="model to measure, repeatable (each one in turn, WER per model): bundled, package:base,"
        " a model directory or a cached name; default: the bundled tiny.en",
    )
    parser.add_argument("--device", default="", help="transcription device (cpu, cuda); default: the setting")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--jobs", type=int, default=4, help="files in flight through the pipeline")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (JSON)")
    parser.add_argument(
        "--files", default="", help="only files whose name contains one of these (comma-separated)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sides = [s for s in args.sides.split(",") if s]
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown sides: {', '.join(sorted(unknown))}")
    recordings = wer.corpus()
    if args.files:
        wanted = [w for w in args.files.split(",") if w]
        recordings = [r for r in recordings if any(w in r.name for w in wanted)]
    by_model: dict[str, Any] = {}
    for model in args.model or [""]:
        env = dict(os.environ)
        if model:
            env["ESCRIBA_TRANSCRIPTION_MODEL"] = model
        if args.device:
            env["ESCRIBA_TRANSCRIPTION_DEVICE"] = args.device
        started = time.perf_counter()
        results = await evaluate(recordings, sides, env, args.jobs)
        by_model[model or "tiny.en (bundled)"] = {
            "seconds": time.perf_counter() - started,
            **report(recordings, results),
        }
    first = next(iter(by_model.values()))
    out = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": next(iter(by_model)),
        "corpus": {"files": len(recordings), "audio_s": sum(r.duration_s for r in recordings)},
        **first,
        # Every model measured, side by side on the same recordings (the first is also at the top level).
        "models": {name: result["summary"] for name, result in by_model.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(wer.as_json(out), indent=2) + "\n")
    for name, result in by_model.items():
        print(f"\n{name}")
        for key, value in result["summary"].items():
            print(f"  {key:<40} {value}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
