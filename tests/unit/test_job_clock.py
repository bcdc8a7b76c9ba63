"""A job's time limit stops while the job waits on other jobs' work, and only then.

The clock is injected: a pause "lasts" as long as the test moves the clock, so nothing sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from escriba.bus.worker import JobClock

pytestmark = pytest.mark.timeout(20)


class MovedClock:
    """The loop's time plus however far the test has moved it."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.moved_s = 0.0

    def __call__(self) -> float:
        return self._loop.time() + self.moved_s

    def move(self, seconds: float) -> None:
        self.moved_s += seconds


def _left(limit: asyncio.Timeout, now: MovedClock) -> float:
    when = limit.when()
    assert when is not None
    return when - now()


async def test_a_pause_stops_the_limit_and_keeps_what_was_left() -> None:
    now = MovedClock()
    async with asyncio.timeout(10) as limit:
        clock = JobClock(limit, now=now)
        with clock.paused():
            assert limit.when() is None
            now.move(3600)  # an hour queued behind other jobs' audio
            await asyncio.sleep(0)
        assert 9 < _left(limit, now) <= 10  # the hour is not counted


async def test_the_limit_runs_again_after_the_pause_and_fires() -> None:
    now = MovedClock()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2) as limit:
            with JobClock(limit, now=now).paused():
                await asyncio.sleep(0)
            assert 0 < _left(limit, now) <= 0.2
            await asyncio.Event().wait()  # a hung handler: the limit, running again, ends it


async def test_nested_pauses_resume_once_and_no_limit_means_nothing_to_pause() -> None:
    now = MovedClock()
    async with asyncio.timeout(10) as limit:
        clock = JobClock(limit, now=now)
        with clock.paused():
            with clock.paused():
                now.move(100)
            assert limit.when() is None  # the outer pause is still in force
            now.move(100)
            await asyncio.sleep(0)
        assert 9 < _left(limit, now) <= 10
    with JobClock().paused():
        await asyncio.sleep(0)
