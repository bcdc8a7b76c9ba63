"""The one way tests wait for something: poll a condition, bounded, instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

#: Long enough for a real server on a busy 2-core CI machine; a test that needs more says so.
DEFAULT_TIMEOUT_S = 20.0


async def eventually(
    check: Callable[[], Any],
    what: str = "the condition",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = 0.02,
) -> Any:
    """Wait until ``check()`` (plain or awaitable) gives something truthy, and return it; fail the test
    naming ``what`` when it never does within ``timeout_s`` (a failure, not a hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)
