"""Decoded samples parked on disk between the passes that need the whole recording.

Loudness normalization measures the whole file before it can apply a gain (BS.1770's gates): two
passes over audio that may be hours long. Holding it in memory made a preprocess worker's size grow
with the recording's (about 1 GiB an hour); a spool file costs disk instead (64 kB a second of
float32) and is read back one window at a time, with the context a windowed filter needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import numpy as np
import numpy.typing as npt

#: Samples read back per window (30 s at 16 kHz): big enough that numpy's per-call cost vanishes,
#: small enough that a window and the copies made of it stay a few megabytes.
WINDOW_SAMPLES: Final = 30 * 16000


class SampleSpool:
    """One channel of samples of one dtype, appended in chunks and read back in windows."""

    def __init__(self, path: Path, dtype: type[np.float32] | type[np.int16] = np.float32) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._file: IO[bytes] = path.open("w+b")

    def append(self, samples: npt.NDArray[np.generic]) -> None:
        chunk = np.ascontiguousarray(samples, dtype=self.dtype).reshape(-1)
        self._file.write(chunk.tobytes())
        self.count += chunk.size

    def windows(
        self, context: int = 0, length: int = WINDOW_SAMPLES
    ) -> Iterator[tuple[npt.NDArray[np.generic], int, int]]:
        """``(window, lead, size)`` for each chunk of ``length`` samples in order: the window holds
        the chunk at ``window[lead : lead + size]`` and up to ``context`` samples on either side."""
        self._file.flush()
        width = self.dtype.itemsize
        for start in range(0, self.count, length):
            first = max(0, start - context)
            size = min(length, self.count - start)
            last = min(self.count, start + size + context)
            self._file.seek(first * width)
            raw = self._file.read((last - first) * width)
            yield np.frombuffer(raw, dtype=self.dtype), start - first, size
        self._file.seek(0, 2)  # appends go on at the end

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SampleSpool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
