"""Waiting for a condition in async tests without sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def poll_until(
    condition: Callable[[], Awaitable[bool] | bool], *, timeout_s: float, interval_s: float = 0.1, what: str
) -> None:
    """Wait until ``condition()`` holds; raise TimeoutError naming ``what`` when it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)
