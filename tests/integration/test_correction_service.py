"""CorrectionService over real gRPC on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from escriba.correction.server import CorrectionComponent
from escriba.correction.settings import CorrectionSettings
from escriba.v1 import common_pb2, correction_pb2, correction_pb2_grpc
from tests.support.grpc_servers import serving

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stub() -> AsyncIterator[correction_pb2_grpc.CorrectionServiceStub]:
    async with serving([CorrectionComponent(CorrectionSettings())]) as (_, channel):
        yield correction_pb2_grpc.CorrectionServiceStub(channel)


async def test_glossary_edits_are_reported(stub: correction_pb2_grpc.CorrectionServiceStub) -> None:
    segments = [
        common_pb2.Segment(id=0, start_s=0.0, end_s=2.0, text=" I use comfy ui every day."),
        common_pb2.Segment(id=1, start_s=2.0, end_s=4.0, text=" comfyui   is great ."),
    ]
    request = correction_pb2.CorrectRequest(
        segments=segments,
        options=common_pb2.CorrectionOptions(
            glossary=[common_pb2.GlossaryEntry(term="ComfyUI", aliases=["comfy ui"])]
        ),
    )
    response = await stub.Correct(request)
    assert response.text == "I use ComfyUI every day. ComfyUI is great."
    assert [s.text for s in response.segments] == ["I use ComfyUI every day.", "ComfyUI is great."]
    glossary = [e for e in response.edits if e.rule == "glossary"]
    assert {(e.original, e.replacement, e.segment_id) for e in glossary} == {
        ("comfy ui", "ComfyUI", 0),
        ("comfyui", "ComfyUI", 1),
    }
    assert response.rules_version


async def test_bad_glossary_is_invalid_argument(stub: correction_pb2_grpc.CorrectionServiceStub) -> None:
    request = correction_pb2.CorrectRequest(
        text="hello",
        options=common_pb2.CorrectionOptions(glossary=[common_pb2.GlossaryEntry(term="  ")]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Correct(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_text_is_resource_exhausted() -> None:
    settings = CorrectionSettings(max_text_chars=1000)
    async with serving([CorrectionComponent(settings)]) as (_, channel):
        stub = correction_pb2_grpc.CorrectionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Correct(correction_pb2.CorrectRequest(text="word " * 1000))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1000" in (err.value.details() or "")
