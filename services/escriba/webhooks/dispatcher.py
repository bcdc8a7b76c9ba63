"""Delivering webhooks: the gateway's pull consumer on the webhooks work queue.

Each delivery is a JetStream message, so it survives restarts and is handed to another gateway
replica when one stops. An attempt POSTs the task's event, signed (Standard Webhooks), under the
outbound address policy; every attempt is recorded on the task. A 2xx answer acknowledges the
message; anything else is retried after the configured backoff until the attempts run out. A
refused address, a redirect loop or a receiver that says the endpoint is gone (410) ends delivery
at once: retrying cannot help. The ``webhook-id`` is the same for every attempt, so a receiver
dedupes the at-least-once copies.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format
from nats.js import api

from escriba.bus import Job, JobWorker
from escriba.bus.topology import ensure_consumer
from escriba.common.errors import EscribaError, PermanentError, TransientError
from escriba.common.outbound import OutboundSettings, blocked_cause, client_session, open_following
from escriba.common.security import read_secret
from escriba.common.settings import SettingsError
from escriba.db.errors import TaskNotFound
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.taskpb import task_to_pb
from escriba.v1 import jobs_pb2
from escriba.webhooks.settings import WebhookSettings
from escriba.webhooks.signing import parse_secret, signed_headers

log = logging.getLogger(__name__)

#: Largest event sent: past it, the segments are left out (the text stays; GetTask has the rest).
MAX_EVENT_BYTES = 1024 * 1024
USER_AGENT = "Escriba-Webhooks/1"


class DeliveryFailed(TransientError):
    reason = "webhook_failed"


class DeliveryRefused(PermanentError):
    reason = "webhook_refused"


def event_body(job: jobs_pb2.WebhookJob, task: Any, *, at: int) -> bytes:
    """The event as JSON: its type, when, and the task (bounded in size)."""
    data = json_format.MessageToDict(task, preserving_proto_field_name=True)
    event = {"type": job.event, "timestamp": at, "data": data}
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    if len(body) > MAX_EVENT_BYTES:
        data.get("result", {}).pop("segments", None)
        data.get("result", {}).pop("srt", None)
        data.get("result", {}).pop("vtt", None)
        event["truncated"] = True
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    return body


def webhook_id(job: jobs_pb2.WebhookJob) -> str:
    return f"msg_{job.task_id}_{job.event.removeprefix('task.')}"


class WebhookDispatcher:
    """A server component: no gRPC services of its own; a worker while the process runs."""

    service_names: Sequence[str] = ()

    def __init__(
        self, runtime: PipelineRuntime, settings: WebhookSettings, outbound: OutboundSettings
    ) -> None:
        self._runtime = runtime
        self._settings = settings
        self._outbound = outbound
        self._key = b""
        self._worker: JobWorker | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._settings.secret_file)

    def register(self, server: grpc.aio.Server) -> None:
        return None

    def load_key(self) -> None:
        """Read the signing key now, so a missing or bad secret stops start-up naming the variable."""
        if not self.enabled:
            return
        try:
            self._key = parse_secret(read_secret("ESCRIBA_WEBHOOK_SECRET_FILE", self._settings.secret_file))
        except ValueError as exc:
            if isinstance(exc, SettingsError):
                raise
            raise SettingsError("ESCRIBA_WEBHOOK_SECRET_FILE", str(exc)) from exc
        if len(self._key) < 16:
            raise SettingsError("ESCRIBA_WEBHOOK_SECRET_FILE", "the secret is shorter than 16 bytes")

    async def start(self) -> None:
        if not self.enabled:
            return
        self.load_key()
        pipeline = self._runtime.pipeline
        names = pipeline.names
        nats_settings = dataclasses.replace(
            pipeline.nats_settings,
            max_deliver=self._settings.max_attempts,
            backoff_s=self._settings.backoff_s,
        )
        await ensure_consumer(
            pipeline.js,
            names.webhooks_stream,
            api.ConsumerConfig(
                name=names.webhook_consumer,
                durable_name=names.webhook_consumer,
                description="Escriba webhook dispatchers",
                filter_subject=names.webhook_subject,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=max(nats_settings.ack_wait_s, self._settings.timeout_s * 2),
                max_deliver=self._settings.max_attempts,
                max_ack_pending=max(64, self._settings.max_in_flight * 4),
                replay_policy=api.ReplayPolicy.INSTANT,
                num_replicas=nats_settings.replicas,
            ),
        )
        self._session = client_session(
            self._outbound,
            total_timeout_s=self._settings.timeout_s,
            headers={"User-Agent": USER_AGENT},
        )
        self._worker = JobWorker(
            pipeline.nc,
            stream=names.webhooks_stream,
            consumer=names.webhook_consumer,
            handler=self.deliver,
            on_give_up=self._given_up,
            settings=nats_settings,
            max_in_flight=self._settings.max_in_flight,
        )
        await self._worker.start()

    async def stop(self) -> None:
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # One attempt ----------------------------------------------------------------------------------

    async def deliver(self, job: Job) -> None:
        message = jobs_pb2.WebhookJob.FromString(job.data)
        repo = self._runtime.pipeline.repo
        try:
            record = await repo.get(message.task_id, owner_id=None)
        except TaskNotFound:
            log.info("webhook dropped: its task is gone", extra={"task_id": message.task_id})
            return
        now = int(time.time())
        body = event_body(message, task_to_pb(record), at=now)
        headers = signed_headers(self._key, webhook_id(message), now, body)
        attempt = job.meta.delivery_count
        started = time.perf_counter()
        status, error, failure = 0, "", None
        assert self._session is not None
        try:
            response = await open_following(
                self._session, "POST", message.url, settings=self._outbound, data=body, headers=headers
            )
            async with response:
                status = response.status
                await response.read()
            if not 200 <= status < 300:
                error = f"the receiver answered HTTP {status}"
                failure = (DeliveryRefused if status == 410 else DeliveryFailed)(error)
        except EscribaError as exc:  # the address policy, a redirect loop
            error, failure = exc.message, DeliveryRefused(exc.message)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            blocked = blocked_cause(exc)
            if blocked is not None:
                error, failure = blocked.message, DeliveryRefused(blocked.message)
            elif isinstance(exc, TimeoutError):
                error = f"no answer within {self._settings.timeout_s:g} s"
                failure = DeliveryFailed(error)
            else:
                error = f"{type(exc).__name__}: {exc}"
                failure = DeliveryFailed(error)
        duration_ms = (time.perf_counter() - started) * 1000
        await repo.record_webhook_attempt(
            message.task_id,
            attempt,
            http_status=status,
            error=error,
            duration_ms=duration_ms,
            delivered=failure is None,
        )
        log.info(
            "webhook attempt",
            extra={"task_id": message.task_id, "attempt": attempt, "http_status": status, "error": error},
        )
        if failure is not None:
            raise failure

    async def _given_up(self, job: Job, error: BaseException) -> None:
        log.warning(
            "webhook given up",
            extra={"task_id": job.task_id, "attempts": job.meta.delivery_count, "error": str(error)},
        )
