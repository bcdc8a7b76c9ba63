"""Cross-task batching: speech windows of many requests share one model call.

A short request has one or two 30 s windows. Decoded alone, each model call carries a batch of one,
which leaves a GPU mostly idle and pays the per-call overhead once per request. Here every request
prepares its windows on its own thread (VAD, mel features, language, prompt) and hands them to one
batching loop, which fills each model call with windows from whichever requests are waiting, then routes
every result back to its request and position. The text of a window depends only on that window and
its request's prompt, so sharing a call changes nothing in what a request gets back.

Windows can share a call only when everything CTranslate2 applies to the whole batch is equal: the
prompt (language, hotwords, initial prompt, timestamp mode: CTranslate2 needs the start-of-transcript
token at one position for all), beam size, temperature and whether words are aligned. That tuple is the
:class:`DecodeKey`; windows of different keys go in different calls.

The scheduling (:class:`CrossTaskBatcher`) is generic; :class:`WhisperBatchRunner` is the model call
(the encode, generate and alignment steps of faster-whisper's ``BatchedInferencePipeline.forward``) and
:func:`prepare_request` / :func:`assemble_segments` are the per-request steps before and after it, taken
from the same pipeline's ``transcribe`` so a request decodes exactly as it would there.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import (
    Segment as FwSegment,
)
from faster_whisper.transcribe import (
    Word as FwWord,
)
from faster_whisper.transcribe import (
    get_compression_ratio,
    get_suppressed_tokens,
    pad_or_trim,
    restore_speech_timestamps,
)
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from escriba.common.errors import TransientError

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - the item type, next to K(ey) and R(esult)
R = TypeVar("R")


class BatcherClosedError(TransientError):
    """Work arrived after the batching loop stopped (the process is shutting down): retry elsewhere."""

    reason = "batcher_closed"


# Scheduling ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Request(Generic[I, R]):
    """One request's items, where their results go, and how far the loop has taken them."""

    items: Sequence[I]
    weight: float
    arrived: float
    results: list[R | None]
    next_item: int = 0
    remaining: int = 0
    error: BaseException | None = None
    largest_batch: int = 0
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class BatchedResults(Generic[R]):
    """A request's results in the order of its items, and the largest batch size any of them ran in
    (the cap the loop chose, as a batch-size parameter would be reported)."""

    results: list[R]
    batch_size: int


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counts since start, read together: ``items`` went through ``batches`` calls (the largest had
    ``largest``), ``queued`` wait for one."""

    batches: int
    items: int
    largest: int
    queued: int = 0


class Slot(Generic[K, I, R]):
    """A request announced to the batcher (see :meth:`CrossTaskBatcher.preparing`)."""

    def __init__(self, batcher: CrossTaskBatcher[K, I, R]) -> None:
        self._batcher = batcher
        self.announced = True

    def run(self, key: K, items: Sequence[I], *, weight: float) -> BatchedResults[R]:
        """:meth:`CrossTaskBatcher.run`, ending the announcement as the items are queued."""
        return self._batcher._run_items(key, items, weight, self)


class CrossTaskBatcher(Generic[K, I, R]):
    """One thread that runs ``run(key, items)`` over items of many requests at once.

    ``batch_size(seconds)`` gives the cap for a batch from the audio-seconds of the requests waiting
    under its key, so a request alone gets exactly the batch size its own length would get, and a crowd
    of short requests gets the size meant for that much audio. The loop waits up to ``max_wait_s`` for a
    batch to fill, and only while a request announced with :meth:`preparing` may still add to it: a
    request alone never waits. Within a key the batch is filled round-robin across requests, so a short
    request never queues behind all the windows of a long one.
    """

    def __init__(
        self,
        run: Callable[[K, Sequence[I]], Sequence[R]],
        *,
        batch_size: Callable[[float], int],
        max_wait_s: float,
        name: str = "batcher",
    ) -> None:
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._run = run
        self._batch_size = batch_size
        self._max_wait_s = max_wait_s
        self._name = name
        self._cond = threading.Condition()
        self._queues: OrderedDict[K, deque[_Request[I, R]]] = OrderedDict()
        self._preparing = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._batches = 0
        self._items = 0
        self._largest = 0
        self._idle_since = time.monotonic()

    # Lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._closed:
                raise BatcherClosedError(f"{self._name} is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop after the work already queued; later submissions raise :class:`BatcherClosedError`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def queued(self) -> int:
        """Items waiting for a batch."""
        return self.stats.queued

    @property
    def stats(self) -> BatcherStats:
        with self._cond:
            queued = sum(self._waiting(queue) for queue in self._queues.values())
            return BatcherStats(self._batches, self._items, self._largest, queued)

    # Submission ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def preparing(self) -> Iterator[Slot[K, I, R]]:
        """Announce a request that will submit soon, so a batch being filled waits for it (at most
        ``max_wait_s``). Submit through the yielded slot: the announcement ends the moment its items
        are queued, with no gap in which the loop would see neither."""
        slot = Slot(self)
        with self._cond:
            self._preparing += 1
        try:
            yield slot
        finally:
            with self._cond:
                self._release(slot)

    def run(self, key: K, items: Sequence[I], *, weight: float) -> BatchedResults[R]:
        """Queue ``items`` under ``key`` and block until every one has its result (in order). The
        first failure of a batch holding one of them is raised here."""
        return self._run_items(key, items, weight, None)

    def _release(self, slot: Slot[K, I, R]) -> None:
        if slot.announced:
            slot.announced = False
            self._preparing -= 1
            self._cond.notify_all()

    def _run_items(
        self, key: K, items: Sequence[I], weight: float, slot: Slot[K, I, R] | None
    ) -> BatchedResults[R]:
        request: _Request[I, R] = _Request(
            items=items,
            weight=weight,
            arrived=time.monotonic(),
            results=[None] * len(items),
            remaining=len(items),
        )
        with self._cond:
            if slot is not None:
                self._release(slot)
            if not items:
                return BatchedResults([], 0)
            if self._closed or self._thread is None:
                raise BatcherClosedError(f"{self._name} is not running")
            self._queues.setdefault(key, deque()).append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return BatchedResults(cast(list[R], request.results), request.largest_batch)

    # The loop ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                picked = self._next_batch()
                if picked is None:
                    return
            key, cap, taken = picked
            items = [request.items[index] for request, index in taken]
            try:
                results = self._run(key, items)
                if len(results) != len(items):
                    raise RuntimeError(f"batch of {len(items)} items gave {len(results)} results")
            except BaseException as exc:  # every request in the batch must learn of it, not hang
                log.warning("batch failed", extra={"batcher": self._name, "items": len(items)})
                self._finish(taken, None, cap, exc)
            else:
                self._finish(taken, results, cap, None)
            self._idle_since = time.monotonic()

    def _next_batch(self) -> tuple[K, int, list[tuple[_Request[I, R], int]]] | None:
        """Under the lock: wait for work, then take one batch (``None`` once closed and drained)."""
        while not self._queues:
            if self._closed:
                return None
            self._cond.wait()
        key = next(iter(self._queues))
        queue = self._queues[key]
        # Requests still preparing get up to max_wait to join, counted from when the oldest item came or
        # the model went idle, whichever is later: after a long model call, the ones that prepared
        # during it are already queued, and those just behind them get the same short grace.
        deadline = max(queue[0].arrived, self._idle_since) + self._max_wait_s
        cap = self._cap(queue)
        while self._preparing > 0 and not self._closed and self._waiting(queue) < cap:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
            cap = self._cap(queue)
        taken: list[tuple[_Request[I, R], int]] = []
        while len(taken) < cap and queue:
            for request in list(queue):
                if len(taken) == cap:
                    break
                taken.append((request, request.next_item))
                request.next_item += 1
                if request.next_item == len(request.items):
                    queue.remove(request)
        # The next batch starts from another key if one waits, so no key starves another.
        del self._queues[key]
        if queue:
            self._queues[key] = queue
        self._batches += 1
        self._items += len(taken)
        self._largest = max(self._largest, len(taken))
        return key, cap, taken

    def _cap(self, queue: deque[_Request[I, R]]) -> int:
        return max(1, int(self._batch_size(sum(r.weight for r in queue))))

    @staticmethod
    def _waiting(queue: deque[_Request[I, R]]) -> int:
        return sum(len(r.items) - r.next_item for r in queue)

    def _finish(
        self,
        taken: list[tuple[_Request[I, R], int]],
        results: Sequence[R] | None,
        cap: int,
        error: BaseException | None,
    ) -> None:
        with self._cond:
            for position, (request, index) in enumerate(taken):
                request.largest_batch = max(request.largest_batch, cap)
                if error is not None:
                    request.error = request.error or error
                elif results is not None:
                    request.results[index] = results[position]
                request.remaining -= 1
                if request.remaining == 0 or request.error is not None:
                    self._drop(request)
                    request.done.set()

    def _drop(self, request: _Request[I, R]) -> None:
        """Take a finished or failed request's untaken items out of the queue."""
        for key, queue in list(self._queues.items()):
            if request in queue:
                queue.remove(request)
                if not queue:
                    del self._queues[key]


