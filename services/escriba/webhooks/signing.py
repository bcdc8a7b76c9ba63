"""Standard Webhooks signatures (https://www.standardwebhooks.com): what receivers already verify.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, HMAC-SHA256 with the shared secret,
sent base64-encoded as ``webhook-signature: v1,<signature>``. The id is stable per task and event, so
a receiver that sees a delivery twice (at-least-once) can drop the copy; the timestamp lets it refuse
replays of old deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
#: A receiver should refuse a delivery whose timestamp is further than this from its clock.
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A delivery that does not verify (wrong secret, altered body, too old)."""


def parse_secret(raw: bytes) -> bytes:
    """The HMAC key in a secret file: ``whsec_<base64>`` as Standard Webhooks libraries write it, or
    the file's bytes as they are (surrounding whitespace dropped)."""
    text = raw.strip()
    if text.startswith(SECRET_PREFIX.encode()):
        try:
            return base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
        except ValueError as exc:
            raise ValueError(f"a {SECRET_PREFIX} secret must be base64 after the prefix") from exc
    return text


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    key: bytes, headers: Mapping[str, str], body: bytes, *, now: int, tolerance_s: int = DEFAULT_TOLERANCE_S
) -> None:
    """What a receiver does; raises :class:`SignatureError`. Any of several space-separated
    signatures may match (a sender rotating its secret signs with both)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        offered = lowered["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise SignatureError("missing or malformed webhook headers") from exc
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError("the delivery's timestamp is outside the tolerance")
    expected = signature(key, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise SignatureError("no signature matches")
