"""Connect to NATS the same way in every service: bounded start-up, endless quiet reconnects, logged.

A service that cannot reach NATS at start-up should fail its readiness within a bounded time and say so;
once running, it should ride out a server restart (reconnecting and resubscribing) and log each step so an
operator can line an outage up with the server's own logs.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import nats
from nats.aio.client import Client

from escriba.bus.errors import BusUnavailableError
from escriba.bus.settings import NatsSettings
from escriba.common.creds import creds_problem
from escriba.common.security import read_secret
from escriba.common.settings import SettingsError

log = logging.getLogger(__name__)


async def connect(settings: NatsSettings, *, url: str | None = None, name: str = "escriba") -> Client:
    """Open a connection to ``url`` (or ``ESCRIBA_NATS_URL``); raise BusUnavailableError when unreachable."""
    servers = [u.strip() for u in url.split(",") if u.strip()] if url else settings.servers
    if not servers:
        raise SettingsError("ESCRIBA_NATS_URL", "is empty and no embedded server was started")

    last_error: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        # A refused login is the reason to report, even when the server's reset of the refused
        # connection is the error that comes after it.
        if not (last_error and _is_refusal(last_error[0]) and not _is_refusal(exc)):
            last_error[:] = [exc]
        log.warning("nats error: %s", exc, extra={"nats_client": name})

    opened: list[Client] = []

    async def on_disconnected() -> None:
        if opened and opened[0].is_closed:
            return  # our own close(); on_closed logs it
        log.warning("nats disconnected; reconnecting", extra={"nats_client": name})

    async def on_reconnected() -> None:
        log.info("nats reconnected", extra={"nats_client": name})

    async def on_closed() -> None:
        log.info("nats connection closed", extra={"nats_client": name})

    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "reconnect_time_wait": settings.reconnect_wait_s,
        "max_reconnect_attempts": settings.max_reconnect,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "closed_cb": on_closed,
    }
    if settings.creds_file:
        _check_creds_file(settings.creds_file)
        options["user_credentials"] = settings.creds_file
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    if settings.user:
        options["user"] = settings.user
        options["password"] = settings.password
    if settings.token:
        options["token"] = settings.token
    where = ", ".join(_redact(s) for s in servers)
    # Waited for, not awaited: nats-py's connect can swallow a cancellation (a TLS handshake the server
    # drops), so a timeout around the await itself did not always end it. On time-out it is cancelled
    # and left to finish on its own; its outcome is read so that nothing reports it as unretrieved.
    connecting = asyncio.ensure_future(nats.connect(**options))
    connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
    try:
        done, _ = await asyncio.wait({connecting}, timeout=settings.startup_timeout_s)
        if not done:
            # nats-py keeps retrying a refused login too: say why, or an auth problem reads as an outage.
            why = f" (last error: {last_error[0]})" if last_error else ""
            raise BusUnavailableError(
                f"NATS at {where} (ESCRIBA_NATS_URL) not reachable within"
                f" {settings.startup_timeout_s:g}s{why}"
            )
        client: Client = connecting.result()
    except (OSError, nats.errors.Error) as exc:
        raise BusUnavailableError(f"cannot connect to NATS at {where}: {exc}") from exc
    finally:
        if not connecting.done():  # timed out, or the caller was cancelled meanwhile
            connecting.cancel()
    opened.append(client)
    log.info("nats connected", extra={"nats_client": name, "nats_server": _redact(client.connected_url)})
    return client


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """TLS to NATS with a private CA and/or a client certificate; None leaves it to the URL scheme
    (tls:// verifies with the system CAs)."""
    if not (settings.tls_ca_file or settings.tls_cert_file):
        return None
    # Unreadable files fail start-up naming their variable, rather than as a connection error later.
    for variable, path in (
        ("ESCRIBA_NATS_TLS_CA_FILE", settings.tls_ca_file),
        ("ESCRIBA_NATS_TLS_CERT_FILE", settings.tls_cert_file),
        ("ESCRIBA_NATS_TLS_KEY_FILE", settings.tls_key_file),
    ):
        if path:
            read_secret(variable, path)
    context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
    if settings.tls_cert_file:
        try:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                "ESCRIBA_NATS_TLS_CERT_FILE", f"the certificate and key cannot be used together: {exc}"
            ) from exc
    return context


def _check_creds_file(path: str) -> None:
    variable = "ESCRIBA_NATS_CREDS_FILE"
    problem = creds_problem(read_secret(variable, path).decode("utf-8", errors="replace"))
    if problem:
        raise SettingsError(variable, f"{path} is not a NATS .creds file: {problem}")


def _redact(url: Any) -> str:
    """A server URL fit for logs: credentials embedded in it are replaced."""
    text = url.geturl() if hasattr(url, "geturl") else str(url)
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _is_refusal(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "authorization" in text or "authentication" in text
