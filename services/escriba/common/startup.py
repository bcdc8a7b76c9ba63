"""Start-up failures a person can act on: which setting, what went wrong, no traceback.

A port already taken (two ``escriba serve`` processes on one host both wanting
``ESCRIBA_METRICS_PORT`` 9464), a certificate the process cannot read, a NATS or PostgreSQL that does
not answer: each ends the process with one line naming the setting and the cause, and a non-zero exit.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from escriba.common.errors import PermanentError


class StartupError(PermanentError):
    """The process cannot start as configured; ``setting`` names the variable to look at."""

    reason = "startup_failed"

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


_CAUSES = {
    errno.EADDRINUSE: "the port is already in use (another process listens there)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "the address is not one of this host's",
}


def describe_bind_error(exc: OSError) -> str:
    return _CAUSES.get(exc.errno or 0, exc.strerror or str(exc))


def probe_bind(host: str, port: int, *, quiet_if_free: bool = False) -> str:
    """Why ``host:port`` cannot be listened on, found by trying (for libraries that only say "failed");
    with ``quiet_if_free``, empty when it can."""
    if port == 0:
        return "no free port"
    bind_host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As servers bind (gRPC and http.server set it): a restarted process's old connections in
            # TIME_WAIT do not count as the port being taken, another process listening there does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bind_host, port))
    except OSError as exc:
        return describe_bind_error(exc)
    return "" if quiet_if_free else "the server library refused the address"


@contextmanager
def listening(setting: str, what: str, host: str, port: int) -> Iterator[None]:
    """Turn a failure to listen into a :class:`StartupError` naming ``setting``."""
    try:
        yield
    except OSError as exc:
        raise StartupError(
            setting, f"cannot listen on {host}:{port} for {what}: {describe_bind_error(exc)}"
        ) from exc
