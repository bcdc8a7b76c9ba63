"""The transcription backlog in audio-seconds, read from JetStream over the NATS protocol.

The counts come from the consumer's info (``num_pending`` + ``num_ack_pending``), with the operator's own
credentials, over the client protocol through nats-py's JetStream API (consumer info, stream info,
message get, its typed errors): never the unauthenticated monitoring port.

The seconds are the cheap part to get wrong. JetStream counts messages, it does not sum headers, and
the ways to sum them each tick are all O(backlog): fetch every pending message, or walk the stream. An
extra consumer to watch arrivals is not allowed on a work-queue stream (its filter would overlap the
workers'). So :class:`BacklogIndex` keeps ``stream sequence -> audio-seconds`` and

* fetches each job's message once, when it first appears, by sequence with ``next_by_subj`` (one get
  per arrival, a direct get where the stream allows it, skipping other stages' subjects and deleted
  messages);
* forgets what the workers finished using only the two info calls: everything at or below the
  consumer's ack floor or below the stream's first sequence is gone;
* re-walks only the delivered-but-unacknowledged range, and only when it holds more indexed messages
  than the consumer's ``num_ack_pending`` (acks out of order): that range is about as long as the
  number of busy workers.

Each tick thus costs two info requests plus one request per new job. A first read of a deep queue is
bounded by ``max_fetch``; jobs not indexed yet count at the mean duration of those that are. The
consumer's counts stay authoritative: should the index hold more entries than the consumer has jobs
(messages deleted by hand), the seconds are scaled down to match.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from nats.errors import Error as NatsError
from nats.js.api import ConsumerInfo, StreamInfo
from nats.js.errors import APIError, NotFoundError
from nats.js.manager import JetStreamManager

from escriba.bus import AUDIO_DURATION_HEADER, audio_duration_from_headers
from escriba.common.creds import creds_problem
from escriba_operator.algorithm import Backlog
from escriba_operator.signals import SignalError, SignalMissingError

log = logging.getLogger(__name__)

#: The services' header (escriba.bus), named here too for the tests that publish jobs.
DURATION_HEADER = AUDIO_DURATION_HEADER
#: The Secret key of a .creds file: the chart's default for the services' credentials, so one Secret
#: serves both.
CREDS_KEY = "nats.creds"
#: JetStream's error codes for a missing consumer and a missing stream.
_CONSUMER_NOT_FOUND = 10014
_STREAM_NOT_FOUND = 10059


@dataclass(frozen=True)
class Credentials:
    """How the operator authenticates to NATS (from the Secret named in the spec): a user and
    password, a token, or a ``.creds`` file's text (account JWTs); ``ca`` is the PEM of a private CA
    that signed the servers' certificates, ``cert``/``key`` a client certificate for mTLS."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = field(default=None, repr=False)
    ca: str | None = field(default=None, repr=False)
    cert: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.creds is not None:
            problem = creds_problem(self.creds)
            if problem:
                raise SignalError(
                    f"the .creds in the Secret are not usable: {problem}", reason="SecretInvalid"
                )
        if bool(self.cert) != bool(self.key):
            raise SignalError("a client certificate needs both tls.crt and tls.key", reason="SecretInvalid")

    def tls_context(self) -> ssl.SSLContext | None:
        """TLS with the Secret's CA and client certificate; None leaves it to the URL (tls://)."""
        if not (self.ca or self.cert):
            return None
        try:
            # The system CAs (SSL_CERT_FILE, which the chart points at tls.ca) plus the Secret's CA:
            # cert-manager puts the issuer of the client certificate in ca.crt, not always the servers'.
            context = ssl.create_default_context()
            if self.ca:
                context.load_verify_locations(cadata=self.ca)
            if self.cert and self.key:
                # ssl loads a certificate chain only from files: private ones, removed at once.
                with tempfile.TemporaryDirectory(prefix="escriba-operator-tls-") as folder:
                    cert, key = Path(folder, "tls.crt"), Path(folder, "tls.key")
                    for path, text in ((cert, self.cert), (key, self.key)):
                        path.touch(mode=0o600)
                        path.write_text(text)
                    context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise SignalError(
                f"the TLS material in the Secret is not usable: {exc}", reason="SecretInvalid"
            ) from exc
        return context


