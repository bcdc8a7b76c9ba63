"""Cross-task batching on the real tiny.en model: windows of concurrent requests go through one model
call, and each request gets back exactly its own text, words and timings, as if it had run alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from faster_whisper import decode_audio

from escriba.common.settings import load
from escriba.transcript import Transcript
from escriba.transcription.engine import SAMPLE_RATE_HZ, WhisperEngine
from escriba.transcription.settings import TranscriptionSettings
from tests.support import media
from tests.support.text import JFK_REFERENCE, STEREO_LEFT, STEREO_RIGHT, normalize, wer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

Samples = npt.NDArray[np.float32]
DATA = Path(__file__).parents[1] / "data"
# One model worker, so one batching loop decides what shares a call (what these tests count); two
# workers are the last test's.
BASE_ENV = {
    "ESCRIBA_TRANSCRIPTION_DEVICE": "cpu",
    "ESCRIBA_TRANSCRIPTION_CPUS": "2",
    "ESCRIBA_TRANSCRIPTION_NUM_WORKERS": "1",
}


class CountingModel:
    """Wraps the loaded CTranslate2 Whisper model and records the batch size of every generate call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.generate_batches: list[int] = []

    def generate(self, features: Any, prompts: Sequence[Sequence[int]], **kwargs: Any) -> Any:
        with self._lock:
            self.generate_batches.append(len(prompts))
        return self._inner.generate(features, prompts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _held_engine(**env: str) -> Iterator[WhisperEngine]:
    # A long batch wait: a test holds the loop with an announced request until all of its requests
    # are queued, then lets it go; a request alone never waits whatever this is.
    settings = load(
        TranscriptionSettings, {**BASE_ENV, "ESCRIBA_TRANSCRIPTION_BATCH_MAX_WAIT_MS": "10000", **env}
    )
    whisper = WhisperEngine(settings)
    whisper.load()
    yield whisper
    whisper.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[WhisperEngine]:
    """Every window encoded with the full 30 s, so windows of any length can share a call."""
    yield from _held_engine(ESCRIBA_TRANSCRIPTION_ADAPTIVE_ENCODER_CONTEXT="false")


@pytest.fixture(scope="module")
def adaptive() -> Iterator[WhisperEngine]:
    """The default: a short window's context is its speech plus a margin, in steps."""
    yield from _held_engine()


@pytest.fixture
def counting(engine: WhisperEngine) -> Iterator[CountingModel]:
    model = engine.model
    counter = CountingModel(model.model)
    model.model = counter
    try:
        yield counter
    finally:
        model.model = counter._inner


def load_mono(name: str) -> Samples:
    return np.asarray(decode_audio(str(DATA / name)), dtype=np.float32)


@pytest.fixture(scope="module")
def clips() -> dict[str, Samples]:
    stereo, rate = media.speech("stereo_diarization.wav")
    to_16k = {i: media.resample(stereo[i], rate, SAMPLE_RATE_HZ).astype(np.float32) for i in (0, 1)}
    return {
        "jfk": load_mono("jfk.flac"),
        "left": to_16k[0],
        "right": to_16k[1],
        "hotwords": load_mono("hotwords.mp3"),
    }


async def run_held(
    engine: WhisperEngine, windows: int, calls: Sequence[Awaitable[Transcript]]
) -> list[Transcript]:
    """Start the requests while an announced request keeps the batching loop waiting, and let it go once
    all ``windows`` of them are queued: what shares a call is then decided by the batcher alone, not by
    which thread happened to finish its VAD first."""
    batcher = engine.batcher
    assert batcher is not None
    before = batcher.stats.items
    with batcher.preparing():
        tasks = [asyncio.ensure_future(call) for call in calls]
        # Queued or already taken (a full batch goes without waiting for the announcement to end).
        while (stats := batcher.stats).queued + stats.items - before < windows:
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.01)
    return list(await asyncio.gather(*tasks))


def assert_same_transcript(shared: Transcript, alone: Transcript) -> None:
    assert shared.text == alone.text
    assert [s.text for s in shared.segments] == [s.text for s in alone.segments]
    shared_words = [w for s in shared.segments for w in s.words]
    alone_words = [w for s in alone.segments for w in s.words]
    assert [w.word for w in shared_words] == [w.word for w in alone_words]
    for a, b in zip(shared_words, alone_words, strict=True):
        assert a.start_s == pytest.approx(b.start_s, abs=0.05)
        assert a.end_s == pytest.approx(b.end_s, abs=0.05)


