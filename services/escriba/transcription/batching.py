"""How many 30-second windows go through the model at once.

The batched pipeline cuts speech into windows of up to 30 s and decodes ``batch_size`` of them per
CTranslate2 call. A batch larger than the number of windows buys nothing, and past the point where
the device is saturated a larger batch only holds more memory (GPU) or makes short requests wait behind
long ones (CPU). So the size is looked up from the audio length in a per-device table that operators can
retune from a measurement (``python -m escriba.transcription.batchbench``) instead of a guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: ``((up_to_seconds, batch_size), ...)`` sorted by ``up_to_seconds``; the last row also covers longer audio.
BatchTable = tuple[tuple[float, int], ...]

#: A batch this large would not fit any GPU with a Whisper model; a value past it is a typo.
MAX_BATCH_SIZE = 256


def check_batch_table(table: Sequence[tuple[float, int]]) -> str | None:
    """Return what is wrong with ``table`` (a settings check), or ``None`` when it is usable."""
    if not table:
        return "needs at least one SECONDS:BATCH pair"
    previous = -math.inf
    for up_to_s, size in table:
        if math.isnan(up_to_s) or up_to_s <= 0:
            return f"audio lengths must be > 0 seconds, got {up_to_s}"
        if up_to_s <= previous:
            return f"audio lengths must be distinct and ascending, got {up_to_s} after {previous}"
        if not 1 <= size <= MAX_BATCH_SIZE:
            return f"batch sizes must be between 1 and {MAX_BATCH_SIZE}, got {size}"
        previous = up_to_s
    return None


def choose_batch_size(duration_s: float, table: BatchTable) -> int:
    """The batch size for ``duration_s`` seconds of audio: the first row whose bound covers it."""
    if not table:
        raise ValueError("empty batch table")
    for up_to_s, size in table:
        if duration_s <= up_to_s:
            return size
    return table[-1][1]


def table_for_device(device: str, *, cpu: BatchTable, cuda: BatchTable) -> BatchTable:
    """The table for a resolved device (``cpu`` or ``cuda``)."""
    if device == "cuda":
        return cuda
    if device == "cpu":
        return cpu
    raise ValueError(f"unknown device {device!r}; resolve 'auto' first")