class NatsPool:
    """One connection per (address, credentials), reconnected on the next read after it drops."""

    def __init__(self, *, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._connections: dict[tuple[str, Credentials], NATS] = {}
        # Autoscalers on the same NATS evaluate concurrently: without a lock per address each would open
        # its own connection and all but the last would leak. Per address, so a dead one blocks no other.
        self._locks: dict[tuple[str, Credentials], asyncio.Lock] = {}

    async def connection(self, url: str, credentials: Credentials) -> NATS:
        async with self._locks.setdefault((url, credentials), asyncio.Lock()):
            return await self._connect(url, credentials)

    async def _connect(self, url: str, credentials: Credentials) -> NATS:
        key = (url, credentials)
        current = self._connections.get(key)
        if current is not None and current.is_connected:
            return current
        if current is not None:
            self._connections.pop(key, None)
            await _close(current)
        nc = NATS()
        try:
            await asyncio.wait_for(
                nc.connect(
                    url,
                    user=credentials.user,
                    password=credentials.password,
                    token=credentials.token,
                    user_credentials=RawCredentials(credentials.creds) if credentials.creds else None,
                    tls=credentials.tls_context(),
                    name="escriba-operator",
                    allow_reconnect=False,
                    max_reconnect_attempts=1,  # the next read reconnects; a dead address fails fast
                    reconnect_time_wait=1,
                    connect_timeout=max(1, round(self._timeout)),
                    error_cb=_log_error,
                ),
                timeout=self._timeout * 2,
            )
        except (NatsError, OSError, TimeoutError) as exc:
            await _close(nc)  # a failed handshake leaves the socket open otherwise
            raise SignalError(
                f"cannot connect to {url}: {exc or type(exc).__name__}", reason="NATSUnavailable"
            ) from exc
        self._connections[key] = nc
        return nc

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for nc in connections:
            await _close(nc)


#: Longest a close may take: nats-py's close() never returns after a failed TLS handshake.
CLOSE_TIMEOUT_S = 2.0


async def _close(nc: NATS) -> None:
    try:
        await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT_S)
    except (NatsError, OSError, TimeoutError) as exc:  # closing a dead connection
        log.debug("closing a NATS connection: %s", exc or type(exc).__name__)


async def _log_error(exc: Exception) -> None:
    log.warning("NATS: %s", exc or type(exc).__name__)