async def test_windows_of_three_requests_share_one_model_call(
    engine: WhisperEngine, counting: CountingModel, clips: dict[str, Samples]
) -> None:
    # One request forces English, two leave it to the model (tiny.en is English-only): same prompt.
    english = engine.default_options.with_changes(language="en")
    results = await run_held(
        engine,
        3,
        [
            engine.transcribe_async(clips["jfk"], english),
            engine.transcribe_async(clips["left"]),
            engine.transcribe_async(clips["right"]),
        ],
    )
    assert counting.generate_batches == [3]
    jfk, left, right = results
    assert wer(JFK_REFERENCE, jfk.text) <= 0.10, jfk.text
    assert wer(STEREO_LEFT, left.text) <= 0.15, left.text
    assert wer(STEREO_RIGHT, right.text) <= 0.25, right.text
    for transcript, clip in zip(results, (clips["jfk"], clips["left"], clips["right"]), strict=True):
        assert transcript.language == "en"
        assert transcript.batch_size == engine.batch_size_for(20.0)
        words = [w for s in transcript.segments for w in s.words]
        assert words and [w.start_s for w in words] == sorted(w.start_s for w in words)
        assert words[0].start_s >= 0.0 and words[-1].end_s <= clip.shape[0] / SAMPLE_RATE_HZ + 0.01
    assert normalize(jfk.segments[-1].words[-1].word) == "country"
    # Each request got exactly what it gets alone.
    counting.generate_batches.clear()
    alone = [
        engine.transcribe(clips["jfk"], english),
        engine.transcribe(clips["left"]),
        engine.transcribe(clips["right"]),
    ]
    assert counting.generate_batches == [1, 1, 1]
    for shared, single in zip(results, alone, strict=True):
        assert_same_transcript(shared, single)


