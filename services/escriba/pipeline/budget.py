"""A budget of audio-seconds a worker may hold decoded at once.

With cross-task batching a transcription worker takes many jobs at a time to fill its batches, and each
holds its whole decoded audio (4 bytes a sample at 16 kHz: about 230 MB an hour). Counting jobs alone
would let a few multi-hour files exhaust host memory, so jobs also wait for room in this budget. A job
larger than the whole budget still runs when it is alone, so no job waits forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext


class AudioBudget:
    def __init__(self, capacity_s: float) -> None:
        if capacity_s <= 0:
            raise ValueError("the audio budget must be positive")
        self.capacity_s = capacity_s
        self.used_s = 0.0
        self._changed = asyncio.Condition()

    def _fits(self, seconds: float) -> bool:
        return self.used_s == 0 or self.used_s + seconds <= self.capacity_s

    @asynccontextmanager
    async def hold(
        self, seconds: float, *, while_waiting: AbstractContextManager[object] | None = None
    ) -> AsyncIterator[None]:
        """Hold ``seconds`` of the budget; ``while_waiting`` is entered around the wait for room
        (a job stops its time limit there: it is waiting on other jobs' work)."""
        seconds = max(0.0, seconds)
        async with self._changed:
            with while_waiting or nullcontext():
                await self._changed.wait_for(lambda: self._fits(seconds))
            self.used_s += seconds
        try:
            yield
        finally:
            async with self._changed:
                self.used_s -= seconds
                self._changed.notify_all()
