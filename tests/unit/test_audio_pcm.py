"""Canonical audio: 16-bit mono FLAC and WAV written and read back without loss."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from escriba.audio.errors import CorruptAudioError, NotAudioError
from escriba.audio.pcm import (
    ENCODINGS,
    SAMPLE_RATE_HZ,
    decode_pcm,
    encode_pcm,
    from_int16,
    quantize,
    to_int16,
)
from tests.support import media


def every_int16_value() -> np.ndarray:
    """Every 16-bit value once, shuffled, plus runs of the extremes: a worst case for the encoder."""
    values = np.arange(-32768, 32768, dtype=np.int16)
    np.random.default_rng(5).shuffle(values)
    extremes = np.array([-32768, 32767, 0, -1, 1] * 2000, dtype=np.int16)
    return np.concatenate([values, extremes])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_is_lossless_at_16_bit(encoding):
    pcm = every_int16_value()
    samples = from_int16(pcm)
    back = decode_pcm(encode_pcm(samples, encoding))
    assert back.dtype == np.float32
    assert np.array_equal(back, samples)
    assert np.array_equal(to_int16(back), pcm)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_of_speech(encoding):
    speech = quantize(media.long_speech(20.0)[0])
    assert np.array_equal(decode_pcm(encode_pcm(speech, encoding)), speech)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_empty_and_single_sample_audio(encoding):
    for pcm in (np.zeros(0, dtype=np.int16), np.array([1234], dtype=np.int16)):
        assert np.array_equal(to_int16(decode_pcm(encode_pcm(from_int16(pcm), encoding))), pcm)


def test_output_is_what_other_tools_read_as_16k_mono_16_bit():
    speech = quantize(media.long_speech(3.0)[0])
    with wave.open(io.BytesIO(encode_pcm(speech, "wav"))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE_HZ)
        assert wav.getnframes() == speech.size
    with av.open(io.BytesIO(encode_pcm(speech, "flac")), mode="r") as flac:
        stream = flac.streams.audio[0]
        assert stream.codec_context.name == "flac"
        assert (stream.codec_context.channels, stream.codec_context.sample_rate) == (1, SAMPLE_RATE_HZ)
        assert stream.codec_context.format.name == "s16"


def test_flac_is_smaller_than_wav_for_speech():
    speech = media.long_speech(20.0)[0]
    assert len(encode_pcm(speech, "flac")) < 0.8 * len(encode_pcm(speech, "wav"))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encoding_is_deterministic(encoding):
    speech = media.long_speech(5.0)[0]
    assert encode_pcm(speech, encoding) == encode_pcm(speech.copy(), encoding)


def test_flac_header_carries_no_encoder_version():
    # Bit-exact mode: the canonical bytes (and their hash, a cache key) do not change with PyAV's version.
    assert b"Lavf" not in encode_pcm(media.long_speech(1.0)[0], "flac")[:4096]


def test_quantization_rounds_and_clips():
    x = np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, 1 / 65536 + 1e-9], dtype=np.float32)
    assert to_int16(x).tolist() == [0, 32767, -32768, 32767, -32768, 16384, 1]
    assert np.array_equal(quantize(quantize(x)), quantize(x))


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="flac, wav"):
        encode_pcm(np.zeros(10, dtype=np.float32), "mp3")


def test_other_formats_are_not_canonical():
    with pytest.raises(NotAudioError):
        decode_pcm(media.to_mp3(media.tone(440, 1.0), SAMPLE_RATE_HZ))


@pytest.mark.parametrize(
    "data",
    [
        media.to_wav(media.tone(440, 0.5, channels=2), SAMPLE_RATE_HZ),
        media.to_flac(media.tone(440, 0.5, channels=2), SAMPLE_RATE_HZ),
        media.to_wav(media.tone(440, 0.5), SAMPLE_RATE_HZ, codec="pcm_u8"),
    ],
    ids=["stereo-wav", "stereo-flac", "8-bit-wav"],
)
def test_non_canonical_layouts_are_refused(data):
    with pytest.raises(CorruptAudioError, match=r"mono|16-bit"):
        decode_pcm(data)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_another_sample_rate_is_refused_unless_allowed(encoding):
    data = encode_pcm(media.tone(440, 0.5, rate=8000)[0], encoding, sample_rate_hz=8000)
    with pytest.raises(CorruptAudioError, match="16000 Hz; got 8000 Hz"):
        decode_pcm(data)
    assert decode_pcm(data, expected_rate_hz=None).size == 4000


def test_damaged_canonical_audio_raises():
    with pytest.raises(CorruptAudioError):
        decode_pcm(b"RIFF\x00\x00")
    with pytest.raises(CorruptAudioError):
        decode_pcm(b"fLaC" + bytes(10))
