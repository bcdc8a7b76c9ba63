"""Preprocess then Transcribe over real gRPC with the bundled tiny.en model."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from escriba.common.grpc_server import Component
from escriba.common.settings import load
from escriba.preprocess.server import PreprocessComponent
from escriba.preprocess.settings import PreprocessSettings
from escriba.transcription.server import TranscriptionComponent
from escriba.transcription.settings import TranscriptionSettings
from escriba.v1 import (
    common_pb2,
)
from tests.support import media
from tests.support.grpc_servers import serving
from tests.support.stage_clients import preprocess, transcribe
from tests.support.text import JFK_REFERENCE, normalize, wer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    components: list[Component] = [
        PreprocessComponent(load(PreprocessSettings, {})),
        TranscriptionComponent(load(TranscriptionSettings, {})),
    ]
    async with serving(components) as (_, ch):
        yield ch


async def test_preprocess_then_transcribe_jfk(channel: grpc.aio.Channel) -> None:
    _, canonical = await preprocess(channel, media.JFK.read_bytes())
    transcript = await transcribe(channel, canonical)
    assert wer(JFK_REFERENCE, transcript.text) <= 0.10, transcript.text
    assert transcript.language == "en"
    words = [w for s in transcript.segments for w in s.words]
    assert words and all(a.start_s <= b.start_s for a, b in itertools.pairwise(words))


@pytest.mark.parametrize("encoder", ["to_mp3", "to_ogg_opus", "to_m4a_aac"])
async def test_reencoded_speech_gives_the_same_text(channel: grpc.aio.Channel, encoder: str) -> None:
    samples, rate = media.speech("jfk.flac")
    data = getattr(media, encoder)(samples, rate)
    reference = await transcribe(channel, (await preprocess(channel, media.JFK.read_bytes()))[1])
    other = await transcribe(channel, (await preprocess(channel, data))[1])
    assert normalize(other.text) == normalize(reference.text) or wer(reference.text, other.text) <= 0.05


async def test_unprocessed_audio_is_decoded_by_the_transcription_service(channel: grpc.aio.Channel) -> None:
    samples, rate = media.speech("jfk.flac")
    transcript = await transcribe(channel, media.to_mp3(samples, rate))
    assert wer(JFK_REFERENCE, transcript.text) <= 0.10


async def test_hotword_brings_the_product_name(channel: grpc.aio.Channel) -> None:
    _, canonical = await preprocess(channel, media.HOTWORDS.read_bytes())
    transcript = await transcribe(channel, canonical, common_pb2.TranscriptionOptions(hotwords="ComfyUI"))
    assert "ComfyUI" in transcript.text


@pytest.mark.parametrize(
    "options",
    [
        common_pb2.TranscriptionOptions(beam_size=0),
        common_pb2.TranscriptionOptions(beam_size=1000),
        common_pb2.TranscriptionOptions(language="xx-not-a-language"),
        common_pb2.TranscriptionOptions(temperature=7.5),
        common_pb2.TranscriptionOptions(model="large-v3"),
        common_pb2.TranscriptionOptions(hotwords="x" * 10_000),
    ],
)
async def test_bad_options_are_invalid_argument(
    channel: grpc.aio.Channel, options: common_pb2.TranscriptionOptions
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await transcribe(channel, media.JFK.read_bytes(), options)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


async def test_not_audio_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await transcribe(channel, media.random_bytes())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not_audio" in (err.value.details() or "")


async def test_unavailable_while_the_model_loads() -> None:
    component = TranscriptionComponent(load(TranscriptionSettings, {}))

    async def never_ready() -> None:
        return None

    component.start = never_ready  # type: ignore[method-assign]
    async with serving([component]) as (_, ch):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await transcribe(ch, media.JFK.read_bytes())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
