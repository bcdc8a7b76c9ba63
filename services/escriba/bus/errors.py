"""Errors of the JetStream plumbing, in the shared hierarchy so workers and servicers treat them alike."""

from __future__ import annotations

from escriba.common.errors import PermanentError, TransientError


class BusUnavailableError(TransientError):
    """NATS cannot be reached or did not answer in time; retrying later may work."""

    reason = "nats_unavailable"


class TopologyError(PermanentError):
    """A stream, consumer or bucket exists with settings that cannot be changed in place."""

    reason = "nats_topology"


class DeliveriesExhaustedError(PermanentError):
    """A job was delivered as often as allowed without being finished (its workers were lost)."""

    reason = "deliveries_exhausted"


class WorkerDiedError(PermanentError):
    """A job's workers died while running it, as often as the stage allows (a recording that needs
    more memory than a pod has kills every pod it is handed to): the task fails instead."""

    reason = "worker_died"


class ObjectMissingError(PermanentError):
    """An object named by a job is not in the store (expired or never written)."""

    reason = "object_missing"


class ObjectReadError(TransientError):
    """An object could not be read whole (it changed while being read, or NATS dropped out)."""

    reason = "object_read_failed"


class JobTimeoutError(TransientError):
    """A job ran past its time limit and was cancelled; another attempt (maybe on another replica) may
    finish, and the last one fails the task with this reason."""

    reason = "job_timeout"


class BusFullError(TransientError):
    """JetStream refused a message because its stream or bucket is at its size cap: retry later, once
    consumers or deletions (or TTLs) have made room. Queued work is never dropped to make room."""

    reason = "nats_full"