class BacklogIndex:
    """Audio-seconds of one consumer's pending and in-progress jobs (see the module doc)."""

    def __init__(
        self, stream: str, consumer: str, *, assumed_job_s: float, timeout_s: float, max_fetch: int = 5000
    ) -> None:
        self.stream = stream
        self.consumer = consumer
        self._assumed = assumed_job_s
        self._timeout = timeout_s
        self._max_fetch = max_fetch
        self._seconds: dict[int, float] = {}
        #: Where each filter subject's walk resumes: one cursor per subject, so a consumer with several
        #: subjects deeper than one fetch finishes indexing instead of re-walking its first subject.
        self._next: dict[str, int] = {}

    @property
    def indexed(self) -> int:
        return len(self._seconds)

    async def read(self, nc: NATS, *, now: float) -> Backlog:
        jsm = nc.jsm(timeout=self._timeout)
        info = await self._consumer_info(jsm)
        stream = await self._stream_info(jsm)
        waiting = int(info.num_pending or 0)
        running = int(info.num_ack_pending or 0)
        ack_floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
        first = int(stream.state.first_seq or 0)
        last = int(stream.state.last_seq or 0)
        config = info.config
        subjects = list(config.filter_subjects or ()) or (
            [config.filter_subject] if config.filter_subject else [">"]
        )
        direct = bool(stream.config.allow_direct)

        if any(
            seq > last + 1 for seq in self._next.values()
        ):  # the stream was recreated: sequences start over
            self._seconds, self._next = {}, {}
        self._seconds = {seq: s for seq, s in self._seconds.items() if seq >= first and seq > ack_floor}
        in_flight = [seq for seq in self._seconds if seq <= delivered]
        if len(in_flight) > running:
            floor = ack_floor + 1
            present, _ = await self._walk(
                jsm, {s: floor for s in subjects}, delivered, budget=delivered - ack_floor, direct=direct
            )
            for seq in in_flight:
                if seq not in present:
                    del self._seconds[seq]
            self._seconds.update(present)
        floor = max(first, ack_floor + 1)
        starts = {subject: max(self._next.get(subject, 0), floor) for subject in subjects}
        share = max(1, self._max_fetch // len(subjects))
        found, resume = await self._walk(jsm, starts, last, budget=share, direct=direct)
        self._next = resume
        self._seconds.update(found)

        jobs = waiting + running
        known = sum(self._seconds.values())
        indexed = len(self._seconds)
        if indexed > jobs:
            seconds = known * jobs / indexed
        else:
            mean = known / indexed if indexed else self._assumed
            seconds = known + (jobs - indexed) * mean
        durations = tuple(self._seconds.values()) if indexed <= jobs else ()
        return Backlog(
            waiting_jobs=waiting, running_jobs=running, seconds=seconds, observed_at=now, durations=durations
        )

    async def _walk(
        self, jsm: JetStreamManager, starts: dict[str, int], end: int, *, budget: int, direct: bool
    ) -> tuple[dict[int, float], dict[str, int]]:
        """Messages of each subject from its start up to ``end`` (at most ``budget`` per subject), and
        where each subject's walk resumes."""
        found: dict[int, float] = {}
        resume: dict[str, int] = {}
        for subject, start in starts.items():
            seq, taken = start, 0
            while seq <= end and taken < budget:
                message = await self._next_message(jsm, subject, seq, direct=direct)
                if message is None or message[0] > end:
                    seq = end + 1
                    break
                found[message[0]] = message[1]
                seq, taken = message[0] + 1, taken + 1
            resume[subject] = max(seq, start)
        return found, resume

    async def _next_message(
        self, jsm: JetStreamManager, subject: str, seq: int, *, direct: bool
    ) -> tuple[int, float] | None:
        """The first message of ``subject`` at or after ``seq``, or None when there is none."""
        try:
            message = await jsm.get_msg(self.stream, seq=seq, subject=subject, next=True, direct=direct)
        except NotFoundError:
            return None
        except (APIError, NatsError, OSError, TimeoutError) as exc:
            raise self._translate(exc, "message get") from exc
        if message.seq is None:
            return None
        seconds = audio_duration_from_headers(message.headers)
        return int(message.seq), self._assumed if seconds is None else seconds

    async def _consumer_info(self, jsm: JetStreamManager) -> ConsumerInfo:
        try:
            info: ConsumerInfo = await jsm.consumer_info(self.stream, self.consumer)
            return info
        except (APIError, NatsError, OSError, TimeoutError) as exc:
            raise self._translate(exc, "consumer info") from exc

    async def _stream_info(self, jsm: JetStreamManager) -> StreamInfo:
        try:
            return await jsm.stream_info(self.stream)
        except (APIError, NatsError, OSError, TimeoutError) as exc:
            raise self._translate(exc, "stream info") from exc

    def _translate(self, exc: BaseException, what: str) -> SignalError:
        """A missing stream or consumer is a missing signal (the spec may name the wrong one); any
        other API error or a dead connection is an unreadable one."""
        if isinstance(exc, APIError):
            code = exc.err_code
            if code == _CONSUMER_NOT_FOUND:
                return SignalMissingError(
                    f"consumer {self.consumer!r} not found on stream {self.stream!r}",
                    reason="ConsumerNotFound",
                )
            if code == _STREAM_NOT_FOUND:
                return SignalMissingError(f"stream {self.stream!r} not found", reason="StreamNotFound")
            if exc.code not in (None, 503):
                return SignalError(f"JetStream {what}: {exc.description} ({code})", reason="JetStreamError")
        return SignalError(f"JetStream {what}: {exc or type(exc).__name__}", reason="NATSUnavailable")