async def test_a_long_request_and_a_short_one_each_get_their_windows_in_order(
    engine: WhisperEngine, counting: CountingModel, clips: dict[str, Samples]
) -> None:
    gap = np.zeros(SAMPLE_RATE_HZ // 2, dtype=np.float32)
    long = np.concatenate([clips["jfk"], gap, clips["left"], gap] * 5)  # about 85 s: several windows
    # The same two sentences five times over are "too repetitive" by Whisper's compression-ratio rule:
    # without fallback, every window goes through exactly one model call, which this test counts.
    once = engine.default_options.with_changes(temperature_fallback=False)
    alone = engine.transcribe(long, once)
    long_windows = sum(counting.generate_batches)
    assert long_windows >= 3
    counting.generate_batches.clear()
    long_result, short_result = await run_held(
        engine,
        long_windows + 1,
        [engine.transcribe_async(long, once), engine.transcribe_async(clips["right"])],
    )
    # The short request's window rode along with the long one's: no call of its own.
    cap = engine.batch_size_for((long.shape[0] + clips["right"].shape[0]) / SAMPLE_RATE_HZ)
    assert sum(counting.generate_batches) == long_windows + 1
    assert len(counting.generate_batches) == -(-(long_windows + 1) // cap)
    assert_same_transcript(long_result, alone)
    # Nothing of one request shows up in the other's text.
    assert normalize(long_result.text).count("not what your country") >= 2
    assert "horizon" not in normalize(long_result.text)
    starts = [s.start_s for s in long_result.segments]
    assert starts == sorted(starts) and long_result.segments[-1].end_s > 70.0
    assert wer(STEREO_RIGHT, short_result.text) <= 0.25, short_result.text
    assert "country" not in normalize(short_result.text)


class EncodeShapes:
    """Wraps the loaded CTranslate2 Whisper model and records the shape of every encode call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def encode(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        self.shapes.append(tuple(np.asarray(features).shape))
        return self._inner.encode(features, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_with_adaptive_context_a_call_holds_windows_of_one_context_size(
    adaptive: WhisperEngine, clips: dict[str, Samples]
) -> None:
    """A short clip shares calls only with windows of its own context size: none is encoded longer
    (slower, and read differently) because of what it was batched with, so it reads as it does alone.
    jfk.flac is telephone-band (an old broadcast), so it keeps the full 30 s."""
    model = adaptive.model
    spy = EncodeShapes(model.model)
    model.model = spy
    try:
        jfk, left, right = await run_held(
            adaptive,
            3,
            [
                adaptive.transcribe_async(clips["jfk"]),
                adaptive.transcribe_async(clips["left"]),
                adaptive.transcribe_async(clips["right"]),
            ],
        )
        shared_shapes = sorted(spy.shapes)
        spy.shapes.clear()
        alone = [adaptive.transcribe(clips[name]) for name in ("jfk", "left", "right")]
    finally:
        model.model = spy._inner
    # The two 5 s clips in one call at 10 s of context, jfk alone at 30 s: not one call at 30 s.
    assert shared_shapes == [(1, 80, 3000), (2, 80, 1000)]
    assert sorted(spy.shapes) == [(1, 80, 1000), (1, 80, 1000), (1, 80, 3000)]
    assert wer(JFK_REFERENCE, jfk.text) <= 0.10, jfk.text
    assert wer(STEREO_LEFT, left.text) <= 0.15, left.text
    assert wer(STEREO_RIGHT, right.text) <= 0.25, right.text
    for shared, single in zip((jfk, left, right), alone, strict=True):
        assert_same_transcript(shared, single)


async def test_requests_with_different_prompts_do_not_share_a_call(
    engine: WhisperEngine, counting: CountingModel, clips: dict[str, Samples]
) -> None:
    hinted = engine.default_options.with_changes(hotwords="ComfyUI")
    plain, with_hotword = await run_held(
        engine,
        2,
        [engine.transcribe_async(clips["jfk"]), engine.transcribe_async(clips["hotwords"], hinted)],
    )
    assert sorted(counting.generate_batches) == [1, 1]
    assert wer(JFK_REFERENCE, plain.text) <= 0.10, plain.text
    # The product name, not "comfy eye" (its case moves with the CPU's int8 kernels: "comfyUI" on some).
    assert "comfyui" in with_hotword.text.lower()


def test_the_shared_path_decodes_as_faster_whisper_batched_pipeline(
    engine: WhisperEngine, clips: dict[str, Samples]
) -> None:
    settings = load(TranscriptionSettings, {**BASE_ENV, "ESCRIBA_TRANSCRIPTION_CROSS_TASK_BATCHING": "false"})
    reference = WhisperEngine(settings)
    reference.load()
    try:
        assert reference.batcher is None
        assert reference.request_slots == settings.max_concurrency
        assert engine.request_slots >= max(size for _, size in settings.batch_sizes_cpu)
        gap = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)
        audio = np.concatenate([clips["jfk"], gap, clips["hotwords"], gap, clips["left"]] * 2)
        for options in (
            engine.default_options,
            engine.default_options.with_changes(word_timestamps=False),
            engine.default_options.with_vad_changes(enabled=False),
        ):
            shared, pipeline = engine.transcribe(audio, options), reference.transcribe(audio, options)
            assert_same_transcript(shared, pipeline)
            assert shared.segments == pipeline.segments
            assert shared.speech_duration_s == pipeline.speech_duration_s
            assert shared.batch_size == pipeline.batch_size
    finally:
        reference.close()


class Overlap:
    """Wraps the loaded CTranslate2 Whisper model and records how many generate calls ran at once."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._running = 0
        self.most = 0

    def generate(self, features: Any, prompts: Sequence[Sequence[int]], **kwargs: Any) -> Any:
        with self._lock:
            self._running += 1
            self.most = max(self.most, self._running)
        try:
            return self._inner.generate(features, prompts, **kwargs)
        finally:
            with self._lock:
                self._running -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_two_workers_share_a_long_request_and_read_it_as_one_worker_does(
    adaptive: WhisperEngine, clips: dict[str, Samples]
) -> None:
    """Two workers (the default on two CPUs) split one long request's windows between two calls at
    once; the text is what one worker reads, up to the float noise of another batch split."""
    settings = load(TranscriptionSettings, {**BASE_ENV, "ESCRIBA_TRANSCRIPTION_NUM_WORKERS": "0"})
    two = WhisperEngine(settings)
    two.load()
    gap = np.zeros(SAMPLE_RATE_HZ // 2, dtype=np.float32)
    audio = np.concatenate([clips["jfk"], gap, clips["left"], gap, clips["right"], gap] * 3)
    try:
        assert (two.num_workers, two.cpu_threads) == (2, 2)
        model = two.model
        overlap = Overlap(model.model)
        model.model = overlap
        try:
            split = two.transcribe(audio)
        finally:
            model.model = overlap._inner
    finally:
        two.close()
    one = adaptive.transcribe(audio)
    assert overlap.most == 2
    assert wer(one.text, split.text) <= 0.03, (one.text, split.text)
    assert normalize(split.text).count("not what your country") == 3
    starts = [s.start_s for s in split.segments]
    assert starts == sorted(starts) and split.segments[-1].end_s > 0.8 * split.duration_s
