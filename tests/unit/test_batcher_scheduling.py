"""The cross-task batching loop, with a real batch function: who shares a call, in what order, and what
happens on failure and shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from escriba.common.errors import TransientError
from escriba.transcription.scheduler import (
    BatchedResults,
    BatcherClosedError,
    BatcherStats,
    CrossTaskBatcher,
    Slot,
)

pytestmark = pytest.mark.timeout(20)

#: Long enough that a test depending on it would hit its timeout instead of passing by luck.
FOREVER_S = 600.0


GATE = "gate"


class Recorder:
    """The batch function: squares each number (tagged with its request) and records each call. A call
    under the key ``GATE`` blocks until the test opens the gate, which keeps the loop busy while a test
    queues its requests in a known order."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.all_calls: list[tuple[str, list[tuple[str, int]]]] = []
        self.fail_on = fail_on
        self.gate_open = threading.Event()
        self.in_gate = threading.Event()
        self._lock = threading.Lock()

    @property
    def calls(self) -> list[tuple[str, list[tuple[str, int]]]]:
        return [(key, batch) for key, batch in self.all_calls if key != GATE]

    def __call__(self, key: str, items: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        with self._lock:
            self.all_calls.append((key, list(items)))
        if key == GATE:
            self.in_gate.set()
            self.gate_open.wait()
        if self.fail_on is not None and any(tag == self.fail_on for tag, _ in items):
            raise RuntimeError(f"device error on {self.fail_on}")
        return [(tag, n * n) for tag, n in items]


Batcher = CrossTaskBatcher[str, tuple[str, int], tuple[str, int]]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make(
    recorder: Recorder, size: Callable[[float], int] = lambda _s: 8, wait_s: float = FOREVER_S
) -> Batcher:
    batcher: Batcher = CrossTaskBatcher(recorder, batch_size=size, max_wait_s=wait_s, name="test-batcher")
    batcher.start()
    return batcher


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def items(tag: str, *numbers: int) -> list[tuple[str, int]]:
    return [(tag, n) for n in numbers]


def wait_queued(batcher: Batcher, count: int) -> None:
    while batcher.queued < count:
        threading.Event().wait(0.005)


def submit_held(
    batcher: Batcher,
    recorder: Recorder,
    pool: ThreadPoolExecutor,
    requests: dict[str, tuple[str, list[tuple[str, int]], float]],
) -> dict[str, Future[BatchedResults[tuple[str, int]]]]:
    """Queue the requests one after another (in this order) while the loop is held in a gated call,
    then let it go: it finds all of them waiting, whatever the thread scheduling."""
    gate = pool.submit(batcher.run, GATE, [(GATE, 0)], weight=0.0)
    recorder.in_gate.wait()
    futures = {}
    total = 0
    for name, (key, work, weight) in requests.items():
        futures[name] = pool.submit(batcher.run, key, work, weight=weight)
        total += len(work)
        wait_queued(batcher, total)
    recorder.gate_open.set()
    gate.result(timeout=10)
    return futures


def test_requests_share_one_call_and_each_gets_its_own_results_in_order(
    recorder: Recorder, pool: ThreadPoolExecutor
) -> None:
    batcher = make(recorder)
    try:
        futures = submit_held(
            batcher,
            recorder,
            pool,
            {
                "a": ("k", items("a", 1, 2), 1.0),
                "b": ("k", items("b", 3), 1.0),
                "c": ("k", items("c", 4, 5), 1.0),
            },
        )
        results = {name: f.result(timeout=10).results for name, f in futures.items()}
    finally:
        batcher.close()
    assert results == {"a": [("a", 1), ("a", 4)], "b": [("b", 9)], "c": [("c", 16), ("c", 25)]}
    assert len(recorder.calls) == 1
    assert {tag for tag, _ in recorder.calls[0][1]} == {"a", "b", "c"}
    # The gated call counts too: two calls, six items.
    assert batcher.stats == BatcherStats(batches=2, items=6, largest=5, queued=0)


def test_batch_size_follows_the_audio_waiting(recorder: Recorder, pool: ThreadPoolExecutor) -> None:
    # 2 per call for up to 10 s waiting, 4 beyond: three 4 s requests (12 s) get calls of 4.
    batcher = make(recorder, size=lambda seconds: 2 if seconds <= 10 else 4)
    try:
        futures = submit_held(
            batcher,
            recorder,
            pool,
            {name: ("k", items(name, 1, 2, 3), 4.0) for name in ("a", "b", "c")},
        )
        done = {name: f.result(timeout=10) for name, f in futures.items()}
        alone = batcher.run("k", items("d", 1, 2, 3), weight=4.0)
    finally:
        batcher.close()
    assert [len(batch) for _, batch in recorder.calls[:3]] == [4, 4, 1]
    assert all(d.batch_size == 4 for d in done.values())
    # Alone, the request gets the size its own length calls for.
    assert [len(batch) for _, batch in recorder.calls[3:]] == [2, 1]
    assert alone.batch_size == 2
    assert alone.results == [("d", 1), ("d", 4), ("d", 9)]


def test_a_short_request_does_not_queue_behind_a_long_one(
    recorder: Recorder, pool: ThreadPoolExecutor
) -> None:
    batcher = make(recorder, size=lambda _s: 3)
    try:
        futures = submit_held(
            batcher,
            recorder,
            pool,
            {"long": ("k", items("long", *range(9)), 270.0), "short": ("k", items("short", 7), 5.0)},
        )
        long, short = futures["long"].result(timeout=10), futures["short"].result(timeout=10)
    finally:
        batcher.close()
    first = [tag for tag, _ in recorder.calls[0][1]]
    assert first == ["long", "short", "long"]
    assert short.results == [("short", 49)]
    assert long.results == [("long", n * n) for n in range(9)]


def test_different_keys_never_share_a_call(recorder: Recorder, pool: ThreadPoolExecutor) -> None:
    batcher = make(recorder)
    try:
        futures = submit_held(
            batcher,
            recorder,
            pool,
            {
                "en": ("en", items("en", 1, 2), 1.0),
                "de": ("de", items("de", 3), 1.0),
                "en2": ("en", items("en2", 4), 1.0),
            },
        )
        for future in futures.values():
            future.result(timeout=10)
    finally:
        batcher.close()
    by_key = {key: [tag for tag, _ in batch] for key, batch in recorder.calls}
    assert sorted(by_key) == ["de", "en"]
    assert by_key["en"] == ["en", "en2", "en"] and by_key["de"] == ["de"]


def test_a_request_alone_does_not_wait_for_a_batch_to_fill(recorder: Recorder) -> None:
    # max_wait is far beyond the test's timeout: had the loop waited for company, the test would fail.
    batcher = make(recorder)
    try:
        assert batcher.run("k", items("a", 6), weight=1.0).results == [("a", 36)]
    finally:
        batcher.close()


def test_a_failed_call_fails_every_request_in_it_and_the_loop_goes_on(pool: ThreadPoolExecutor) -> None:
    recorder = Recorder(fail_on="bad")
    batcher = make(recorder)
    try:
        futures = submit_held(
            batcher,
            recorder,
            pool,
            {"bad": ("k", items("bad", 1, 2), 1.0), "good": ("k", items("good", 3), 1.0)},
        )
        for name in ("bad", "good"):
            with pytest.raises(RuntimeError, match="device error on bad"):
                futures[name].result(timeout=10)
        assert batcher.queued == 0
        assert batcher.run("k", items("later", 2), weight=1.0).results == [("later", 4)]
    finally:
        batcher.close()


def test_an_announced_request_that_never_submits_releases_the_loop(
    recorder: Recorder, pool: ThreadPoolExecutor
) -> None:
    batcher = make(recorder)
    try:
        with batcher.preparing():
            waiting = pool.submit(batcher.run, "k", items("a", 2), weight=1.0)
            wait_queued(batcher, 1)
            assert not waiting.done()
        # The announcement ended without work (the request failed while preparing): no more waiting.
        assert waiting.result(timeout=10).results == [("a", 4)]
    finally:
        batcher.close()


def test_submitting_through_the_slot_ends_the_announcement(recorder: Recorder) -> None:
    batcher = make(recorder)
    slot: Slot[str, tuple[str, int], tuple[str, int]]
    try:
        with batcher.preparing() as slot:
            # Alone and announced: were the announcement still counted, the loop would wait forever.
            assert slot.run("k", items("a", 3), weight=1.0).results == [("a", 9)]
    finally:
        batcher.close()


def test_closed_batcher_refuses_work_after_finishing_what_was_queued(
    recorder: Recorder, pool: ThreadPoolExecutor
) -> None:
    batcher = make(recorder)
    with batcher.preparing():
        queued = pool.submit(batcher.run, "k", items("a", 5), weight=1.0)
        wait_queued(batcher, 1)
        closing = pool.submit(batcher.close)
    closing.result(timeout=10)
    assert queued.result(timeout=10).results == [("a", 25)]
    with pytest.raises(BatcherClosedError) as excinfo:
        batcher.run("k", items("b", 1), weight=1.0)
    assert isinstance(excinfo.value, TransientError)


def test_empty_requests_and_bad_settings() -> None:
    batcher = make(Recorder())
    try:
        assert batcher.run("k", [], weight=0.0) == BatchedResults([], 0)
    finally:
        batcher.close()
    with pytest.raises(ValueError, match="max_wait_s"):
        CrossTaskBatcher(Recorder(), batch_size=lambda _s: 1, max_wait_s=-1.0)
