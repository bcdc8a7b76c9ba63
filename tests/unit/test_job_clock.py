"""A job's time limit stops while the job waits on other jobs' work, and only then."""

from __future__ import annotations

import asyncio

import pytest

from escriba.bus.worker import JobClock

pytestmark = pytest.mark.timeout(10)


async def test_a_pause_stops_the_limit_and_keeps_what_was_left() -> None:
    async with asyncio.timeout(0.3) as limit:
        clock = JobClock(limit)
        await asyncio.sleep(0.1)
        with clock.paused():
            assert limit.when() is None
            await asyncio.sleep(0.4)  # longer than the whole limit: not counted
        left = limit.when()
        assert left is not None
        assert 0.1 < left - asyncio.get_running_loop().time() <= 0.2 + 0.05
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2) as limit:
            with JobClock(limit).paused():
                await asyncio.sleep(0.05)
            await asyncio.sleep(1)  # the limit runs again after the pause


async def test_nested_pauses_resume_once_and_no_limit_means_nothing_to_pause() -> None:
    async with asyncio.timeout(0.2) as limit:
        clock = JobClock(limit)
        with clock.paused():
            with clock.paused():
                await asyncio.sleep(0.01)
            assert limit.when() is None  # the outer pause is still in force
            await asyncio.sleep(0.3)
    with JobClock().paused():
        await asyncio.sleep(0)
