"""Transcription benchmarks: the whole pipeline against plain faster-whisper, one long recording and a
crowd of short clips, plus where the model's time goes.

"Plain" is what a user of faster-whisper writes: one ``WhisperModel`` with the same model, device,
precision and threads as the pipeline's engine, and one ``BatchedInferencePipeline.transcribe`` call
per file (reading the file itself), with the same decoding options the pipeline uses by default and
the same batch size table. The pipeline run is a client uploading the file to the local stack and
waiting for the corrected transcript (``TaskService.Transcribe``): upload, object store, preprocess,
transcription, correction, PostgreSQL, events.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.vad import VadOptions

from bench import wer
from bench.repeats import order, percentile
from escriba.client import EscribaClient, make_spec
from escriba.pipeline.taskpb import status_from_pb
from escriba.transcription.batching import choose_batch_size, table_for_device
from escriba.transcription.devices import resolve_compute_type, resolve_cpu_threads, resolve_device
from escriba.transcription.engine import WhisperEngine, resolve_model_source
from escriba.transcription.settings import TranscriptionSettings
from escriba.v1 import tasks_pb2


class TimedModel:
    """Wraps the CTranslate2 Whisper model inside a ``WhisperModel`` and adds up the seconds spent in
    each of its calls, so a run can say how much of its wall time the model itself took."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {"encode": 0.0, "generate": 0.0, "align": 0.0}
        self.calls: dict[str, int] = {"encode": 0, "generate": 0, "align": 0}
        self.generate_batch_sizes: list[int] = []

    def _timed(self, name: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return getattr(self._inner, name)(*args, **kwargs)
        finally:
            with self._lock:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("encode", *args, **kwargs)

    def generate(self, encoder_output: Any, prompts: Sequence[Any], **kwargs: Any) -> Any:
        with self._lock:
            self.generate_batch_sizes.append(len(prompts))
        return self._timed("generate", encoder_output, prompts, **kwargs)

    def align(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("align", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def timing(model: WhisperModel) -> Iterator[TimedModel]:
    timed = TimedModel(model.model)
    model.model = timed
    try:
        yield timed
    finally:
        model.model = timed._inner


def profile_of(timed: TimedModel, wall_s: float) -> dict[str, float]:
    """Seconds in encode / generate / align and in everything else (VAD, mel features, word timing
    post-processing, Python, waiting), for a run of ``wall_s`` seconds."""
    model_s = sum(timed.seconds.values())
    sizes = timed.generate_batch_sizes
    return {
        "wall_s": wall_s,
        "encode_s": timed.seconds["encode"],
        "generate_s": timed.seconds["generate"],
        "align_s": timed.seconds["align"],
        "outside_model_s": max(0.0, wall_s - model_s),
        "model_calls": float(timed.calls["generate"]),
        "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
    }


# Plain faster-whisper --------------------------------------------------------------------------


class PlainWhisper:
    """faster-whisper as a user would run it, configured like the pipeline's engine: the same model,
    device, precision, decoding options and batch table, on every CPU the process may use in one
    model worker (faster-whisper's default; a loop over files makes one call at a time anyway). The
    engine's worker split (``ESCRIBA_TRANSCRIPTION_NUM_WORKERS``) is the engine's own, not copied."""

    def __init__(self, settings: TranscriptionSettings) -> None:
        source = resolve_model_source(settings.model)
        self.device = resolve_device(settings.device)
        self.model = WhisperModel(
            source.path_or_name,
            device=self.device,
            compute_type=resolve_compute_type(settings.compute_type, self.device),
            cpu_threads=resolve_cpu_threads(settings.cpus),
            num_workers=1,
            download_root=settings.download_root or None,
            local_files_only=settings.local_files_only,
        )
        self.settings = settings
        self.options = settings.default_options()

    def batch_size(self, duration_s: float) -> int:
        table = table_for_device(
            self.device, cpu=self.settings.batch_sizes_cpu, cuda=self.settings.batch_sizes_cuda
        )
        return choose_batch_size(duration_s, table)

    def transcribe(self, source: str | npt.NDArray[np.float32], duration_s: float) -> str:
        opts = self.options
        segments, _ = BatchedInferencePipeline(self.model).transcribe(
            source,
            language=opts.language,
            beam_size=opts.beam_size,
            temperature=opts.temperature,
            word_timestamps=opts.word_timestamps,
            # faster-whisper's default and its most accurate batched mode (timestamp tokens lose text
            # at window ends: SYSTRAN/faster-whisper#1427); the pipeline decodes the same way.
            without_timestamps=True,
            vad_filter=opts.vad.enabled,
            vad_parameters=VadOptions(
                threshold=opts.vad.threshold,
                min_speech_duration_ms=opts.vad.min_speech_duration_ms,
                max_speech_duration_s=opts.vad.max_speech_duration_s,
                min_silence_duration_ms=opts.vad.min_silence_duration_ms,
                speech_pad_ms=opts.vad.speech_pad_ms,
            ),
            batch_size=self.batch_size(duration_s),
        )
        return "".join(s.text for s in segments).strip()


# Pipeline ---------------------------------------------------------------------------------------


@dataclass
class PipelineRun:
    seconds: float
    task: tasks_pb2.Task

    @property
    def text(self) -> str:
        """What the user gets: the corrected text."""
        return self.task.result.corrected_text or self.task.result.text

    @property
    def timings_ms(self) -> dict[str, float]:
        t = self.task.timings
        return {
            "upload_ms": t.upload_ms,
            "queue_ms": t.queue_ms,
            "preprocess_ms": t.preprocess_ms,
            "transcription_ms": t.transcription_ms,
            "correction_ms": t.correction_ms,
            "total_ms": t.total_ms,
        }


async def through_pipeline(client: EscribaClient, path: Path) -> PipelineRun:
    """Upload ``path`` and wait for its corrected transcript; a task that does not complete is an error."""
    started = time.perf_counter()
    task = await client.transcribe(path, make_spec(path.name))
    seconds = time.perf_counter() - started
    status = status_from_pb(task.status)
    if status is None or status.value != "completed":
        raise RuntimeError(f"{path.name}: task ended {status}: {task.error}")
    return PipelineRun(seconds, task)


async def many_through_pipeline(
    client: EscribaClient, paths: Sequence[Path]
) -> tuple[float, list[PipelineRun]]:
    """All ``paths`` submitted at once; wall seconds from the first upload to the last transcript."""
    started = time.perf_counter()
    runs = await asyncio.gather(*(through_pipeline(client, p) for p in paths))
    return time.perf_counter() - started, list(runs)


# Measurements -------------------------------------------------------------------------------------


@dataclass
class LongComparison:
    audio_s: list[float]
    plain_s: list[float]
    pipeline_s: list[float]
    pipeline_timings_ms: list[dict[str, float]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    plain_texts: list[str] = field(default_factory=list)
    pipeline_texts: list[str] = field(default_factory=list)
    pipeline_runs: list[PipelineRun] = field(default_factory=list)

    @property
    def plain_wer(self) -> float:
        return corpus_wer(self.references, self.plain_texts)

    @property
    def pipeline_wer(self) -> float:
        return corpus_wer(self.references, self.pipeline_texts)

    @property
    def ratio(self) -> float:
        """RTFx of the pipeline over RTFx of plain, on the same recordings (time-weighted)."""
        return sum(self.plain_s) / sum(self.pipeline_s)

    @property
    def plain_rtfx(self) -> float:
        return sum(self.audio_s) / sum(self.plain_s)

    @property
    def pipeline_rtfx(self) -> float:
        return sum(self.audio_s) / sum(self.pipeline_s)


def corpus_wer(references: Sequence[str], texts: Sequence[str]) -> float:
    """Word error rate over all of ``texts`` (``bench.wer``: whisper-normalizer and jiwer)."""
    return wer.total(wer.score(r, t) for r, t in zip(references, texts, strict=True)).wer


async def compare_long(
    client: EscribaClient,
    plain: PlainWhisper,
    recordings: Sequence[tuple[Path, float, str]],
    *,
    repeat: int = 0,
) -> LongComparison:
    """Each recording once each way, alternating which side goes first (from recording to recording,
    and from one ``repeat`` to the next) so drift in the machine's load falls on both; the text of each
    side is kept for its WER."""
    result = LongComparison([], [], [])
    for index, (path, audio_s, reference) in enumerate(recordings):
        for side in order(repeat + index, "plain", "pipeline"):
            if side == "plain":
                started = time.perf_counter()
                text = await asyncio.to_thread(plain.transcribe, str(path), audio_s)
                result.plain_s.append(time.perf_counter() - started)
                result.plain_texts.append(text)
            else:
                run = await through_pipeline(client, path)
                result.pipeline_runs.append(run)
                result.pipeline_s.append(run.seconds)
                result.pipeline_timings_ms.append(run.timings_ms)
                result.pipeline_texts.append(run.text)
        result.audio_s.append(audio_s)
        result.references.append(reference)
    return result


@dataclass
class ShortClipsComparison:
    clips: int
    audio_s: float
    plain_s: float
    pipeline_s: float
    engine_plain_s: float
    engine_shared_s: float
    mean_timings_ms: dict[str, float]
    batches: dict[str, float]
    profile_plain: dict[str, float]
    profile_shared: dict[str, float]
    plain_wer: float = 0.0
    pipeline_wer: float = 0.0
    engine_plain_wer: float = 0.0
    engine_shared_wer: float = 0.0
    order: tuple[str, str] = ("plain", "pipeline")

    @property
    def ratio(self) -> float:
        return self.plain_s / self.pipeline_s

    @property
    def engine_ratio(self) -> float:
        return self.engine_plain_s / self.engine_shared_s


async def compare_short_clips(
    client: EscribaClient,
    plain: PlainWhisper,
    engine: WhisperEngine,
    clips: Sequence[tuple[Path, float]],
    samples: Sequence[npt.NDArray[np.float32]],
    references: Sequence[str],
    *,
    plain_first: bool = True,
) -> ShortClipsComparison:
    """The clips through plain faster-whisper one after another and all at once through the pipeline;
    then the same two ways on decoded samples, model calls timed, to separate the engine's gain from
    the pipeline's cost. ``plain_first`` says which side goes first in both pairs (a repeat flips it)."""
    audio_s = sum(seconds for _, seconds in clips)

    async def plain_files() -> tuple[float, list[str]]:
        started = time.perf_counter()
        texts = [await asyncio.to_thread(plain.transcribe, str(path), seconds) for path, seconds in clips]
        return time.perf_counter() - started, texts

    async def pipeline_files() -> tuple[float, list[PipelineRun], dict[str, float]]:
        batcher = engine.batcher
        before = batcher.stats if batcher is not None else None
        seconds, runs = await many_through_pipeline(client, [p for p, _ in clips])
        after = batcher.stats if batcher is not None else None
        batches = {"model_calls": 0.0, "windows": 0.0, "mean_batch": 0.0, "largest_batch": 0.0}
        if before is not None and after is not None and after.batches > before.batches:
            calls, windows = after.batches - before.batches, after.items - before.items
            batches = {
                "model_calls": float(calls),
                "windows": float(windows),
                "mean_batch": windows / calls,
                "largest_batch": float(after.largest),
            }
        return seconds, runs, batches

    async def plain_samples() -> tuple[float, list[str], dict[str, float]]:
        with timing(plain.model) as timed:
            started = time.perf_counter()
            texts = [
                await asyncio.to_thread(plain.transcribe, clip, seconds)
                for clip, (_, seconds) in zip(samples, clips, strict=True)
            ]
            seconds_taken = time.perf_counter() - started
        return seconds_taken, texts, profile_of(timed, seconds_taken)

    async def shared_samples() -> tuple[float, list[str], dict[str, float]]:
        with timing(engine.model) as timed:
            started = time.perf_counter()
            results = await asyncio.gather(*(engine.transcribe_async(clip) for clip in samples))
            seconds_taken = time.perf_counter() - started
        return seconds_taken, [r.text for r in results], profile_of(timed, seconds_taken)

    if plain_first:
        plain_s, plain_texts = await plain_files()
        pipeline_s, runs, batches = await pipeline_files()
        engine_plain_s, engine_plain_texts, profile_plain = await plain_samples()
        engine_shared_s, engine_shared_texts, profile_shared = await shared_samples()
    else:
        pipeline_s, runs, batches = await pipeline_files()
        plain_s, plain_texts = await plain_files()
        engine_shared_s, engine_shared_texts, profile_shared = await shared_samples()
        engine_plain_s, engine_plain_texts, profile_plain = await plain_samples()
    keys = runs[0].timings_ms.keys()
    mean_timings = {k: float(np.mean([r.timings_ms[k] for r in runs])) for k in keys}
    return ShortClipsComparison(
        clips=len(clips),
        audio_s=audio_s,
        plain_s=plain_s,
        pipeline_s=pipeline_s,
        engine_plain_s=engine_plain_s,
        engine_shared_s=engine_shared_s,
        mean_timings_ms=mean_timings,
        batches=batches,
        profile_plain=profile_plain,
        profile_shared=profile_shared,
        plain_wer=corpus_wer(references, plain_texts),
        pipeline_wer=corpus_wer(references, [run.text for run in runs]),
        engine_plain_wer=corpus_wer(references, engine_plain_texts),
        engine_shared_wer=corpus_wer(references, engine_shared_texts),
        order=("plain", "pipeline") if plain_first else ("pipeline", "plain"),
    )


@dataclass
class CacheHit:
    """A recording uploaded again after its first run: every stage's cache answers."""

    first_s: float
    cached_s: list[float]
    from_cache: bool
    first_wer: float
    cached_wer: float

    @property
    def p50_ms(self) -> float:
        return percentile(self.cached_s, 50) * 1000.0

    @property
    def p99_ms(self) -> float:
        return percentile(self.cached_s, 99) * 1000.0

    @property
    def speedup(self) -> float:
        """The first run over the median cached one (the first moves with the machine's speed; the
        absolute latencies are the figure to compare between runs)."""
        return self.first_s / percentile(self.cached_s, 50)


async def cache_hit(
    client: EscribaClient, path: Path, first: PipelineRun, reference: str, *, times: int = 20
) -> CacheHit:
    """The same upload ``times`` more times, one after another, after a ``first`` run."""
    seconds: list[float] = []
    from_cache = True
    text = ""
    for _ in range(times):
        run = await through_pipeline(client, path)
        seconds.append(run.seconds)
        from_cache = from_cache and run.task.result.transcript_from_cache
        text = run.text
    return CacheHit(
        first_s=first.seconds,
        cached_s=seconds,
        from_cache=from_cache,
        first_wer=corpus_wer([reference], [first.text]),
        cached_wer=corpus_wer([reference], [text]),
    )
