"""Peak resident memory of a process while something runs, sampled from another thread.

RSS after the fact says little (freed memory may stay mapped, and a spike is gone); a bounded input must
keep the peak bounded, so the sampler records the highest RSS seen every few milliseconds.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import psutil

MB = 1024 * 1024


class PeakRss:
    """``with PeakRss(pid) as peak: ...`` then ``peak.growth_mb``: peak RSS above the starting RSS."""

    def __init__(self, pid: int | None = None, *, interval_s: float = 0.005) -> None:
        self._process = psutil.Process(pid or os.getpid())
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self.start_bytes = 0
        self.peak_bytes = 0

    @property
    def growth_mb(self) -> float:
        return (self.peak_bytes - self.start_bytes) / MB

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / MB

    def _rss(self) -> int:
        try:
            return int(self._process.memory_info().rss)
        except psutil.Error:  # the process exited: nothing more to see
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_bytes = max(self.peak_bytes, self._rss())

    def __enter__(self) -> PeakRss:
        self.start_bytes = self.peak_bytes = self._rss()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())
