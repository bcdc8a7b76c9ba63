"""JetStream plumbing shared by every stage: names, connection, topology, jobs, workers, audio and caches.

Transport only: the engines never import this package; servicers and workers call it around them.
"""

from escriba.bus.connection import connect
from escriba.bus.errors import (
    BusFullError,
    BusUnavailableError,
    DeliveriesExhaustedError,
    JobTimeoutError,
    ObjectMissingError,
    ObjectReadError,
    TopologyError,
    WorkerDiedError,
)
from escriba.bus.kv import KvCache, sanitize_key
from escriba.bus.names import DEFAULT_PREFIX, BusNames, Stage
from escriba.bus.objects import AudioStore, StoredObject
from escriba.bus.publish import (
    AUDIO_DURATION_HEADER,
    MSG_ID_HEADER,
    STAGE_HEADER,
    TASK_ID_HEADER,
    audio_duration_from_headers,
    job_msg_id,
    publish_event,
    publish_job,
)
from escriba.bus.settings import NatsSettings
from escriba.bus.topology import Topology, delete_topology, ensure_topology
from escriba.bus.worker import GiveUp, Handler, Job, JobMeta, JobWorker

__all__ = [
    "AUDIO_DURATION_HEADER",
    "DEFAULT_PREFIX",
    "MSG_ID_HEADER",
    "STAGE_HEADER",
    "TASK_ID_HEADER",
    "AudioStore",
    "BusFullError",
    "BusNames",
    "BusUnavailableError",
    "DeliveriesExhaustedError",
    "GiveUp",
    "Handler",
    "Job",
    "JobMeta",
    "JobTimeoutError",
    "JobWorker",
    "KvCache",
    "NatsSettings",
    "ObjectMissingError",
    "ObjectReadError",
    "Stage",
    "StoredObject",
    "Topology",
    "TopologyError",
    "WorkerDiedError",
    "audio_duration_from_headers",
    "connect",
    "delete_topology",
    "ensure_topology",
    "job_msg_id",
    "publish_event",
    "publish_job",
    "sanitize_key",
]
