"""What a refused JetStream publish means, for every writer (jobs, events, objects, KV entries).

A stream at its ``max_bytes`` with ``DiscardNew`` answers a publish with error 10077 ("maximum bytes
exceeded"), as a 503 that nats-py raises as ``ServiceUnavailableError``. Left alone it escapes as a
bare nats error (INTERNAL at the gateway); here it becomes :class:`BusFullError`, transient and naming
the cap, and any other refusal :class:`BusUnavailableError`.
"""

from __future__ import annotations

from nats.js.errors import APIError

from escriba.bus.errors import BusFullError, BusUnavailableError

#: JetStream's "stream store failed" (NewJSStreamStoreFailedError): the server could not store the
#: message; with a cap it says "maximum bytes exceeded" or "maximum messages exceeded".
ERR_STORE_FAILED = 10077


def is_full(exc: APIError) -> bool:
    description = (exc.description or "").lower()
    return exc.err_code == ERR_STORE_FAILED and "maximum" in description


def refusal(exc: APIError, where: str) -> BusFullError | BusUnavailableError:
    """The Escriba error for JetStream refusing to store a message on ``where``."""
    if is_full(exc):
        return BusFullError(
            f"{where} is full ({exc.description}): its ESCRIBA_NATS_*_MAX_BYTES cap is reached; retry"
            " once queued work has drained"
        )
    return BusUnavailableError(f"JetStream refused to store a message on {where}: {exc.description}")
