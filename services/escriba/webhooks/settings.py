"""Settings of webhook delivery (``ESCRIBA_WEBHOOK_*``), read by the gateway that delivers them."""

from __future__ import annotations

from dataclasses import dataclass

from escriba.common.settings import at_least, load, positive, setting, settings_class


def _check_backoff(raw: str) -> str | None:
    try:
        values = [float(item) for item in raw.split(",") if item.strip()]
    except ValueError as exc:
        return f"expected comma-separated seconds such as '5,30,120': {exc}"
    if not values or any(v < 0 for v in values):
        return "expected at least one delay, none negative"
    return None


@settings_class
@dataclass(frozen=True)
class WebhookSettings:
    secret_file: str = setting(
        "ESCRIBA_WEBHOOK_SECRET_FILE",
        "",
        "file with the HMAC-SHA256 key deliveries are signed with (whsec_<base64> or raw bytes);"
        " empty: tasks asking for a webhook are refused",
    )
    timeout_s: float = setting(
        "ESCRIBA_WEBHOOK_TIMEOUT_S",
        10.0,
        "longest one delivery attempt may take, connection included (seconds); slower is a failed attempt",
        check=positive,
    )
    max_attempts: int = setting(
        "ESCRIBA_WEBHOOK_MAX_ATTEMPTS",
        8,
        "delivery attempts before a webhook is given up (each recorded on the task)",
        check=at_least(1),
    )
    backoff_s: str = setting(
        "ESCRIBA_WEBHOOK_BACKOFF_S",
        "5,30,120,600,1800,3600,7200",
        "seconds before retry 1, 2, ... of a failed delivery, comma-separated (the last repeats);"
        " with the attempts, this bounds how long a receiver may stay down",
        check=_check_backoff,
    )
    max_in_flight: int = setting(
        "ESCRIBA_WEBHOOK_MAX_IN_FLIGHT",
        16,
        "deliveries one gateway makes at once",
        check=at_least(1),
    )

    @classmethod
    def from_env(cls) -> WebhookSettings:
        return load(cls)

    @property
    def backoff(self) -> tuple[float, ...]:
        return tuple(float(item) for item in self.backoff_s.split(",") if item.strip())

    @property
    def retry_window_s(self) -> float:
        """How long after the first attempt the last one can come."""
        delays = self.backoff
        return sum(delays[min(i, len(delays) - 1)] for i in range(self.max_attempts - 1))