# Whisper ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodeKey:
    """What every window in one model call must share (see the module docstring)."""

    language: str
    prompt: tuple[int, ...]
    beam_size: int
    temperature: float
    word_timestamps: bool


@dataclass(frozen=True, slots=True)
class Window:
    """Up to 30 s of one request's speech, as the encoder takes it."""

    features: npt.NDArray[np.float32]  # (n_mels, 3000): log-mel, padded like the batched pipeline's
    offset_s: float  # start within the request's speech (silence VAD removed is not counted)
    duration_s: float


@dataclass(frozen=True, slots=True)
class WindowOutput:
    """One window decoded: faster-whisper's sub-segment dicts and, with word timestamps, the word
    alignment of its text."""

    segments: list[dict[str, Any]]
    alignment: list[dict[str, Any]]
    frames: int  # the window's length in encoder frames, as the alignment was computed with


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One request made ready for the batching loop, and what its transcript reports."""

    key: DecodeKey
    windows: list[Window]
    tokenizer: Tokenizer
    #: VAD speech chunks (samples) that map speech time back to the recording's; None: fixed windows.
    speech_chunks: list[dict[str, int]] | None
    language_probability: float
    duration_s: float
    speech_duration_s: float

    @property
    def language(self) -> str:
        return self.key.language


class WhisperBatchRunner:
    """The model call of a shared batch: encode, generate and (optionally) align, as
    ``BatchedInferencePipeline.forward`` does for the windows of one file."""

    def __init__(self, model: WhisperModel) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._tokenizers: dict[str, Tokenizer] = {}
        self._suppressed: dict[str, list[int]] = {}

    def tokenizer(self, language: str) -> Tokenizer:
        with self._lock:
            if language not in self._tokenizers:
                model = self._model
                self._tokenizers[language] = Tokenizer(
                    model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
                )
                self._suppressed[language] = get_suppressed_tokens(self._tokenizers[language], [-1])
            return self._tokenizers[language]

    def __call__(self, key: DecodeKey, windows: Sequence[Window]) -> list[WindowOutput]:
        model = self._model
        tokenizer = self.tokenizer(key.language)
        encoder_output = model.encode(np.stack([w.features for w in windows]))
        results = model.model.generate(
            encoder_output,
            [list(key.prompt) for _ in windows],
            beam_size=key.beam_size,
            patience=1.0,
            length_penalty=1.0,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=self._suppressed[key.language],
            return_scores=True,
            return_no_speech_prob=True,
            sampling_temperature=key.temperature,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        decoded: list[list[dict[str, Any]]] = []
        frames: list[int] = []
        for window, result in zip(windows, results, strict=True):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            size = int(math.ceil(window.duration_s) * model.frames_per_second)
            frames.append(size)
            subsegments, _, _ = model._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=tokens,
                time_offset=window.offset_s,
                segment_size=size,
                segment_duration=window.duration_s,
                seek=0,
            )
            segments = []
            for sub in subsegments:
                text = tokenizer.decode(sub["tokens"])
                segments.append(
                    {
                        "text": text,
                        "avg_logprob": avg_logprob,
                        "no_speech_prob": result.no_speech_prob,
                        "tokens": sub["tokens"],
                        "start": sub["start"],
                        "end": sub["end"],
                        "compression_ratio": get_compression_ratio(text),
                        "seek": int(window.offset_s * model.frames_per_second),
                    }
                )
            decoded.append(segments)
        alignments: list[list[dict[str, Any]]] = [[] for _ in windows]
        if key.word_timestamps:
            text_tokens = [
                [t for sub in segments for t in sub["tokens"] if t < tokenizer.eot] for segments in decoded
            ]
            alignments = model.find_alignment(tokenizer, text_tokens, encoder_output, frames)
        return [
            WindowOutput(segments, alignment, size)
            for segments, alignment, size in zip(decoded, alignments, frames, strict=True)
        ]


def prepare_request(
    model: WhisperModel,
    runner: WhisperBatchRunner,
    audio: npt.NDArray[np.float32],
    *,
    language: str | None,
    vad: VadOptions | None,
    windows_s: Sequence[dict[str, float]] = (),
    initial_prompt: str | None,
    hotwords: str | None,
    without_timestamps: bool,
    beam_size: int,
    temperature: float,
    word_timestamps: bool,
) -> PreparedRequest:
    """Cut the audio into windows (speech found by VAD, or the given fixed ``windows_s``), compute their
    features, settle the language and build the prompt: the steps of
    ``BatchedInferencePipeline.transcribe`` before its first model call."""
    rate = int(model.feature_extractor.sampling_rate)
    chunk_length = float(model.feature_extractor.chunk_length)
    duration = audio.shape[0] / rate
    speech_chunks: list[dict[str, int]] | None
    if vad is not None:
        speech_chunks = get_speech_timestamps(audio, vad)
        audio_chunks, metadata = collect_chunks(audio, speech_chunks, max_duration=chunk_length)
        clips = speech_chunks
    else:
        speech_chunks = None
        clips = [{k: int(v * rate) for k, v in w.items()} for w in windows_s]
        audio_chunks = [audio[c["start"] : c["end"]] for c in clips]
        metadata = [{"offset": c["start"] / rate, "duration": (c["end"] - c["start"]) / rate} for c in clips]
    speech_duration = sum(c["end"] - c["start"] for c in clips) / rate
    # Window by window, letting go of each stretch of audio once its features exist: on hours of audio
    # a list of every window's samples and another of every window's unpadded features add up.
    windows: list[Window] = []
    lead: list[npt.NDArray[np.float32]] = []  # the first 30 s of features, for language detection
    lead_frames = 0
    audio_chunks.reverse()
    for meta in metadata if speech_duration else ():
        features = model.feature_extractor(audio_chunks.pop())[..., :-1]
        if lead_frames < model.feature_extractor.nb_max_frames:
            lead.append(features)
            lead_frames += features.shape[-1]
        windows.append(Window(pad_or_trim(features), float(meta["offset"]), float(meta["duration"])))
    if language is None:
        if not model.model.is_multilingual:
            language, probability = "en", 1.0
        else:
            # As the pipeline does: on the first 30 s of features (it concatenates them all and keeps
            # those), with a dummy frame so that no speech still works.
            dummy = np.full((model.model.n_mels, 1), -1.5, dtype="float32")
            language, probability, _ = model.detect_language(
                features=np.concatenate([*lead, dummy], axis=1),
                language_detection_segments=1,
                language_detection_threshold=0.5,
            )
    else:
        if not model.model.is_multilingual:
            language = "en"
        probability = 1.0
    tokenizer = runner.tokenizer(language)
    prompt = model.get_prompt(
        tokenizer,
        previous_tokens=tokenizer.encode(initial_prompt) if initial_prompt is not None else [],
        without_timestamps=without_timestamps,
        hotwords=hotwords,
    )
    key = DecodeKey(language, tuple(prompt), beam_size, float(temperature), word_timestamps)
    return PreparedRequest(
        key, windows, tokenizer, speech_chunks, float(probability), duration, speech_duration
    )


#: The batched pipeline's own defaults (word punctuation merging), read from it rather than copied.
_PIPELINE_DEFAULTS = inspect.signature(BatchedInferencePipeline.transcribe).parameters


class _AlignedModel:
    """Stands in for the model inside ``WhisperModel.add_word_timestamps``, which needs only
    ``frames_per_second`` and ``find_alignment``: the alignment ran in the shared batch, while the
    per-word clean-up must run per request, because it carries the request's own last speech
    timestamp from window to window (sharing it across requests would move words)."""

    def __init__(self, frames_per_second: int, alignments: list[list[dict[str, Any]]]) -> None:
        self.frames_per_second = frames_per_second
        self._alignments = alignments

    def find_alignment(self, *_args: Any, **_kwargs: Any) -> list[list[dict[str, Any]]]:
        return self._alignments


def assemble_segments(
    model: WhisperModel,
    prepared: PreparedRequest,
    outputs: Sequence[WindowOutput],
    *,
    prepend_punctuations: str = _PIPELINE_DEFAULTS["prepend_punctuations"].default,
    append_punctuations: str = _PIPELINE_DEFAULTS["append_punctuations"].default,
) -> list[FwSegment]:
    """A request's decoded windows (in order) as faster-whisper segments on the recording's timeline,
    as ``BatchedInferencePipeline`` yields them."""
    key = prepared.key
    segmented = [[dict(s) for s in out.segments] for out in outputs]
    if key.word_timestamps and segmented:
        WhisperModel.add_word_timestamps(
            _AlignedModel(model.frames_per_second, [out.alignment for out in outputs]),
            segmented,
            prepared.tokenizer,
            None,
            [out.frames for out in outputs],
            prepend_punctuations,
            append_punctuations,
            0.0,
        )
    segments: list[FwSegment] = []
    for window in segmented:
        for sub in window:
            segments.append(
                FwSegment(
                    seek=sub["seek"],
                    id=len(segments) + 1,
                    text=sub["text"],
                    start=round(sub["start"], 3),
                    end=round(sub["end"], 3),
                    words=[FwWord(**w) for w in sub["words"]] if key.word_timestamps else None,
                    tokens=sub["tokens"],
                    avg_logprob=sub["avg_logprob"],
                    no_speech_prob=sub["no_speech_prob"],
                    compression_ratio=sub["compression_ratio"],
                    temperature=key.temperature,
                )
            )
    if prepared.speech_chunks:
        rate = int(model.feature_extractor.sampling_rate)
        segments = list(restore_speech_timestamps(segments, prepared.speech_chunks, rate))
    return segments
