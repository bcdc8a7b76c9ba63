"""PreprocessService over real gRPC: formats, mixdown, and a clear status for every bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import numpy as np
import pytest

from escriba.audio.pcm import decode_pcm
from escriba.common.client import write_all
from escriba.preprocess.server import PreprocessComponent
from escriba.preprocess.settings import PreprocessSettings
from escriba.v1 import common_pb2, preprocess_pb2, preprocess_pb2_grpc
from tests.support import media

pytestmark = pytest.mark.timeout(120)

CHUNK = 64 * 1024


def requests(
    data: bytes, *, filename: str = "", encoding: int = 0, target_lufs: float | None = None
) -> Iterator[preprocess_pb2.PreprocessRequest]:
    config = preprocess_pb2.PreprocessConfig(filename=filename, output_encoding=encoding)  # type: ignore[arg-type]
    if target_lufs is not None:
        config.target_lufs = target_lufs
    yield preprocess_pb2.PreprocessRequest(config=config)
    for offset in range(0, len(data), CHUNK):
        yield preprocess_pb2.PreprocessRequest(chunk=data[offset : offset + CHUNK])


async def preprocess(
    stub: preprocess_pb2_grpc.PreprocessServiceStub, data: bytes, **kwargs: object
) -> tuple[common_pb2.AudioInfo, bytes]:
    info: common_pb2.AudioInfo | None = None
    audio = bytearray()
    call = stub.Preprocess()
    writer = asyncio.create_task(write_all(call, requests(data, **kwargs)))  # type: ignore[arg-type]
    async for response in call:
        if response.WhichOneof("payload") == "info":
            info = response.info
        else:
            audio += response.chunk
    await writer
    assert info is not None
    return info, bytes(audio)


def settings(**overrides: object) -> PreprocessSettings:
    return PreprocessSettings(**overrides)  # type: ignore[arg-type]


@pytest.fixture
async def stub() -> AsyncIterator[preprocess_pb2_grpc.PreprocessServiceStub]:
    from tests.support.grpc_servers import serving

    component = PreprocessComponent(settings(max_duration_s=600.0, max_input_bytes=8 * 1024 * 1024))
    async with serving([component]) as (_, channel):
        yield preprocess_pb2_grpc.PreprocessServiceStub(channel)


async def test_flac_to_canonical_audio(stub: preprocess_pb2_grpc.PreprocessServiceStub) -> None:
    data = media.JFK.read_bytes()
    info, audio = await preprocess(stub, data, filename="jfk.flac")
    assert info.sample_rate_hz == 16000 and info.encoding == common_pb2.AUDIO_ENCODING_FLAC
    assert info.duration_s == pytest.approx(11.0, abs=0.05)
    # The signal as recorded: loudness measured, no gain (a normalized copy only when asked for).
    assert info.output_loudness_lufs == pytest.approx(info.input_loudness_lufs)
    assert info.gain_db == 0.0
    import hashlib

    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.normalized_sha256 == hashlib.sha256(audio).hexdigest()
    samples = decode_pcm(audio)
    assert samples.size == pytest.approx(11.0 * 16000, abs=16000 * 0.05)


async def test_wav_output_and_target_override(stub: preprocess_pb2_grpc.PreprocessServiceStub) -> None:
    info, audio = await preprocess(
        stub, media.JFK.read_bytes(), encoding=common_pb2.AUDIO_ENCODING_WAV, target_lufs=-23.0
    )
    assert audio[:4] == b"RIFF" and info.encoding == common_pb2.AUDIO_ENCODING_WAV
    assert abs(info.output_loudness_lufs - (-23.0)) < 0.5


async def test_stereo_is_mixed_down(stub: preprocess_pb2_grpc.PreprocessServiceStub) -> None:
    # A tone in the left channel only: the mono mix keeps it (an average, not the right channel).
    left_only = media.one_sided(media.tone(440, 2.0, rate=44100, amplitude=0.3)[0], channels=2, channel=0)
    info, audio = await preprocess(stub, media.to_wav(left_only, 44100), target_lufs=-20.0)
    assert info.source_channels == 2 and info.source_sample_rate_hz == 44100
    samples = decode_pcm(audio)
    assert float(np.sqrt(np.mean(samples**2))) > 0.01


@pytest.mark.parametrize(
    ("name", "make", "code", "reason"),
    [
        ("empty", lambda: b"", grpc.StatusCode.INVALID_ARGUMENT, "empty_input"),
        ("random bytes", lambda: media.random_bytes(), grpc.StatusCode.INVALID_ARGUMENT, "not_audio"),
        ("text", lambda: b"hello, this is not audio\n" * 100, grpc.StatusCode.INVALID_ARGUMENT, "not_audio"),
        (
            "video without audio",
            media.video_without_audio,
            grpc.StatusCode.INVALID_ARGUMENT,
            "no_audio_stream",
        ),
        ("zero duration", media.header_only_wav, grpc.StatusCode.INVALID_ARGUMENT, "zero_duration"),
        (
            "truncated flac header",
            lambda: media.truncated(media.JFK.read_bytes(), 0.001),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
        ),
        (
            "too long (decompression bomb)",
            lambda: media.decompression_bomb(hours=0.5),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "audio_too_long",
        ),
        (
            "too large",
            lambda: media.random_bytes(9 * 1024 * 1024),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "input_too_large",
        ),
    ],
)
async def test_bad_input_gets_a_clear_status(
    stub: preprocess_pb2_grpc.PreprocessServiceStub, name: str, make, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await preprocess(stub, make())
    assert err.value.code() == code, err.value.details()
    assert reason in (err.value.details() or "")
    # The server is still healthy and serves the next request.
    info, _ = await preprocess(stub, media.JFK.read_bytes())
    assert info.duration_s > 10


async def test_config_after_audio_is_malformed(stub: preprocess_pb2_grpc.PreprocessServiceStub) -> None:
    def bad() -> Iterator[preprocess_pb2.PreprocessRequest]:
        yield preprocess_pb2.PreprocessRequest(chunk=b"abc")
        yield preprocess_pb2.PreprocessRequest(config=preprocess_pb2.PreprocessConfig())

    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.Preprocess(bad()):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
