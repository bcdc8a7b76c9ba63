"""One computation per key at a time in this process; concurrent callers of the same key share it.

The content-addressed caches only help once a result is stored. A burst of tasks with the same audio
(a client retrying with new request ids, the same recording sent by several services, a batch job
that uploads one file per user) reaches a worker before the first of them is done, and each would run
the model again: in the 1,000-task load test that was 50 model runs for 20 distinct clips. With a
flight per cache key, the first caller computes and the others wait for its result.

A waiter never depends on the leader's fate: if the leader fails or is cancelled (its job timed out,
the worker is stopping), the waiters are woken without a result and the next one computes on its own,
so an error stays with the task that had it and no waiter hangs on a flight that is gone. A waiter
that is cancelled stops waiting and leaves the flight alone.

Within one process only: replicas of a stage still may compute the same key at once (as before);
spreading the same key over replicas is the queue's choice, not this module's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class _Flight(Generic[T]):
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ok: bool = False
    result: T | None = None


class SingleFlight(Generic[T]):
    """Per-key flights of one event loop."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    async def run(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        *,
        while_waiting: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> tuple[T, bool]:
        """``compute()``'s result, and whether it was another caller's (True) or this one's.

        ``while_waiting()`` is entered around each wait for another caller's flight (a job stops its
        time limit there, as it does waiting for the audio budget: it is waiting on other work)."""
        while (flight := self._flights.get(key)) is not None:
            with while_waiting() if while_waiting else nullcontext():
                await flight.done.wait()
            if flight.ok:
                return flight.result, True  # type: ignore[return-value]  # set with ok
            # The leader failed or was cancelled: compute on our own (one waiter leads, the rest wait).
        flight = _Flight[T]()
        self._flights[key] = flight
        try:
            result = await compute()
            flight.result, flight.ok = result, True
            return result, False
        finally:
            del self._flights[key]
            flight.done.set()
