from __future__ import annotations

import asyncio

import pytest

from escriba.bus.worker import JobClock
from escriba.pipeline.budget import AudioBudget

pytestmark = pytest.mark.timeout(10)


async def test_jobs_wait_for_room_and_a_large_job_runs_alone() -> None:
    budget = AudioBudget(100.0)
    order: list[str] = []
    release_a = asyncio.Event()

    async def job(name: str, seconds: float, gate: asyncio.Event | None = None) -> None:
        async with budget.hold(seconds):
            order.append(f"start {name}")
            if gate is not None:
                await gate.wait()
        order.append(f"end {name}")

    a = asyncio.create_task(job("a", 80.0, release_a))
    await _let_others_run()
    b = asyncio.create_task(job("b", 30.0))  # 80 + 30 > 100: waits for a
    big = asyncio.create_task(job("big", 500.0))  # over the whole budget: runs only alone
    await _let_others_run()
    assert order == ["start a"] and budget.used_s == 80.0
    release_a.set()
    await asyncio.gather(a, b, big)
    assert order.index("end a") < order.index("start b")
    assert order.index("end a") < order.index("start big")
    assert budget.used_s == 0.0


async def test_small_jobs_share_the_budget() -> None:
    budget = AudioBudget(100.0)
    inside = 0
    peak = 0

    async def job() -> None:
        nonlocal inside, peak
        async with budget.hold(25.0):
            inside += 1
            peak = max(peak, inside)
            await _let_others_run()
            inside -= 1

    await asyncio.gather(*(job() for _ in range(10)))
    assert peak == 4


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AudioBudget(0)


async def test_the_wait_for_room_does_not_count_against_a_jobs_time_limit() -> None:
    """A job queued behind others' audio is not hung: its time limit stops while it waits."""
    budget = AudioBudget(100.0)
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    moved_s = 0.0

    def now() -> float:
        return loop.time() + moved_s

    async def holder() -> None:
        nonlocal moved_s
        async with budget.hold(100.0):
            await release.wait()
            moved_s += 1.5  # the holder's work took 1.5 s: longer than the waiting job's whole limit

    first = asyncio.create_task(holder())
    await _let_others_run()
    async with asyncio.timeout(1.0) as limit:
        clock = JobClock(limit, now=now)
        waiting = asyncio.create_task(_hold(budget, 10.0, clock))
        await _let_others_run()
        assert limit.when() is None  # paused while it waits for room
        release.set()
        await waiting
        when = limit.when()
        assert when is not None and 0.9 < when - now() <= 1.0  # the wait was not counted
    await first
    assert budget.used_s == 0.0


async def _hold(budget: AudioBudget, seconds: float, clock: JobClock) -> None:
    async with budget.hold(seconds, while_waiting=clock.paused()):
        pass


async def _let_others_run() -> None:
    """Yield to every ready task a few times (they wait only on each other, never on time)."""
    for _ in range(10):
        await asyncio.sleep(0)
