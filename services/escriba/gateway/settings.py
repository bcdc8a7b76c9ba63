"""Settings of the gateway (``ESCRIBA_GATEWAY_*``)."""

from __future__ import annotations

from dataclasses import dataclass

from escriba.common.settings import at_least, between, load, positive, setting, settings_class


@settings_class
@dataclass(frozen=True)
class GatewaySettings:
    max_upload_bytes: int = setting(
        "ESCRIBA_GATEWAY_MAX_UPLOAD_BYTES",
        1024**3,
        "largest accepted upload (bytes); larger uploads get RESOURCE_EXHAUSTED while streaming",
        check=at_least(1),
    )
    default_owner: str = setting(
        "ESCRIBA_GATEWAY_DEFAULT_OWNER",
        "anonymous",
        "owner recorded for tasks when authentication is off",
    )
    max_queued_per_owner: int = setting(
        "ESCRIBA_GATEWAY_MAX_QUEUED_PER_OWNER",
        0,
        "unfinished tasks (queued or in a stage) one owner may have; more answer RESOURCE_EXHAUSTED"
        " (0: unlimited)",
        check=at_least(0),
    )
    max_stored_bytes_per_owner: int = setting(
        "ESCRIBA_GATEWAY_MAX_STORED_BYTES_PER_OWNER",
        16 * 1024**3,
        "bytes of uploads one owner's unfinished tasks may hold in the object store; an upload that would"
        " pass it answers RESOURCE_EXHAUSTED while streaming (0: unlimited)",
        check=at_least(0),
    )
    outbox_after_s: float = setting(
        "ESCRIBA_GATEWAY_OUTBOX_AFTER_S",
        30.0,
        "seconds a task's first job may stay unpublished (a gateway that died between storing the task"
        " and queueing it) before any gateway replica publishes it; keep it below"
        " ESCRIBA_NATS_DUPLICATE_WINDOW_S so a job that was published after all is dropped as a duplicate",
        check=between(1, 3600),
    )
    outbox_interval_s: float = setting(
        "ESCRIBA_GATEWAY_OUTBOX_INTERVAL_S",
        10.0,
        "seconds between two looks for unpublished first jobs (0: this replica does not look)",
        check=between(0, 3600),
    )
    watch_poll_s: float = setting(
        "ESCRIBA_GATEWAY_WATCH_POLL_S",
        5.0,
        "seconds between database re-reads while a WatchTask waits for events (events are best-effort)",
        check=between(0.1, 300),
    )
    transcribe_timeout_s: float = setting(
        "ESCRIBA_GATEWAY_TRANSCRIBE_TIMEOUT_S",
        3600.0,
        "longest a synchronous Transcribe call waits when the caller sets no deadline (seconds)",
        check=positive,
    )

    #: Whether this gateway delivers webhooks (it has a signing secret); set by its wiring, not read.
    accept_webhooks: bool = False

    @classmethod
    def from_env(cls) -> GatewaySettings:
        return load(cls)


@settings_class
@dataclass(frozen=True)
class HttpSettings:
    """The OpenAI-compatible HTTP API, served by the gateway process next to its gRPC port."""

    enabled: bool = setting(
        "ESCRIBA_HTTP_ENABLED", True, "serve the OpenAI-compatible HTTP API from the gateway"
    )
    port: int = setting(
        "ESCRIBA_HTTP_PORT",
        8080,
        "TCP port of the OpenAI-compatible HTTP API (0: any free port); TLS and tokens as for gRPC",
        check=between(0, 65535),
    )
    body_idle_s: float = setting(
        "ESCRIBA_HTTP_BODY_IDLE_S",
        60.0,
        "longest a request body may go without sending more, seconds; then 408 (a client that opens a"
        " request and trickles its body holds a connection and a spool file meanwhile)",
        check=positive,
    )

    @classmethod
    def from_env(cls) -> HttpSettings:
        return load(cls)
