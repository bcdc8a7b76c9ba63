"""Figures that survive a noisy machine: interleaved repeats, a median with its range, the load around it.

On a machine shared with other work one run of a comparison can move by a third; a single ratio says
more about the neighbours than about the code. Each ratio is therefore measured several times, the two
sides taking turns to go first (so a burst of load falls on both), and reported as the median with the
lowest and highest value beside it, together with the machine's load average before and after.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Spread:
    """A figure measured several times."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(statistics.median(self.values)) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "values": list(self.values)}

    def shown(self) -> str:
        """``median [min-max] xN``, the way the table prints it."""
        if len(self.values) < 2:
            return f"{self.median:.3f}"
        return f"{self.median:.3f} [{self.low:.3f}-{self.high:.3f}] x{len(self.values)}"


def spread(values: Sequence[float]) -> Spread:
    return Spread(tuple(float(v) for v in values))


def order(repeat: int, first: str, second: str) -> tuple[str, str]:
    """Which side goes first in repeat ``repeat``: they alternate, so drift in the load falls on both."""
    return (first, second) if repeat % 2 == 0 else (second, first)


def load_average() -> dict[str, float]:
    """The 1, 5 and 15-minute load averages (runnable processes, not a percentage): beside 2 cores a
    value of 2 means the benchmark shared them with about one other busy process."""
    one, five, fifteen = os.getloadavg()
    return {"1m": one, "5m": five, "15m": fifteen}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the two nearest values (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)
