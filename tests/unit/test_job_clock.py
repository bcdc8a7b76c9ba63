"""A job's time limit stops while the job waits on other jobs' work, and only then."""

from __future__ import annotations

import asyncio

import pytest

from escriba.bus.worker import JobClock

pytestmark = pytest.mark.timeout(20)


async def test_a_pause_stops_the_limit_and_keeps_what_was_left() -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10) as limit:
        clock = JobClock(limit)
        with clock.paused():
            assert limit.when() is None
            await asyncio.sleep(0)
        left = limit.when()
        assert left is not None and 9 < left - loop.time() <= 10
    async with asyncio.timeout(0.5) as limit:
        with JobClock(limit).paused():
            await asyncio.sleep(1.0)  # longer than the whole limit: not counted


async def test_the_limit_runs_again_after_the_pause() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2) as limit:
            with JobClock(limit).paused():
                await asyncio.sleep(0.01)
            await asyncio.sleep(10)


async def test_nested_pauses_resume_once_and_no_limit_means_nothing_to_pause() -> None:
    async with asyncio.timeout(0.2) as limit:
        clock = JobClock(limit)
        with clock.paused():
            with clock.paused():
                await asyncio.sleep(0.01)
            assert limit.when() is None  # the outer pause is still in force
            await asyncio.sleep(0.5)
    with JobClock().paused():
        await asyncio.sleep(0)
