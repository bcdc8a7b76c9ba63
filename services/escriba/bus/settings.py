"""How every service reaches NATS and how its queues behave, from ``ESCRIBA_NATS_*`` variables.

One settings class for all services, because the topology (ack wait, delivery bound, TTLs) must agree
between whoever creates it at start-up; every service calls ``ensure_topology`` with the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

from escriba.bus.names import BusNames, prefix_problem
from escriba.common.settings import (
    SettingsError,
    at_least,
    between,
    positive,
    resolve_secret_file,
    setting,
    settings_class,
)

DAY_S = 86_400.0
MIB = 1024**2
GIB = 1024**3
#: The smallest cap accepted: below it a single job or chunk (up to 1 MiB) might never fit.
MIN_CAP_BYTES = 4 * MIB


def _parse_backoff(raw: str) -> tuple[float, ...]:
    values = tuple(float(item) for item in raw.split(",") if item.strip())
    if not values:
        raise ValueError("expected at least one delay")
    if any(not (0 < v < float("inf")) for v in values):
        raise ValueError("every delay must be a finite number of seconds > 0")
    return values


def _check_backoff(raw: str) -> str | None:
    try:
        _parse_backoff(raw)
    except ValueError as exc:
        return f"expected comma-separated seconds such as '1,5,15,60': {exc}"
    return None


def _check_prefix(prefix: str) -> str | None:
    return prefix_problem(prefix)


def _check_cap(value: int) -> str | None:
    return None if value >= MIN_CAP_BYTES else f"must be at least {MIN_CAP_BYTES} bytes (4 MiB), got {value}"


def _check_non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be >= 0 (0 = never expire), got {value}"


@settings_class
@dataclass(frozen=True)
class NatsSettings:
    url: str = setting(
        "ESCRIBA_NATS_URL",
        "",
        "NATS server URL(s), comma-separated (nats://, tls://); empty = the local stack starts an embedded "
        "nats-server",
    )
    prefix: str = setting(
        "ESCRIBA_NATS_PREFIX",
        "escriba",
        "prefix of every subject, stream and bucket name (isolates installs or tests sharing one server)",
        check=_check_prefix,
    )
    creds_file: str = setting(
        "ESCRIBA_NATS_CREDS_FILE", "", "path of a NATS .creds file (JWT + NKey); empty = none"
    )
    tls_ca_file: str = setting(
        "ESCRIBA_NATS_TLS_CA_FILE",
        "",
        "CA bundle that signed the NATS servers' certificates (a private CA); implies TLS; empty = the"
        " system CAs for tls:// URLs",
    )
    tls_cert_file: str = setting(
        "ESCRIBA_NATS_TLS_CERT_FILE", "", "client certificate for NATS servers that verify clients (mTLS)"
    )
    tls_key_file: str = setting("ESCRIBA_NATS_TLS_KEY_FILE", "", "key of ESCRIBA_NATS_TLS_CERT_FILE")
    user: str = setting("ESCRIBA_NATS_USER", "", "NATS user name; empty = none")
    password: str = setting("ESCRIBA_NATS_PASSWORD", "", "NATS password (with ESCRIBA_NATS_USER)")
    token: str = setting("ESCRIBA_NATS_TOKEN", "", "NATS auth token; empty = none")
    user_file: str = setting(
        "ESCRIBA_NATS_USER_FILE", "", "file holding the NATS user name (instead of ESCRIBA_NATS_USER)"
    )
    password_file: str = setting(
        "ESCRIBA_NATS_PASSWORD_FILE",
        "",
        "file holding the NATS password (instead of ESCRIBA_NATS_PASSWORD: a mounted Secret)",
    )
    token_file: str = setting(
        "ESCRIBA_NATS_TOKEN_FILE", "", "file holding the NATS auth token (instead of ESCRIBA_NATS_TOKEN)"
    )
    connect_timeout_s: float = setting(
        "ESCRIBA_NATS_CONNECT_TIMEOUT_S", 5.0, "seconds one connection attempt may take", check=positive
    )
    startup_timeout_s: float = setting(
        "ESCRIBA_NATS_STARTUP_TIMEOUT_S",
        60.0,
        "seconds start-up keeps retrying the first connection before it fails",
        check=positive,
    )
    reconnect_wait_s: float = setting(
        "ESCRIBA_NATS_RECONNECT_WAIT_S", 2.0, "seconds between reconnection attempts", check=positive
    )
    max_reconnect: int = setting(
        "ESCRIBA_NATS_MAX_RECONNECT",
        -1,
        "reconnection attempts after a lost connection before giving up (-1 = forever)",
        check=at_least(-1),
    )
    request_timeout_s: float = setting(
        "ESCRIBA_NATS_REQUEST_TIMEOUT_S",
        5.0,
        "seconds a JetStream API call or publish acknowledgement may take",
        check=positive,
    )
    replicas: int = setting(
        "ESCRIBA_NATS_REPLICAS",
        1,
        "replicas of every stream and bucket (1 or 3 in a cluster)",
        check=between(1, 5),
    )
    max_deliver: int = setting(
        "ESCRIBA_NATS_MAX_DELIVER",
        5,
        "deliveries of a job before its task is failed with the last error",
        check=between(1, 100),
    )
    ack_wait_s: float = setting(
        "ESCRIBA_NATS_ACK_WAIT_S",
        30.0,
        "seconds without an ack or heartbeat before JetStream redelivers a job (a worker was lost)",
        check=positive,
    )
    backoff_s: str = setting(
        "ESCRIBA_NATS_BACKOFF_S",
        "1,5,15,60",
        "seconds to wait before retry 1, 2, ... of a failed job, comma-separated (the last repeats)",
        check=_check_backoff,
    )
    heartbeat_s: float = setting(
        "ESCRIBA_NATS_HEARTBEAT_S",
        10.0,
        "seconds between in-progress heartbeats of a running job (below ESCRIBA_NATS_ACK_WAIT_S)",
        check=positive,
    )
    job_timeout_s: float = setting(
        "ESCRIBA_NATS_JOB_TIMEOUT_S",
        1800.0,
        "seconds a job may run (plus ESCRIBA_NATS_JOB_TIMEOUT_PER_AUDIO_S per second of its audio, not"
        " counting waits behind other jobs) before it is cancelled and retried: heartbeats keep a hung"
        " job alive otherwise; 0 = no limit",
        check=at_least(0),
    )
    job_timeout_per_audio_s: float = setting(
        "ESCRIBA_NATS_JOB_TIMEOUT_PER_AUDIO_S",
        10.0,
        "extra seconds of run time a job gets per second of audio it carries (room for a slow model"
        " shared by several jobs at once)",
        check=at_least(0),
    )
    max_ack_pending: int = setting(
        "ESCRIBA_NATS_MAX_ACK_PENDING",
        1000,
        "jobs of one stage in flight across all its workers",
        check=at_least(1),
    )
    fetch_wait_s: float = setting(
        "ESCRIBA_NATS_FETCH_WAIT_S",
        5.0,
        "seconds one pull request waits for jobs (also the longest a stopping worker waits for it)",
        check=positive,
    )
    stop_grace_s: float = setting(
        "ESCRIBA_NATS_STOP_GRACE_S",
        20.0,
        "seconds a stopping worker lets running jobs finish before handing them back",
        check=at_least(0),
    )
    duplicate_window_s: float = setting(
        "ESCRIBA_NATS_DUPLICATE_WINDOW_S",
        120.0,
        "seconds a job's Nats-Msg-Id is remembered to drop duplicate publishes",
        check=positive,
    )
    events_max_age_s: float = setting(
        "ESCRIBA_NATS_EVENTS_MAX_AGE_S",
        3600.0,
        "seconds task events are kept for late watchers",
        check=positive,
    )
    audio_ttl_s: float = setting(
        "ESCRIBA_NATS_AUDIO_TTL_S",
        7 * DAY_S,
        "seconds uploaded audio is kept in the object store (0 = forever)",
        check=_check_non_negative,
    )
    normalized_ttl_s: float = setting(
        "ESCRIBA_NATS_NORMALIZED_TTL_S",
        1 * DAY_S,
        "seconds preprocessed audio stays cached (0 = forever)",
        check=_check_non_negative,
    )
    transcripts_ttl_s: float = setting(
        "ESCRIBA_NATS_TRANSCRIPTS_TTL_S",
        7 * DAY_S,
        "seconds a cached transcript is kept (0 = forever)",
        check=_check_non_negative,
    )
    corrections_ttl_s: float = setting(
        "ESCRIBA_NATS_CORRECTIONS_TTL_S",
        30 * DAY_S,
        "seconds a cached correction is kept (0 = forever)",
        check=_check_non_negative,
    )

    # Size caps. JetStream reserves each stream's max_bytes against the server's storage when the
    # stream is created (a create over what is left is refused), so the defaults add up to about 7.5
    # GiB per install and replica: they fit the official nats chart's 10 GiB file store.
    jobs_max_bytes: int = setting(
        "ESCRIBA_NATS_JOBS_MAX_BYTES",
        512 * MIB,
        "bytes the job queue (every stage's jobs) may hold; when full, new jobs are refused (creates"
        " answer UNAVAILABLE, a stage retries its hand-on later), queued ones are never dropped",
        check=_check_cap,
    )
    events_max_bytes: int = setting(
        "ESCRIBA_NATS_EVENTS_MAX_BYTES",
        128 * MIB,
        "bytes of task events kept for late watchers; when full, the oldest events are dropped",
        check=_check_cap,
    )
    webhooks_max_bytes: int = setting(
        "ESCRIBA_NATS_WEBHOOKS_MAX_BYTES",
        128 * MIB,
        "bytes of webhook deliveries waiting; when full, new deliveries are refused, queued ones kept",
        check=_check_cap,
    )
    audio_max_bytes: int = setting(
        "ESCRIBA_NATS_AUDIO_MAX_BYTES",
        4 * GIB,
        "bytes of uploaded audio of unfinished tasks the object store may hold; when full, uploads"
        " are refused (UNAVAILABLE) until tasks finish",
        check=_check_cap,
    )
    normalized_max_bytes: int = setting(
        "ESCRIBA_NATS_NORMALIZED_MAX_BYTES",
        2 * GIB,
        "bytes of preprocessed audio (cache and hand-over to transcription); when full, preprocessing"
        " retries until entries expire (ESCRIBA_NATS_NORMALIZED_TTL_S)",
        check=_check_cap,
    )
    transcripts_max_bytes: int = setting(
        "ESCRIBA_NATS_TRANSCRIPTS_MAX_BYTES",
        512 * MIB,
        "bytes of cached transcripts; when full, new transcripts are not cached (tasks still finish)",
        check=_check_cap,
    )
    corrections_max_bytes: int = setting(
        "ESCRIBA_NATS_CORRECTIONS_MAX_BYTES",
        256 * MIB,
        "bytes of cached corrections; when full, new corrections are not cached (tasks still finish)",
        check=_check_cap,
    )

    def __post_init__(self) -> None:
        for name in ("user", "password", "token"):
            variable = f"ESCRIBA_NATS_{name.upper()}"
            resolve_secret_file(self, name, variable, f"{name}_file", f"{variable}_FILE")
        # Checks that involve two variables; each names the one to change.
        if self.heartbeat_s >= self.ack_wait_s:
            raise SettingsError(
                "ESCRIBA_NATS_HEARTBEAT_S",
                f"must be below ESCRIBA_NATS_ACK_WAIT_S ({self.ack_wait_s}), got {self.heartbeat_s}: "
                "a running job would be redelivered between heartbeats",
            )
        if self.token and (self.user or self.creds_file):
            raise SettingsError("ESCRIBA_NATS_TOKEN", "cannot be combined with a user or a creds file")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            missing = "ESCRIBA_NATS_TLS_KEY_FILE" if self.tls_cert_file else "ESCRIBA_NATS_TLS_CERT_FILE"
            raise SettingsError(missing, "a NATS client certificate needs both its certificate and key")
        if self.password and not self.user:
            raise SettingsError("ESCRIBA_NATS_USER", "is required when ESCRIBA_NATS_PASSWORD is set")
        problem = _check_backoff(self.backoff_s)
        if problem:
            raise SettingsError("ESCRIBA_NATS_BACKOFF_S", problem)

    @property
    def names(self) -> BusNames:
        return BusNames(self.prefix)

    @property
    def backoff(self) -> tuple[float, ...]:
        """Retry delays in seconds: delay ``i`` precedes delivery ``i + 2``; the last one repeats."""
        return _parse_backoff(self.backoff_s)

    def job_time_limit_s(self, audio_duration_s: float | None) -> float | None:
        """How long one job may run, or None for no limit: long audio legitimately takes longer."""
        if self.job_timeout_s <= 0:
            return None
        return self.job_timeout_s + self.job_timeout_per_audio_s * max(0.0, audio_duration_s or 0.0)

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]
