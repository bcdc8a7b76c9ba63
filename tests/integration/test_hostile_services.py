"""Hostile input against the stage services over real gRPC: a clear status for each, bounded memory,
and a server that stays healthy and serves the next request.

Every upload of :mod:`tests.support.hostile` goes to PreprocessService and to TranscriptionService's
one-off call (which decodes any upload itself); malformed requests - unknown enum values sent as raw
numbers, negative, huge and not-a-number values, 10 MB strings, a request that is not protobuf at all -
go to all three services.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from escriba.common.grpc_server import Component
from escriba.common.settings import load
from escriba.correction.server import CorrectionComponent
from escriba.correction.settings import CorrectionSettings
from escriba.preprocess.server import PreprocessComponent
from escriba.preprocess.settings import PreprocessSettings
from escriba.transcription.server import TranscriptionComponent
from escriba.transcription.settings import TranscriptionSettings
from escriba.v1 import (
    common_pb2,
    correction_pb2,
    correction_pb2_grpc,
    preprocess_pb2,
)
from tests.support import media
from tests.support.grpc_servers import serving
from tests.support.hostile import HOSTILE, MAX_DURATION_S, MEMORY_BOUND_MB, Hostile, hostile_ids, readable
from tests.support.memory import PeakRss
from tests.support.stage_clients import preprocess, transcribe

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

MAX_INPUT_BYTES = 16 * 1024 * 1024
LIMIT_REASONS = {"audio_too_long", "input_too_large"}
TEN_MB = 10 * 1024 * 1024


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    limits = {
        "ESCRIBA_PREPROCESS_MAX_DURATION_S": str(MAX_DURATION_S),
        "ESCRIBA_PREPROCESS_MAX_INPUT_BYTES": str(MAX_INPUT_BYTES),
        "ESCRIBA_TRANSCRIPTION_MAX_DURATION_S": str(MAX_DURATION_S),
        "ESCRIBA_TRANSCRIPTION_MAX_INPUT_BYTES": str(MAX_INPUT_BYTES),
    }
    components: list[Component] = [
        PreprocessComponent(load(PreprocessSettings, limits)),
        TranscriptionComponent(load(TranscriptionSettings, limits)),
        CorrectionComponent(load(CorrectionSettings, {})),
    ]
    async with serving(components) as (_, ch):
        yield ch


def expected_code(reason: str) -> grpc.StatusCode:
    return grpc.StatusCode.RESOURCE_EXHAUSTED if reason in LIMIT_REASONS else grpc.StatusCode.INVALID_ARGUMENT


async def assert_refused(call: Any, code: grpc.StatusCode, reason: str = "") -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    details = err.value.details() or ""
    assert err.value.code() == code, (err.value.code(), details)
    assert details.startswith(reason), details
    assert readable(details), details
    return details


async def assert_healthy(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # And it still does real work.
    info, _ = await preprocess(channel, media.JFK.read_bytes())
    assert info.duration_s > 10


@pytest.mark.parametrize("hostile", HOSTILE, ids=hostile_ids())
async def test_hostile_upload_to_preprocess(channel: grpc.aio.Channel, hostile: Hostile) -> None:
    data = hostile.make()
    with PeakRss() as peak:
        call = preprocess(channel, data, preprocess_pb2.PreprocessConfig(filename="upload"))
        if hostile.reason is None:
            info, _ = await call
            assert info.duration_s > 0
        else:
            await assert_refused(call, expected_code(hostile.reason), hostile.reason)
    assert peak.growth_mb < MEMORY_BOUND_MB, f"decoding {hostile.name} took {peak.growth_mb:.0f} MB"
    await assert_healthy(channel)


@pytest.mark.parametrize("hostile", [h for h in HOSTILE if h.reason is not None], ids=lambda h: h.name)
async def test_hostile_upload_to_transcription(channel: grpc.aio.Channel, hostile: Hostile) -> None:
    data = hostile.make()
    with PeakRss() as peak:
        await assert_refused(
            transcribe(channel, data), expected_code(hostile.reason or ""), hostile.reason or ""
        )
    assert peak.growth_mb < MEMORY_BOUND_MB, f"decoding {hostile.name} took {peak.growth_mb:.0f} MB"
    await assert_healthy(channel)


async def test_canonical_looking_bomb_to_transcription(channel: grpc.aio.Channel) -> None:
    # 16 kHz mono 16-bit FLAC is what preprocessing produces, so the one-off call reads it on its fast
    # path: two hours of it in a few hundred kB must still stop at the duration limit, not fill memory.
    bomb = media.decompression_bomb(hours=2.0, rate=16000)
    assert len(bomb) < 2 * 1024 * 1024
    with PeakRss() as peak:
        details = await assert_refused(
            transcribe(channel, bomb), grpc.StatusCode.RESOURCE_EXHAUSTED, "audio_too_long"
        )
    assert f"{MAX_DURATION_S:g} s" in details
    assert peak.growth_mb < MEMORY_BOUND_MB, f"the bomb took {peak.growth_mb:.0f} MB"
    await assert_healthy(channel)


async def test_upload_over_the_size_limit_is_refused_while_streaming(channel: grpc.aio.Channel) -> None:
    data = media.random_bytes(4 * MAX_INPUT_BYTES)  # made before measuring: it lives in this process
    with PeakRss() as peak:
        await assert_refused(
            preprocess(channel, data, preprocess_pb2.PreprocessConfig()),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "input_too_large",
        )
        await assert_refused(transcribe(channel, data), grpc.StatusCode.RESOURCE_EXHAUSTED, "input_too_large")
    # The services hold at most the limit of an upload, never the whole stream.
    assert peak.growth_mb < MAX_INPUT_BYTES / 2**20 + 100, f"took {peak.growth_mb:.0f} MB"
    await assert_healthy(channel)


def huge_text() -> str:
    return "word " * (TEN_MB // 5)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(common_pb2.TranscriptionOptions(beam_size=2**32 - 1), id="huge beam size"),
        pytest.param(common_pb2.TranscriptionOptions(temperature=-1.0), id="negative temperature"),
        pytest.param(common_pb2.TranscriptionOptions(temperature=math.nan), id="NaN temperature"),
        pytest.param(common_pb2.TranscriptionOptions(temperature=math.inf), id="infinite temperature"),
        pytest.param(
            common_pb2.TranscriptionOptions(vad=common_pb2.VadOptions(threshold=-0.5)),
            id="negative VAD threshold",
        ),
        pytest.param(
            common_pb2.TranscriptionOptions(vad=common_pb2.VadOptions(min_silence_duration_ms=2**32 - 1)),
            id="huge VAD silence",
        ),
        pytest.param(
            common_pb2.TranscriptionOptions(vad=common_pb2.VadOptions(max_speech_duration_s=-1e308)),
            id="negative VAD window",
        ),
        pytest.param(common_pb2.TranscriptionOptions(language="../../etc/passwd"), id="path as language"),
        pytest.param(common_pb2.TranscriptionOptions(hotwords=huge_text()), id="10 MB hotwords"),
        pytest.param(common_pb2.TranscriptionOptions(initial_prompt=huge_text()), id="10 MB prompt"),
        pytest.param(common_pb2.TranscriptionOptions(model="../../../../etc/passwd"), id="path as model"),
    ],
)
async def test_malformed_transcription_options(
    channel: grpc.aio.Channel, options: common_pb2.TranscriptionOptions
) -> None:
    await assert_refused(
        transcribe(channel, media.JFK.read_bytes(), options), grpc.StatusCode.INVALID_ARGUMENT
    )
    await assert_healthy(channel)


async def test_unknown_output_encoding_and_bad_loudness(channel: grpc.aio.Channel) -> None:
    jfk = media.JFK.read_bytes()
    unknown = preprocess_pb2.PreprocessConfig(output_encoding=77)  # type: ignore[arg-type]
    await assert_refused(
        preprocess(channel, jfk, unknown), grpc.StatusCode.INVALID_ARGUMENT, "invalid_option"
    )
    for lufs in (-1e300, 5.0, math.nan):
        await assert_refused(
            preprocess(channel, jfk, preprocess_pb2.PreprocessConfig(target_lufs=lufs)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    huge_name = preprocess_pb2.PreprocessConfig(filename="../" * (TEN_MB // 3))
    # A name is only a label in messages: a huge one is refused by size or answered, never a crash.
    try:
        await preprocess(channel, jfk, huge_name)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    await assert_healthy(channel)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(correction_pb2.CorrectRequest(text=huge_text()), id="10 MB text"),
        pytest.param(
            correction_pb2.CorrectRequest(
                text="hello",
                options=common_pb2.CorrectionOptions(glossary=[common_pb2.GlossaryEntry(term=huge_text())]),
            ),
            id="10 MB glossary term",
        ),
        pytest.param(
            correction_pb2.CorrectRequest(
                text="hello",
                options=common_pb2.CorrectionOptions(
                    glossary=[common_pb2.GlossaryEntry(term=f"t{i}", aliases=["a"]) for i in range(100_000)]
                ),
            ),
            id="100k glossary entries",
        ),
        pytest.param(
            correction_pb2.CorrectRequest(
                options=common_pb2.CorrectionOptions(language="x" * 1000),
                segments=[common_pb2.Segment(text="hi")],
            ),
            id="nonsense language",
        ),
    ],
)
async def test_malformed_correction_requests(
    channel: grpc.aio.Channel, request_: correction_pb2.CorrectRequest
) -> None:
    stub = correction_pb2_grpc.CorrectionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Correct(request_, timeout=60)
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert readable(err.value.details() or "")
    await assert_healthy(channel)


async def test_odd_segment_numbers_are_answered_or_refused(channel: grpc.aio.Channel) -> None:
    stub = correction_pb2_grpc.CorrectionServiceStub(channel)
    weird = [
        common_pb2.Segment(id=2**32 - 1, start_s=-5.0, end_s=-10.0, text="negative times"),
        common_pb2.Segment(id=0, start_s=math.nan, end_s=math.inf, text="not a number"),
        common_pb2.Segment(id=1, start_s=1e308, end_s=-1e308, text=" the the the the the the the"),
    ]
    try:
        response = await stub.Correct(correction_pb2.CorrectRequest(segments=weird), timeout=60)
        assert response.text
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    await assert_healthy(channel)


async def test_a_request_that_is_not_protobuf(channel: grpc.aio.Channel) -> None:
    raw = channel.unary_unary(
        "/escriba.v1.CorrectionService/Correct",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw(b"\xff\xff\xff\xff\x0f garbage that is no protobuf", timeout=10)
    assert err.value.code() != grpc.StatusCode.OK
    await assert_healthy(channel)
