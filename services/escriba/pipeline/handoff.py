"""Canonical audio handed from the preprocess stage to the transcription stage of the same process.

When both stages run in one process (the local stack, ``escriba transcribe`` against it, a small node
serving every stage), the transcription worker would read back from the object store the canonical
audio that preprocess wrote a moment before: for a short clip that round trip through NATS is a
noticeable share of what the clip costs outside the model. The preprocess worker offers the bytes it
has just stored here instead, keyed by their sha256 (the content, so whichever task takes them gets
exactly the stored audio), and the transcription worker takes them; anything not taken (the job went
to another replica, the task was cancelled) ages out. The object store stays the record: a miss, a
redelivery or another process reads it from there as before.

Nothing is held unless a transcription stage in this process switched the handoff on, so a process
that only preprocesses keeps no audio for a stage it does not run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(slots=True)
class HandoffStats:
    offered: int = 0
    taken: int = 0
    missed: int = 0
    evicted: int = 0


class AudioHandoff:
    """At most ``max_bytes`` of canonical audio, each entry at most ``max_age_s`` old, taken once."""

    def __init__(
        self, max_bytes: int = 0, max_age_s: float = 120.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = HandoffStats()

    @property
    def enabled(self) -> bool:
        return self._max_bytes > 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def enable(self, max_bytes: int, max_age_s: float | None = None) -> None:
        """Switched on by a transcription stage of this process; a second stage keeps the larger bound."""
        with self._lock:
            self._max_bytes = max(self._max_bytes, max_bytes)
            if max_age_s is not None:
                self._max_age_s = max_age_s

    def offer(self, sha256: str, audio: bytes) -> bool:
        """Keep ``audio`` for the transcription stage; False when off, or when it alone exceeds the bound."""
        if not self.enabled or not sha256 or len(audio) > self._max_bytes:
            return False
        with self._lock:
            self._expire()
            previous = self._entries.pop(sha256, None)
            if previous is not None:
                self._bytes -= len(previous[1])
            while self._entries and self._bytes + len(audio) > self._max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)  # the oldest goes first
                self._bytes -= len(dropped)
                self.stats.evicted += 1
            self._entries[sha256] = (self._clock(), audio)
            self._bytes += len(audio)
            self.stats.offered += 1
        return True

    def take(self, sha256: str) -> bytes | None:
        """The offered audio of that sha256, removed from the handoff; None when not here (any more)."""
        with self._lock:
            self._expire()
            entry = self._entries.pop(sha256, None) if sha256 else None
            if entry is None:
                self.stats.missed += 1
                return None
            self._bytes -= len(entry[1])
            self.stats.taken += 1
            return entry[1]

    def _expire(self) -> None:
        limit = self._clock() - self._max_age_s
        while self._entries:
            key, (offered_at, audio) = next(iter(self._entries.items()))
            if offered_at > limit:
                return
            del self._entries[key]
            self._bytes -= len(audio)
            self.stats.evicted += 1


#: The process's one handoff: off until a transcription stage is built in this process.
HANDOFF = AudioHandoff()


async def offer_file(sha256: str, path: Path) -> bool:
    """The preprocess stage's side: offer the canonical audio it has just stored from ``path`` (read
    only when the handoff is on and the file fits)."""
    if not HANDOFF.enabled:
        return False
    size = (await asyncio.to_thread(path.stat)).st_size
    if size > HANDOFF.max_bytes:
        return False
    return HANDOFF.offer(sha256, await asyncio.to_thread(path.read_bytes))
