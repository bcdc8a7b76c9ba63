"""Reading audio back from the JetStream object store: Escriba's bounded direct gets against nats-py's
``ObjectStore.get`` (a push ordered consumer with flow control), the same objects on one server.

Escriba stopped using ``ObjectStore.get`` because it can wait forever on a chunk it missed (a task was
seen stuck in ``transcribing``); this measures what the replacement costs or saves. Every stage reads
its input this way, so it is on the path of every task.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
from nats.js import api
from nats.js.object_store import ObjectStore

from escriba.bus import AudioStore
from escriba.local.nats import EmbeddedNats

BUCKET = "bench-objects"


@dataclass
class ObjectReads:
    """Best-of-``repeats`` seconds per object size (MiB) for each reader."""

    direct_s: dict[int, float] = field(default_factory=dict)
    nats_py_s: dict[int, float] = field(default_factory=dict)

    def ratio(self, size_mib: int) -> float:
        """nats-py's time over Escriba's: above 1, the direct gets are faster."""
        return self.nats_py_s[size_mib] / self.direct_s[size_mib]


async def compare(sizes_mib: tuple[int, ...] = (5, 60), repeats: int = 3) -> ObjectReads:
    """5 MiB is about a 5-minute normalized recording, 60 MiB about an hour (16 kHz mono FLAC)."""
    result = ObjectReads()
    with tempfile.TemporaryDirectory(prefix="escriba-bench-nats-") as folder:
        server = EmbeddedNats(folder)
        server.start()
        try:
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream(timeout=30)
                config = api.ObjectStoreConfig(storage=api.StorageType.FILE)
                await js.create_object_store(BUCKET, config=config)
                store = await AudioStore.open(js, BUCKET)
                raw = await js.object_store(BUCKET)
                for size in sizes_mib:
                    name = f"audio-{size}"
                    data = os.urandom(size * 1024 * 1024)
                    await store.put_bytes(name, data)
                    result.direct_s[size] = await _best(repeats, functools.partial(store.get_bytes, name))
                    result.nats_py_s[size] = await _best(repeats, functools.partial(_nats_py_get, raw, name))
            finally:
                await nc.close()
        finally:
            server.close()
    return result


async def _nats_py_get(store: ObjectStore, name: str) -> object:
    return await store.get(name, writeinto=io.BytesIO())


async def _best(repeats: int, read: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        await read()
        best = min(best, time.perf_counter() - started)
    return best
