"""Settings of the operator process (not of one autoscaler: those live in each resource's spec)."""

from __future__ import annotations

from dataclasses import dataclass

from escriba.common.settings import between, positive, setting, settings_class


@settings_class
@dataclass(frozen=True)
class OperatorSettings:
    peering_name: str = setting(
        "ESCRIBA_OPERATOR_PEERING_NAME",
        "escriba-operator",
        "kopf peering object the operator's replicas share; only the highest-priority live one acts",
    )
    standalone: bool = setting(
        "ESCRIBA_OPERATOR_STANDALONE",
        False,
        "true: run without peering (a single replica, or a laptop); false: require the peering object",
    )
    priority: int = setting(
        "ESCRIBA_OPERATOR_PRIORITY",
        0,
        "peering priority of this replica; a live replica with a higher one pauses this one, and equal "
        "ones pause each other; 0: from the start time (the replica started first acts)",
    )
    peering_lifetime_s: int = setting(
        "ESCRIBA_OPERATOR_PEERING_LIFETIME_S",
        60,
        "seconds a replica's peering entry lives without a keep-alive; a replica that died without "
        "leaving (SIGKILL, a lost node) stops holding the others back after this",
        check=positive,
    )
    namespaces: tuple[str, ...] = setting(
        "ESCRIBA_OPERATOR_NAMESPACES",
        (),
        "comma-separated namespaces (globs allowed) to serve; empty: the whole cluster",
    )
    interval_s: float = setting(
        "ESCRIBA_OPERATOR_INTERVAL_S",
        15.0,
        "seconds between two evaluations of one autoscaler",
        check=positive,
    )
    request_timeout_s: float = setting(
        "ESCRIBA_OPERATOR_REQUEST_TIMEOUT_S",
        5.0,
        "seconds one request to NATS, Prometheus or the Kubernetes API may take",
        check=positive,
    )
    metrics_port: int = setting(
        "ESCRIBA_OPERATOR_METRICS_PORT",
        9090,
        "TCP port of the Prometheus /metrics endpoint; 0 disables it",
        check=between(0, 65535),
    )
    health_port: int = setting(
        "ESCRIBA_OPERATOR_HEALTH_PORT",
        8080,
        "TCP port of the liveness endpoint /healthz; 0 disables it",
        check=between(0, 65535),
    )
    allowed_endpoints: tuple[str, ...] = setting(
        "ESCRIBA_OPERATOR_ALLOWED_ENDPOINTS",
        (),
        "comma-separated NATS and Prometheus addresses an autoscaler may name (host, host:port or "
        "scheme://host:port; * globs in hosts); empty: any (the chart sets the platform's own)",
    )
    bind_host: str = setting(
        "ESCRIBA_OPERATOR_BIND_HOST",
        "0.0.0.0",
        "address the metrics and liveness endpoints listen on",
    )
    log_level: str = setting(
        "ESCRIBA_OPERATOR_LOG_LEVEL",
        "info",
        "log level of the operator and kopf",
        choices=("debug", "info", "warning", "error"),
    )
