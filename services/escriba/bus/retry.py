"""What a worker does with a job whose handler failed: retry later, or give up and fail the task.

Kept apart from the worker (and free of NATS) so the policy can be read and tested on its own. The
error hierarchy decides: a ``transient`` error is retried after the backoff delay for this attempt until
the delivery bound is reached; anything permanent gives up at once, since retrying a malformed input only
delays the failure. Exceptions outside the hierarchy are unexpected (a bug, a library's I/O error) and are
retried within the same bound, so a flaky dependency heals and a bug still ends as a failed task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from escriba.common.errors import EscribaError


@dataclass(frozen=True)
class Decision:
    """``give_up`` fails the task now; otherwise the job is redelivered after ``delay_s`` seconds."""

    give_up: bool
    delay_s: float = 0.0


def is_transient(error: BaseException) -> bool:
    if isinstance(error, EscribaError):
        return error.transient
    return True


def retry_delay(delivery_count: int, backoff_s: Sequence[float]) -> float:
    """Delay before the delivery after ``delivery_count``: backoff[0] after the first, the last repeats."""
    if not backoff_s:
        return 0.0
    index = min(max(delivery_count, 1) - 1, len(backoff_s) - 1)
    return float(backoff_s[index])


def decide(
    error: BaseException, *, delivery_count: int, max_deliver: int, backoff_s: Sequence[float]
) -> Decision:
    """Retry or give up after ``error`` on delivery ``delivery_count`` (1-based) of ``max_deliver``."""
    if not is_transient(error):
        return Decision(give_up=True)
    if max_deliver > 0 and delivery_count >= max_deliver:
        return Decision(give_up=True)
    return Decision(give_up=False, delay_s=retry_delay(delivery_count, backoff_s))


def error_reason(error: BaseException) -> str:
    """The short machine reason of ``error`` (``internal`` for exceptions outside the hierarchy)."""
    return error.reason if isinstance(error, EscribaError) else "internal"
