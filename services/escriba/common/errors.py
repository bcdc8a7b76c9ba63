"""The error hierarchy shared by every stage.

Domain code raises these; only servicers translate them to gRPC status codes and only workers
decide from ``transient`` whether a job is retried (with backoff) or its task is failed. Every error
carries a short machine ``reason`` (a metric label, a task's ``error`` column prefix) and a message a
person can act on. Causes are chained with ``raise ... from exc``.
"""

from __future__ import annotations


class EscribaError(Exception):
    """Base of every error Escriba raises on purpose."""

    reason: str = "internal"
    #: True when the same request may succeed later (retry with backoff); False fails the task.
    transient: bool = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class PermanentError(EscribaError):
    """Retrying cannot help: the input or the request is wrong."""


class TransientError(EscribaError):
    """A dependency is not ready or failed for now: retry with backoff."""

    transient = True
    reason = "unavailable"


class InvalidInputError(PermanentError):
    """The request or its payload is malformed (gRPC INVALID_ARGUMENT)."""

    reason = "invalid_input"


class LimitExceededError(PermanentError):
    """The input is over a configured limit (gRPC RESOURCE_EXHAUSTED)."""

    reason = "limit_exceeded"


class NotReadyError(TransientError):
    """The service is starting (e.g. the model is loading) (gRPC UNAVAILABLE)."""

    reason = "not_ready"


class DeadlineError(TransientError):
    """The caller's deadline passed before the work finished (gRPC DEADLINE_EXCEEDED)."""

    reason = "deadline_exceeded"
