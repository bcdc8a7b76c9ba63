"""Settings of the JetStream worker that runs inside each stage service (``ESCRIBA_WORKER_*``)."""

from __future__ import annotations

from dataclasses import dataclass

from escriba.common.settings import at_least, load, setting, settings_class


@settings_class
@dataclass(frozen=True)
class WorkerSettings:
    enabled: bool = setting(
        "ESCRIBA_WORKER_ENABLED",
        True,
        "pull this stage's jobs from JetStream when ESCRIBA_NATS_URL is set (false: gRPC only)",
    )
    max_in_flight: int = setting(
        "ESCRIBA_WORKER_MAX_IN_FLIGHT",
        0,
        "jobs one worker process runs at once (0: the stage's default, e.g. the model's concurrency)",
        check=at_least(0),
    )

    @classmethod
    def from_env(cls) -> WorkerSettings:
        return load(cls)
