"""Run a stage's jobs from its durable pull consumer, at least once, never losing one silently.

The worker pulls only as many jobs as it has free slots (so a GPU worker never holds jobs another replica
could run), keeps each running job alive with in-progress heartbeats (a 20-minute transcription must not be
redelivered after the ack wait), and settles every job one way: ack on success, a delayed nak for a
transient failure, or - when the error is permanent or the last delivery failed - ``on_give_up`` first (so
the pipeline records the task as failed with the reason) and then ``term``. A job whose workers all died
on its last delivery is reported by JetStream's max-deliveries advisory, which one worker of the group
turns into the same ``on_give_up`` call. Stopping stops pulling, lets running jobs finish within a grace
period, and hands the rest back with an immediate nak so another replica picks them up.

A job that kills its worker (a recording that needs more memory than a pod has) would otherwise be handed
to one pod after another until its deliveries run out. With ``max_deaths``, a delivery first counts the
earlier ones that ended without any settlement (JetStream's delivery count, less the naks of this
consumer: every worker of the stage hears the server's nak advisories, and its own naks count at once);
once ``max_deaths`` of them died, the task fails with that reason and the job is not run again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from escriba.bus.errors import DeliveriesExhaustedError, JobTimeoutError, TopologyError, WorkerDiedError
from escriba.bus.publish import (
    MSG_ID_HEADER,
    STAGE_HEADER,
    TASK_ID_HEADER,
    audio_duration_from_headers,
)
from escriba.bus.retry import decide, error_reason, retry_delay
from escriba.bus.settings import NatsSettings
from escriba.common import metrics, tracing
from escriba.common.logging import task_context

log = logging.getLogger(__name__)

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"
NAK_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.{stream}.{consumer}"
#: Jobs whose naks a worker remembers (the oldest are forgotten first): far more than are ever pending.
_REMEMBERED_JOBS = 10_000
#: How long a delivery that looks like one death too many waits for a late nak advisory before it
#: fails its task: the server sends advisories apart from deliveries, so an immediate hand-back's
#: advisory may come just after the job it handed back.
ADVISORY_GRACE_S = 0.5


@dataclass(frozen=True)
class JobMeta:
    """Where a job came from and how often it was delivered (``delivery_count`` is 1 on the first try)."""

    stream: str
    consumer: str
    stream_seq: int
    delivery_count: int
    max_deliver: int
    consumer_seq: int = 0
    pending: int = 0
    timestamp: datetime.datetime | None = None

    @property
    def last_attempt(self) -> bool:
        """True when a transient failure now fails the task instead of being retried."""
        return 0 < self.max_deliver <= self.delivery_count

    def waited_s(self, now: datetime.datetime | None = None) -> float | None:
        """Seconds since JetStream stored the job (its publish time), None when unknown.

        The timestamp is the NATS server's clock; a worker whose clock runs behind reads 0, not less.
        """
        if self.timestamp is None:
            return None
        now = now or datetime.datetime.now(datetime.UTC)
        return max(0.0, (now - self.timestamp).total_seconds())


class JobClock:
    """The running job's time limit, which its handler stops while it waits on other jobs' work.

    The limit is there to catch a hung handler, and it scales with the job's own audio; time spent
    queued behind other jobs (the worker's audio budget) is not this job's work, so it is not counted.
    """

    def __init__(
        self, timeout: asyncio.Timeout | None = None, *, now: Callable[[], float] | None = None
    ) -> None:
        self._timeout = timeout
        #: The loop's clock, which ``asyncio.Timeout`` deadlines are in (tests pass one they move).
        self._now = now

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        timeout = self._timeout
        when = timeout.when() if timeout is not None else None
        if timeout is None or when is None or timeout.expired():
            yield  # no limit, or already paused by an outer block
            return
        now = self._now or asyncio.get_running_loop().time
        remaining = when - now()
        timeout.reschedule(None)
        try:
            yield
        finally:
            timeout.reschedule(now() + max(0.0, remaining))


@dataclass(frozen=True)
class Job:
    """One delivered job: its payload, headers and delivery metadata."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    meta: JobMeta
    clock: JobClock = field(default_factory=JobClock, compare=False, repr=False)

    @property
    def task_id(self) -> str | None:
        return self.headers.get(TASK_ID_HEADER)

    @property
    def stage(self) -> str | None:
        return self.headers.get(STAGE_HEADER)

    @property
    def msg_id(self) -> str | None:
        return self.headers.get(MSG_ID_HEADER)

    @property
    def audio_duration_s(self) -> float | None:
        return audio_duration_from_headers(self.headers)


Handler = Callable[[Job], Awaitable[None]]
GiveUp = Callable[[Job, BaseException], Awaitable[None]]


@dataclass
class _Running:
    msg: Msg
    job: Job
    task: asyncio.Task[None] = field(init=False)


class JobWorker:
    """Pull jobs from a durable consumer and run ``handler`` on each, ``max_in_flight`` at most at once."""

    def __init__(
        self,
        nc: Client,
        *,
        stream: str,
        consumer: str,
        handler: Handler,
        on_give_up: GiveUp,
        settings: NatsSettings,
        max_in_flight: int = 1,
        max_deaths: int = 0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_deaths < 0:
            raise ValueError(f"max_deaths must be >= 0 (0: no bound), got {max_deaths}")
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=settings.request_timeout_s)
        self._stream = stream
        self._consumer = consumer
        self._handler = handler
        self._on_give_up = on_give_up
        self._settings = settings
        self._max_in_flight = max_in_flight
        self._max_deliver = settings.max_deliver
        self._running: dict[asyncio.Task[None], _Running] = {}
        self._stopping = asyncio.Event()
        self._sub: JetStreamContext.PullSubscription | None = None
        self._advisories: Subscription | None = None
        self._fetcher: asyncio.Task[None] | None = None
        #: Deaths tolerated per job before its task fails (0: only the delivery bound applies).
        self._max_deaths = max_deaths
        #: stream sequence -> the deliveries of that job that ended in a nak (retried or handed back).
        self._naked: collections.OrderedDict[int, set[int]] = collections.OrderedDict()
        self._nak_advisories: Subscription | None = None

    # Life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the durable consumer (created by ``ensure_topology``) and start pulling."""
        if self._fetcher is not None:
            raise RuntimeError("worker already started")
        try:
            info = await self._js.consumer_info(self._stream, self._consumer)
        except NotFoundError as exc:
            raise TopologyError(
                f"consumer {self._consumer} on stream {self._stream} does not exist; "
                "run ensure_topology first"
            ) from exc
        # The server enforces its own bound; follow it so "last attempt" means what JetStream does.
        self._max_deliver = info.config.max_deliver or -1
        self._sub = await self._js.pull_subscribe_bind(durable=self._consumer, stream=self._stream)
        # A queue group: one worker of the stage handles each advisory, so on_give_up runs once.
        self._advisories = await self._nc.subscribe(
            MAX_DELIVERIES_ADVISORY.format(stream=self._stream, consumer=self._consumer),
            queue=f"escriba-give-up-{self._stream}-{self._consumer}",
            cb=self._on_max_deliveries,
        )
        if self._max_deaths:
            # Every worker hears every nak (no queue group): the next delivery may come to any of them.
            self._nak_advisories = await self._nc.subscribe(
                NAK_ADVISORY.format(stream=self._stream, consumer=self._consumer), cb=self._on_nak
            )
        self._fetcher = asyncio.create_task(self._fetch_loop(), name=f"fetch {self._consumer}")
        log.info(
            "worker started",
            extra={"stream": self._stream, "consumer": self._consumer, "max_in_flight": self._max_in_flight},
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop pulling, give running jobs ``grace_s`` (default: settings) to finish, hand back the rest."""
        if self._fetcher is None or self._stopping.is_set():
            return
        grace = self._settings.stop_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        self._stopping.set()
        # The pull in progress ends within fetch_wait_s; jobs it still brings are handed back at once.
        await self._fetcher
        running = set(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            if late:
                log.warning("handing back %d unfinished jobs", len(late), extra={"consumer": self._consumer})
                await asyncio.gather(*late, return_exceptions=True)
        for sub in (self._advisories, self._nak_advisories, self._sub):
            if sub is not None:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        log.info("worker stopped", extra={"stream": self._stream, "consumer": self._consumer})

    async def __aenter__(self) -> JobWorker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def max_deliver(self) -> int:
        return self._max_deliver

    # Pulling ------------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        assert self._sub is not None
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                free = self._max_in_flight - len(self._running)
                if free <= 0:
                    await asyncio.wait({stop_wait, *self._running}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    msgs = await self._sub.fetch(batch=free, timeout=self._settings.fetch_wait_s)
                except TimeoutError:
                    continue  # no jobs within fetch_wait_s
                except Exception as exc:
                    # Disconnected, a server restart, an API hiccup: keep going once NATS is back.
                    log.warning("pulling jobs failed: %s", exc, extra={"consumer": self._consumer})
                    await asyncio.wait({stop_wait}, timeout=self._settings.reconnect_wait_s)
                    continue
                for msg in msgs:
                    if self._stopping.is_set():
                        await self._nak(msg, "hand back")
                        continue
                    try:
                        self._launch(msg)
                    except Exception:
                        log.exception(
                            "cannot start a job; handing it back", extra={"consumer": self._consumer}
                        )
                        await self._nak(msg, "hand back")
        finally:
            stop_wait.cancel()

    def _launch(self, msg: Msg) -> None:
        job = self._job_of(msg)
        running = _Running(msg=msg, job=job)
        running.task = asyncio.create_task(
            self._run(running), name=f"job {job.task_id or job.meta.stream_seq}"
        )
        self._running[running.task] = running
        running.task.add_done_callback(lambda t: self._running.pop(t, None))

    def _job_of(self, msg: Msg) -> Job:
        meta = msg.metadata
        return Job(
            subject=msg.subject,
            data=msg.data,
            headers=dict(msg.headers or {}),
            meta=JobMeta(
                stream=meta.stream,
                consumer=meta.consumer,
                stream_seq=meta.sequence.stream,
                consumer_seq=meta.sequence.consumer,
                delivery_count=meta.num_delivered,
                max_deliver=self._max_deliver,
                pending=meta.num_pending,
                timestamp=meta.timestamp,
            ),
        )

    # Running one job ----------------------------------------------------------------------------

    def _span(self, job: Job, operation: str = "process") -> contextlib.AbstractContextManager[Any]:
        """The delivery's CONSUMER span, a child of the publisher's span (trace context in the headers)."""
        attributes = {
            "messaging.operation.type": operation,
            "messaging.destination.name": job.subject,
            "messaging.consumer.group.name": self._consumer,
            "messaging.message.id": job.msg_id or "",
            "messaging.message.delivery_count": job.meta.delivery_count,
            "escriba.task_id": job.task_id or "",
        }
        return tracing.consumer_span(f"{operation} {job.stage or self._consumer}", job.headers, attributes)

    async def _run(self, running: _Running) -> None:
        msg, job = running.msg, running.job
        with self._span(job) as span, task_context(job.task_id):
            if 0 < job.meta.max_deliver < job.meta.delivery_count:
                # Delivered past the bound (the consumer was reconfigured): fail it rather than run it again.
                error = DeliveriesExhaustedError(self._exhausted_message(job))
                tracing.mark_failed(span, error)
                await self._give_up(msg, job, error)
                return
            deaths = await self._deaths_before(job)
            if self._max_deaths and deaths >= self._max_deaths:
                died = WorkerDiedError(
                    f"the {job.stage or self._consumer} worker died {deaths} times on this task without"
                    " finishing it (out of memory?); it is not handed to another worker"
                )
                tracing.mark_failed(span, died)
                await self._give_up(msg, job, died)
                return
            started = time.perf_counter()
            limit_s = self._settings.job_time_limit_s(job.audio_duration_s)
            heartbeat = asyncio.create_task(self._heartbeat(msg), name="in-progress heartbeat")
            try:
                try:
                    await self._run_handler(job, limit_s)
                finally:
                    heartbeat.cancel()
            except asyncio.CancelledError:
                # stop() ran out of grace: another replica takes the job right away.
                span.set_attribute("escriba.handed_back", True)
                await self._nak(msg, "hand back")
                raise
            except Exception as exc:
                tracing.mark_failed(span, exc)
                await self._failed(msg, job, exc)
            else:
                await self._settle(msg, "ack", lambda m: m.ack())
                log.info(
                    "job done",
                    extra={
                        "consumer": self._consumer,
                        "delivery": job.meta.delivery_count,
                        "duration_s": round(time.perf_counter() - started, 3),
                    },
                )

    async def _run_handler(self, job: Job, limit_s: float | None) -> None:
        """The handler within the job's time limit: a hung handler is cancelled and the job retried,
        instead of heartbeats keeping it (and its task) in flight forever."""
        timeout = asyncio.timeout(limit_s)
        try:
            async with timeout:
                await self._handler(dataclasses.replace(job, clock=JobClock(timeout)))
        except TimeoutError as exc:
            if not timeout.expired():
                raise  # the handler's own timeout, not the job's limit
            raise JobTimeoutError(
                f"the {job.stage or self._consumer} job ran longer than its limit of {limit_s:.0f} s"
                " and was cancelled"
            ) from exc

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_s)
            try:
                await msg.in_progress()
            except Exception as exc:
                log.warning("in-progress heartbeat failed: %s", exc)

    async def _failed(self, msg: Msg, job: Job, exc: Exception) -> None:
        decision = decide(
            exc,
            delivery_count=job.meta.delivery_count,
            max_deliver=job.meta.max_deliver,
            backoff_s=self._settings.backoff,
        )
        if decision.give_up:
            await self._give_up(msg, job, exc)
            return
        log.warning(
            "job failed, retrying in %.1fs (delivery %d of %d): %s",
            decision.delay_s,
            job.meta.delivery_count,
            job.meta.max_deliver,
            exc,
            extra={"reason": error_reason(exc), "consumer": self._consumer},
        )
        metrics.JOB_RETRIES.labels(self._consumer, error_reason(exc)).inc()
        await self._nak(msg, "retry", decision.delay_s)

    async def _give_up(self, msg: Msg, job: Job, error: BaseException) -> None:
        log.error(
            "job failed for good after %d deliveries: %s",
            job.meta.delivery_count,
            error,
            extra={"reason": error_reason(error), "consumer": self._consumer},
        )
        try:
            await self._on_give_up(job, error)
        except Exception:
            # Not recorded, so not dropped either: redeliver, and the max-deliveries advisory retries it.
            log.exception("recording the failed job failed; it will be delivered again")
            delay = retry_delay(job.meta.delivery_count, self._settings.backoff)
            await self._nak(msg, "retry", delay)
            return
        await self._settle(msg, "term", lambda m: m.term())

    async def _nak(self, msg: Msg, what: str, delay_s: float | None = None) -> None:
        """A retry or a hand-back: remembered at once as a delivery that did not die."""
        if not msg.is_acked:
            self._note_nak(msg.metadata.sequence.stream, msg.metadata.num_delivered)
        await self._settle(msg, what, lambda m: m.nak(delay=delay_s))

    def _note_nak(self, stream_seq: int, delivery: int) -> None:
        if not self._max_deaths:
            return
        naked = self._naked.pop(stream_seq, set())
        naked.add(delivery)
        self._naked[stream_seq] = naked
        while len(self._naked) > _REMEMBERED_JOBS:
            self._naked.popitem(last=False)

    async def _on_nak(self, advisory: Msg) -> None:
        try:
            body: dict[str, Any] = json.loads(advisory.data)
            self._note_nak(int(body["stream_seq"]), int(body["deliveries"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed nak advisory: %s", exc)

    async def _deaths_before(self, job: Job) -> int:
        deaths = self.deaths_before(job)
        if self._max_deaths and deaths >= self._max_deaths:
            await asyncio.sleep(ADVISORY_GRACE_S)
            deaths = self.deaths_before(job)
        return deaths

    def deaths_before(self, job: Job) -> int:
        """Earlier deliveries of ``job`` that ended with no ack, nak or term: their worker died (or
        lost its connection) while running it."""
        earlier = job.meta.delivery_count - 1
        naked = self._naked.get(job.meta.stream_seq, set())
        return max(0, earlier - sum(1 for delivery in naked if delivery <= earlier))

    async def _settle(self, msg: Msg, what: str, action: Callable[[Msg], Awaitable[None]]) -> None:
        """Ack, nak or term; a lost reply only means JetStream redelivers (every stage is idempotent)."""
        if msg.is_acked:
            return
        try:
            await action(msg)
        except Exception as exc:
            log.warning("could not %s job: %s", what, exc, extra={"consumer": self._consumer})

    # Jobs whose workers were lost on the last delivery ------------------------------------------

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        try:
            body: dict[str, Any] = json.loads(advisory.data)
            seq = int(body["stream_seq"])
            deliveries = int(body.get("deliveries", 0))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed max-deliveries advisory: %s", exc)
            return
        try:
            raw = await self._js.get_msg(self._stream, seq)
        except NotFoundError:
            return  # already settled elsewhere
        except Exception as exc:
            log.error("cannot read job %d after its last delivery: %s", seq, exc)
            return
        job = Job(
            subject=raw.subject or "",
            data=raw.data or b"",
            headers=dict(raw.headers or {}),
            meta=JobMeta(
                stream=self._stream,
                consumer=self._consumer,
                stream_seq=seq,
                delivery_count=deliveries,
                max_deliver=self._max_deliver,
                timestamp=raw.time,
            ),
        )
        error = DeliveriesExhaustedError(self._exhausted_message(job))
        with self._span(job, "settle") as span, task_context(job.task_id):
            tracing.mark_failed(span, error)
            log.error("job exhausted its deliveries without finishing", extra={"consumer": self._consumer})
            try:
                await self._on_give_up(job, error)
            except Exception:
                log.exception("recording the exhausted job failed; it stays in stream %s", self._stream)
                return
            with contextlib.suppress(NotFoundError):
                await self._js.delete_msg(self._stream, seq)

    @staticmethod
    def _exhausted_message(job: Job) -> str:
        return (
            f"job was delivered {job.meta.delivery_count} times (limit {job.meta.max_deliver}) without "
            "finishing: its workers stopped or lost their connection while running it"
        )
