"""Every JetStream name Escriba uses, derived from one prefix.

The names are a contract with the operator (it reads the jobs stream and consumers) and the Helm chart, so
they live in one place. Deriving them all from a single prefix is what lets tests (and several installs
sharing one NATS account) run side by side without seeing each other's jobs: the default prefix ``escriba``
gives exactly the documented names, ``t1a2`` gives ``t1a2.jobs.preprocess``, ``T1A2_JOBS``, ``t1a2-audio``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from escriba.stages import STAGES, Stage

__all__ = ["DEFAULT_PREFIX", "BusNames", "Stage", "prefix_problem"]

DEFAULT_PREFIX = "escriba"

# Lower-case so subjects and bucket names stay conventional; the stream names use the upper-cased form.
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# A subject token: no separators, wildcards or whitespace.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_=:-]+$")


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot name subjects, streams and buckets, or None when it can."""
    if _PREFIX_RE.match(prefix):
        return None
    return f"must be 1-32 characters of a-z, 0-9, '_' or '-' starting with a letter, got {prefix!r}"


@dataclass(frozen=True)
class BusNames:
    """Subjects, streams, consumers and buckets for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        problem = prefix_problem(self.prefix)
        if problem:
            raise ValueError(f"NATS prefix {problem}")

    # Streams ------------------------------------------------------------------------------------

    @property
    def jobs_stream(self) -> str:
        """Work-queue stream holding every stage's jobs (a job is removed once acknowledged)."""
        return f"{self.prefix.upper()}_JOBS"

    @property
    def events_stream(self) -> str:
        """Limits-retention stream of task events, kept briefly for late watchers."""
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def webhooks_stream(self) -> str:
        """Work-queue stream of webhook deliveries (one message per terminal task with a webhook)."""
        return f"{self.prefix.upper()}_WEBHOOKS"

    # Subjects -----------------------------------------------------------------------------------

    @property
    def webhook_subject(self) -> str:
        return f"{self.prefix}.webhooks"

    def job_subject(self, stage: Stage, route: str | None = None) -> str:
        """``stage``'s subject; ``route`` (a model's token) gives that model's own transcription
        subject, ``<prefix>.jobs.transcribe.<model>`` (the default model keeps the plain one)."""
        base = f"{self.prefix}.jobs.{STAGES[stage].subject_token}"
        if route is None:
            return base
        if not _TOKEN_RE.match(route):
            raise ValueError(f"route {route!r} cannot be a subject token")
        return f"{base}.{route}"

    @property
    def job_subjects(self) -> tuple[str, ...]:
        """What the jobs stream captures: every stage's subject, and every model's transcription one."""
        plain = tuple(self.job_subject(stage) for stage in Stage)
        return (*plain, f"{self.job_subject(Stage.TRANSCRIPTION)}.*")

    def event_subject(self, task_id: str) -> str:
        if not _TOKEN_RE.match(task_id):
            raise ValueError(f"task id {task_id!r} cannot be a subject token")
        return f"{self.prefix}.events.task.{task_id}"

    @property
    def events_wildcard(self) -> str:
        """Every task's events (what the events stream captures)."""
        return f"{self.prefix}.events.>"

    # Consumers ----------------------------------------------------------------------------------

    @staticmethod
    def consumer(stage: Stage, route: str | None = None) -> str:
        """Durable pull consumer of ``stage`` on the jobs stream (scoped by the stream, so unprefixed);
        a model's own transcription consumer is ``transcription-<model>``."""
        return stage.value if route is None else f"{stage.value}-{route}"

    #: Durable pull consumer of the webhook dispatchers (gateway replicas) on the webhooks stream.
    webhook_consumer = "webhooks"

    # Buckets ------------------------------------------------------------------------------------

    @property
    def audio_bucket(self) -> str:
        """Object store for uploaded audio, as received."""
        return f"{self.prefix}-audio"

    @property
    def normalized_bucket(self) -> str:
        """Object store caching preprocessed (16 kHz mono) audio, keyed by input hash and settings."""
        return f"{self.prefix}-normalized"

    @property
    def transcripts_bucket(self) -> str:
        """KV cache of transcripts, keyed by audio hash, model and decoding options."""
        return f"{self.prefix}-transcripts"

    @property
    def corrections_bucket(self) -> str:
        """KV cache of corrected text, keyed by text hash and rules version."""
        return f"{self.prefix}-corrections"
