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
    with pytest.raises(ValueError, match="loops"):
        CrossTaskBatcher(Recorder(), batch_size=lambda _s: 1, max_wait_s=0.0, loops=0)


# Several loops: one per model worker that runs a call in parallel --------------------------------------


class SideBySide:
    """A batch function that returns only once ``parties`` calls are in it at the same time: a loop
    that ran calls one after another would fail it (the barrier breaks after the timeout)."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.calls: list[list[tuple[str, int]]] = []
        self._lock = threading.Lock()

    def __call__(self, key: str, work: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        with self._lock:
            self.calls.append(list(work))
        self.barrier.wait()
        return [(tag, n * n) for tag, n in work]


def make_loops(run: Callable[..., list[tuple[str, int]]], loops: int, wait_s: float = FOREVER_S) -> Batcher:
    batcher: Batcher = CrossTaskBatcher(
        run, batch_size=lambda _s: 8, max_wait_s=wait_s, name="test-batcher", loops=loops
    )
    batcher.start()
    return batcher


def test_a_long_request_alone_is_spread_over_the_idle_loops() -> None:
    run = SideBySide(2)
    batcher = make_loops(run, loops=2)
    try:
        done = batcher.run("k", items("long", 1, 2, 3, 4), weight=120.0)
    finally:
        batcher.close()
    # Batches of 8 fit all four, but with two loops idle each takes half, and both calls run at once.
    assert sorted(len(call) for call in run.calls) == [2, 2]
    assert done.results == [("long", 1), ("long", 4), ("long", 9), ("long", 16)]


def test_progress_is_only_ever_the_finished_prefix() -> None:
    """The second half of a request finishes first (the first half's call waits for it): progress
    never reports a result that is not there yet, and never goes backwards."""
    second_done = threading.Event()

    def run(key: str, work: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        if any(n == 1 for _, n in work):
            assert second_done.wait(10)
        results = [(tag, n * n) for tag, n in work]
        if not any(n == 1 for _, n in work):
            second_done.set()
        return results

    reports: list[list[tuple[str, int] | None]] = []
    batcher = make_loops(run, loops=2)
    try:
        done = batcher.run(
            "k", items("a", 1, 2, 3, 4), weight=20.0, on_progress=lambda so_far: reports.append(list(so_far))
        )
    finally:
        batcher.close()
    assert done.results == [("a", 1), ("a", 4), ("a", 9), ("a", 16)]
    assert reports and reports[-1] == done.results
    assert all(None not in report for report in reports)
    assert [len(r) for r in reports] == sorted({len(r) for r in reports})  # strictly growing
    assert all(report == done.results[: len(report)] for report in reports)


def test_a_loop_that_waited_for_items_another_took_goes_back_to_waiting() -> None:
    """Both loops wait out the grace for an announced request; the first to wake takes the only item.
    The other must find the queue gone and wait again, not take from it (or crash its thread)."""
    side_by_side = SideBySide(2)

    def run(key: str, work: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        if key == "pair":
            return side_by_side(key, work)
        return [(tag, n * n) for tag, n in work]

    batcher = make_loops(run, loops=2, wait_s=0.05)
    try:
        with batcher.preparing():
            assert batcher.run("k", items("a", 3), weight=1.0).results == [("a", 9)]
        # Both loops still serve: two calls must be in flight at once to pass the barrier.
        assert batcher.run("pair", items("b", 1, 2), weight=1.0).results == [("b", 1), ("b", 4)]
    finally:
        batcher.close()
