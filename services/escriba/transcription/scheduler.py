"""Cross-task batching: work items of many requests share one call.

A short request has one or two 30 s windows. Decoded alone, each model call carries a batch of one,
which leaves a GPU mostly idle and pays the per-call overhead once per request. Here every request
prepares its items on its own thread and hands them to one batching loop, which fills each call with
items from whichever requests are waiting under the same key, then routes every result back to its
request and position. What a key means (for Whisper: everything CTranslate2 applies to a whole batch)
is the caller's business: this module knows nothing of the model
(:mod:`escriba.transcription.whisper_adapter` holds that).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

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
    #: Items with a result, by position (with several loops a later batch can finish first).
    finished: list[bool] = field(default_factory=list)
    #: How many first results the progress listener has been told of.
    told: int = 0
    error: BaseException | None = None
    largest_batch: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    #: Told the results so far (the first items, in order) after each batch that held some of them,
    #: on the loop's thread.
    on_progress: Callable[[Sequence[R]], None] | None = None


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

    def run(
        self,
        key: K,
        items: Sequence[I],
        *,
        weight: float,
        on_progress: Callable[[Sequence[R]], None] | None = None,
    ) -> BatchedResults[R]:
        """:meth:`CrossTaskBatcher.run`, ending the announcement as the items are queued."""
        return self._batcher._run_items(key, items, weight, self, on_progress)


class CrossTaskBatcher(Generic[K, I, R]):
    """One thread that runs ``run(key, items)`` over items of many requests at once.

    ``batch_size(seconds)`` gives the cap for a batch from the audio-seconds of the requests waiting
    under its key, so a request alone gets exactly the batch size its own length would get, and a crowd
    of short requests gets the size meant for that much audio. The loop waits up to ``max_wait_s`` for a
    batch to fill, and only while a request announced with :meth:`preparing` may still add to it: a
    request alone never waits. Within a key the batch is filled round-robin across requests, so a short
    request never queues behind all the windows of a long one.

    ``loops`` threads take batches (one per model worker that can run a call in parallel: on a CPU,
    two calls at once beat one call on every core, whose small matrix products in beam search leave
    the second core idle). While other loops are idle, a loop takes only its share
    of the waiting items, so a long request alone is spread over every worker instead of filling one.
    """

    def __init__(
        self,
        run: Callable[[K, Sequence[I]], Sequence[R]],
        *,
        batch_size: Callable[[float], int],
        max_wait_s: float,
        name: str = "batcher",
        loops: int = 1,
    ) -> None:
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if loops < 1:
            raise ValueError(f"loops must be >= 1, got {loops}")
        self._loops = loops
        self._running = 0
        self._run = run
        self._batch_size = batch_size
        self._max_wait_s = max_wait_s
        self._name = name
        self._cond = threading.Condition()
        self._progress_lock = threading.Lock()
        self._queues: OrderedDict[K, deque[_Request[I, R]]] = OrderedDict()
        self._preparing = 0
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._batches = 0
        self._items = 0
        self._largest = 0
        self._idle_since = time.monotonic()

    # Lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._closed:
                raise BatcherClosedError(f"{self._name} is closed")
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._loop, name=f"{self._name}-{index}", daemon=True)
                    for index in range(self._loops)
                ]
                for thread in self._threads:
                    thread.start()

    def close(self) -> None:
        """Stop after the work already queued; later submissions raise :class:`BatcherClosedError`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
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

    def run(
        self,
        key: K,
        items: Sequence[I],
        *,
        weight: float,
        on_progress: Callable[[Sequence[R]], None] | None = None,
    ) -> BatchedResults[R]:
        """Queue ``items`` under ``key`` and block until every one has its result (in order). The
        first failure of a batch holding one of them is raised here. ``on_progress`` is given the
        results so far after each batch: the first ones, up to the first still without one."""
        return self._run_items(key, items, weight, None, on_progress)

    def _release(self, slot: Slot[K, I, R]) -> None:
        if slot.announced:
            slot.announced = False
            self._preparing -= 1
            self._cond.notify_all()

    def _run_items(
        self,
        key: K,
        items: Sequence[I],
        weight: float,
        slot: Slot[K, I, R] | None,
        on_progress: Callable[[Sequence[R]], None] | None = None,
    ) -> BatchedResults[R]:
        request: _Request[I, R] = _Request(
            items=items,
            weight=weight,
            arrived=time.monotonic(),
            results=[None] * len(items),
            remaining=len(items),
            finished=[False] * len(items),
            on_progress=on_progress,
        )
        with self._cond:
            if slot is not None:
                self._release(slot)
            if not items:
                return BatchedResults([], 0)
            if self._closed or not self._threads:
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
                self._running += 1
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
            with self._cond:
                self._running -= 1
                self._idle_since = time.monotonic()

    def _next_batch(self) -> tuple[K, int, list[tuple[_Request[I, R], int]]] | None:
        """Under the lock: wait for work, then take one batch (``None`` once closed and drained)."""
        while True:
            while not self._queues:
                if self._closed:
                    return None
                self._cond.wait()
            key = next(iter(self._queues))
            queue = self._queues[key]
            # Requests still preparing get up to max_wait to join, counted from when the oldest item
            # came or the model went idle, whichever is later: after a long model call, the ones that
            # prepared during it are already queued, and those just behind them get the same short grace.
            deadline = max(queue[0].arrived, self._idle_since) + self._max_wait_s
            cap = self._cap(queue)
            while self._preparing > 0 and not self._closed and self._waiting(queue) < cap:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
                cap = self._cap(queue)
            if self._queues.get(key) is not queue or not queue:
                continue  # another loop took these items (or they failed) while this one waited
            # Other loops idle: this one takes its share and they take the rest, rather than waiting
            # for this call with nothing to do.
            # The batch size reported stays the table's (``cap``); only what this call takes shrinks.
            idle = self._loops - self._running
            limit = cap if idle <= 1 else min(cap, max(1, math.ceil(self._waiting(queue) / idle)))
            taken: list[tuple[_Request[I, R], int]] = []
            while len(taken) < limit and queue:
                for request in list(queue):
                    if len(taken) == limit:
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
        told: dict[int, tuple[_Request[I, R], int]] = {}
        with self._cond:
            for position, (request, index) in enumerate(taken):
                request.largest_batch = max(request.largest_batch, cap)
                if error is not None:
                    request.error = request.error or error
                elif results is not None:
                    request.results[index] = results[position]
                    request.finished[index] = True
                request.remaining -= 1
                if request.on_progress is not None and request.error is None:
                    told[id(request)] = (request, self._finished_prefix(request))
                if request.remaining == 0 or request.error is not None:
                    self._drop(request)
                    request.done.set()
        # One listener call at a time, each told more than the last (two loops finishing at once
        # must not report a request's progress going backwards).
        with self._progress_lock:
            for request, done in told.values():
                if done <= request.told or request.on_progress is None:
                    continue
                request.told = done
                try:
                    request.on_progress(cast(list[R], request.results[:done]))
                except Exception:  # a progress listener must never stop the batching loop
                    log.exception("progress callback failed")

    @staticmethod
    def _finished_prefix(request: _Request[I, R]) -> int:
        # From what the listener was told: that prefix is finished already (a long request's windows
        # are not rescanned from the start after every batch).
        finished = request.finished
        return next((i for i in range(request.told, len(finished)) if not finished[i]), len(finished))

    def _drop(self, request: _Request[I, R]) -> None:
        """Take a finished or failed request's untaken items out of the queue."""
        for key, queue in list(self._queues.items()):
            if request in queue:
                queue.remove(request)
                if not queue:
                    del self._queues[key]
