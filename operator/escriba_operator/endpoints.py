"""Which addresses the operator may connect to for an autoscaler: the allow-list of endpoints.

Whoever may write a TranscriptionAutoscaler chooses its NATS URL and Prometheus URLs, and the operator
sends NATS credentials to the one and puts what it reads from the other in a status many can read. Without
a list, that user borrows the operator's network position and Secrets (a confused deputy), so the chart
sets the list to the platform's own NATS and Prometheus. Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"nats": 4222, "tls": 4222, "http": 80, "https": 443}


@dataclass(frozen=True)
class AllowList:
    """Entries are ``host``, ``host:port`` or ``scheme://host[:port]``; a host may hold ``*`` globs
    (``*.escriba.svc.cluster.local``). No entries: every address is allowed (a laptop, the tests)."""

    entries: tuple[str, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[str]) -> AllowList:
        return cls(tuple(e.strip().lower() for e in entries if e.strip()))

    def allows(self, url: str) -> bool:
        if not self.entries:
            return True
        target = _address(url)
        if target is None:
            return False
        return any(_matches(entry, target) for entry in self.entries)


def _address(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        return None  # credentials in the URL are not ours to forward
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme, 0)


def _matches(entry: str, target: tuple[str, str, int]) -> bool:
    scheme, host, port = target
    want_scheme: str | None = None
    if "://" in entry:
        want_scheme, entry = entry.split("://", 1)
    entry = entry.rstrip("/")
    want_port: int | None = None
    if entry.count(":") == 1:
        entry, raw_port = entry.split(":")
        if not raw_port.isdigit():
            return False
        want_port = int(raw_port)
    if want_scheme is not None and want_scheme != scheme:
        return False
    if want_port is not None and want_port != port:
        return False
    return fnmatch.fnmatchcase(host, entry)
