"""Load: 1,000 short tasks submitted at once to the local stack all complete, none lost or doubled,
and the gateway's memory stays bounded.

Every upload is a different file (its own sha256, so preprocessing decodes and normalizes each one),
but they decode to 20 clips of real speech, so the model runs 20 times: the tasks of a clip that arrive
while it is in the model share its transcript (before the transcription stage coalesced them, 44-54
model runs made this test 3 minutes), the later ones take it from the transcript cache. 1,000 real
transcriptions would not fit a 2-core CI run, and the burst is meant
to load the gateway, JetStream, PostgreSQL and the stages around the model (see bench/load.py).
Submitting all at once goes past the gateway's concurrent-RPC limit (256) by design; the refused attempts
are retried by the client, as a real client would (any that had created a task would show up as a
duplicate in the audit).

The stack runs each service as its own process, so the gateway's resident memory is its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from bench.load import distinct_uploads, measure_create_task
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from tests.support import media
from tests.support.ledger import audit, wait_terminal
from tests.support.media import DATA_DIR
from tests.support.memory import PeakRss
from tests.support.stack import stack_config

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900)]

TASKS = 1000
DISTINCT = 20
#: The gateway holds each upload while storing it (spooled to disk past 8 MB): 1,000 uploads of 48 kB
#: at once are about 50 MB; what grows past this bound is kept per task or leaks.
GATEWAY_GROWTH_BOUND_MB = 300.0
#: Wideband speech: the model's share of the run is small (jfk.flac, narrowband, gets the encoder's
#: full 30 s context for every 1.5 s clip).
WIDEBAND = DATA_DIR / media.WIDEBAND[0]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    config = stack_config(
        nats_server.url,
        postgres_dsn,
        mode="processes",
        env={
            "ESCRIBA_NATS_ACK_WAIT_S": "30",
            "ESCRIBA_NATS_HEARTBEAT_S": "5",
            "ESCRIBA_DATABASE_POOL_MAX_SIZE": "10",
        },
    )
    async with LocalStack(config) as running:
        yield running


async def test_a_thousand_tasks_at_once(
    stack: LocalStack, record_property: Callable[[str, object], None]
) -> None:
    uploads = distinct_uploads(TASKS, distinct=DISTINCT, speech_file=WIDEBAND)
    schema = stack.config.env["ESCRIBA_DATABASE_SCHEMA"]
    with PeakRss(stack.processes["gateway"].pid) as gateway:
        report = await measure_create_task(stack.address, uploads)
        left = await wait_terminal(stack.database_url, schema, report.task_ids, timeout_s=600)
    for key, value in report.summary().items():
        record_property(key, value)
    record_property("gateway_peak_rss_mb", round(gateway.peak_mb, 1))
    print(
        f"\nload: {report.summary()} gateway peak RSS {gateway.peak_mb:.0f} MB (+{gateway.growth_mb:.0f} MB)"
    )

    assert report.calls == TASKS and len(set(report.task_ids)) == TASKS
    assert left == 0, f"{left} tasks not finished"
    result = await audit("load", dsn=stack.database_url, schema=schema, submitted=report.task_ids)
    assert result.tally.clean, "\n".join(result.problems[:20])
    failures = {t: result.errors[t] for t in result.ids_with("failed")}
    assert result.tally.completed == TASKS, failures
    assert gateway.growth_mb < GATEWAY_GROWTH_BOUND_MB, f"gateway grew {gateway.growth_mb:.0f} MB"
