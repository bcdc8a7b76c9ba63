"""Concurrent callers of one key share one computation; a leader's failure or cancellation stays its own."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterator

import pytest

from escriba.pipeline.singleflight import SingleFlight

pytestmark = pytest.mark.timeout(10)


async def test_concurrent_callers_of_a_key_share_one_computation() -> None:
    flights: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()
    runs: list[str] = []

    async def compute(key: str) -> str:
        runs.append(key)
        await release.wait()
        return f"text of {key}"

    calls = [asyncio.create_task(flights.run(k, functools.partial(compute, k))) for k in ("a", "a", "b", "a")]
    await asyncio.sleep(0)
    assert flights.in_flight("a") and flights.in_flight("b")
    release.set()
    results = await asyncio.gather(*calls)
    assert runs == ["a", "b"]
    # In call order: the first "a" computed, the other two took its result.
    assert results == [("text of a", False), ("text of a", True), ("text of b", False), ("text of a", True)]
    assert not flights.in_flight("a")


async def test_a_finished_flight_is_not_a_cache() -> None:
    flights: SingleFlight[int] = SingleFlight()
    runs = 0

    async def compute() -> int:
        nonlocal runs
        runs += 1
        return runs

    assert await flights.run("k", compute) == (1, False)
    assert await flights.run("k", compute) == (2, False)


async def test_when_the_leader_fails_a_waiter_computes_on_its_own() -> None:
    flights: SingleFlight[str] = SingleFlight()
    started = asyncio.Event()
    fail = asyncio.Event()

    async def failing() -> str:
        started.set()
        await fail.wait()
        raise RuntimeError("the leader's own error")

    async def working() -> str:
        return "done by the waiter"

    leader = asyncio.create_task(flights.run("k", failing))
    await started.wait()
    waiter = asyncio.create_task(flights.run("k", working))
    await asyncio.sleep(0)
    fail.set()
    with pytest.raises(RuntimeError, match="leader's own error"):
        await leader
    assert await waiter == ("done by the waiter", False)


async def test_a_cancelled_leader_hands_the_key_to_one_waiter_and_the_rest_share_it() -> None:
    flights: SingleFlight[str] = SingleFlight()
    started = asyncio.Event()
    runs = 0

    async def hanging() -> str:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def compute() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        return "text"

    leader = asyncio.create_task(flights.run("k", hanging))
    await started.wait()
    waiters = [asyncio.create_task(flights.run("k", compute)) for _ in range(3)]
    await asyncio.sleep(0)
    leader.cancel()
    results = await asyncio.gather(*waiters)
    assert runs == 1 and sorted(results) == [("text", False), ("text", True), ("text", True)]
    assert leader.cancelled()


async def test_a_cancelled_waiter_leaves_the_leader_alone() -> None:
    flights: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()

    async def compute() -> str:
        await release.wait()
        return "text"

    leader = asyncio.create_task(flights.run("k", compute))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flights.run("k", compute))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await leader == ("text", False)
    assert not flights.in_flight("k")


async def test_a_waiter_enters_while_waiting_around_its_wait_only() -> None:
    """A job's clock stops while it waits on another task's work (as for the audio budget)."""
    flights: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()
    entered: list[str] = []

    @contextlib.contextmanager
    def paused(name: str) -> Iterator[None]:
        entered.append(f"{name} paused")
        yield
        entered.append(f"{name} resumed")

    async def compute() -> str:
        await release.wait()
        return "text"

    leader = asyncio.create_task(flights.run("k", compute, while_waiting=lambda: paused("leader")))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flights.run("k", compute, while_waiting=lambda: paused("waiter")))
    await asyncio.sleep(0)
    assert entered == ["waiter paused"]
    release.set()
    assert await waiter == ("text", True) and await leader == ("text", False)
    assert entered == ["waiter paused", "waiter resumed"]
