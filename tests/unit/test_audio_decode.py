"""Decoding every supported container/codec to 16 kHz mono, and refusing bad input with clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from escriba.audio.decode import DecodedAudio, decode_audio, looks_like_media
from escriba.audio.errors import (
    AudioTooLongError,
    CorruptAudioError,
    EmptyInputError,
    NoAudioStreamError,
    NotAudioError,
    ZeroDurationError,
)
from escriba.common.errors import InvalidInputError, LimitExceededError
from tests.support import media

RATE = 16000
HOUR = 3600.0


def decode(data: bytes, **kwargs: object) -> DecodedAudio:
    return decode_audio(data, max_duration_s=kwargs.pop("max_duration_s", HOUR), **kwargs)  # type: ignore[arg-type]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def dominant_hz(x: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


@pytest.fixture(scope="module")
def jfk() -> tuple[np.ndarray, int]:
    return media.speech("jfk.flac")


@pytest.fixture(scope="module")
def jfk_reference(jfk: tuple[np.ndarray, int]) -> np.ndarray:
    """The recording mixed to mono (channel mean) and resampled to 16 kHz, independently of escriba."""
    samples, rate = jfk
    return media.resample(samples.mean(axis=0, keepdims=True), rate, RATE).reshape(-1)


ENCODERS = media.FORMATS


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_each_format_decodes_to_16k_mono_speech(name, jfk, jfk_reference):
    samples, rate = jfk
    data = ENCODERS[name](samples, rate)
    decoded = decode(data)
    assert decoded.sample_rate_hz == RATE
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert decoded.duration_s == pytest.approx(11.0, abs=0.05)
    assert decoded.source.channels == 2
    assert decoded.source.size_bytes == len(data)
    assert decoded.warnings == () and decoded.skipped_packets == 0
    # Same speech, same level: lossy codecs keep the loudness envelope within a dB or so.
    n = min(decoded.samples.size, jfk_reference.size)
    assert 20 * np.log10(rms(decoded.samples[:n]) / rms(jfk_reference[:n])) == pytest.approx(0.0, abs=1.0)


@pytest.mark.parametrize(
    ("name", "container", "codec"),
    [
        ("wav", "wav", "pcm_s16le"),
        ("flac", "flac", "flac"),
        ("mp3", "mp3", "mp3"),
        ("ogg-opus", "ogg", "opus"),
        ("ogg-vorbis", "ogg", "vorbis"),
        ("m4a-aac", "mov,mp4,m4a,3gp,3g2,mj2", "aac"),
        ("webm-opus", "matroska,webm", "opus"),
        ("mp4-video", "mov,mp4,m4a,3gp,3g2,mj2", "aac"),
    ],
)
def test_source_container_and_codec_are_reported(name, container, codec, jfk):
    samples, rate = jfk
    source = decode(ENCODERS[name](samples[:, : rate * 2], rate)).source
    assert (source.container, source.codec) == (container, codec)
    assert source.sample_rate_hz == (48000 if "opus" in name else rate)


def test_lossless_input_matches_an_independent_mixdown(jfk, jfk_reference):
    samples, rate = jfk
    decoded = decode(media.to_flac(samples, rate)).samples
    n = min(decoded.size, jfk_reference.size)
    # Only the 16-bit quantization of the FLAC separates the two.
    assert np.max(np.abs(decoded[:n] - jfk_reference[:n])) < 1e-3


def test_path_input_reads_the_file(data_dir):
    decoded = decode_audio(data_dir / "jfk.flac", max_duration_s=HOUR)
    assert decoded.duration_s == pytest.approx(11.0, abs=0.01)
    assert decoded.source.size_bytes == (data_dir / "jfk.flac").stat().st_size


def test_decoder_threads_setting_gives_the_same_samples(jfk):
    samples, rate = jfk
    data = media.to_mp3(samples, rate)
    assert np.array_equal(decode(data, threads=1).samples, decode(data, threads=4).samples)


# Mixdown ----------------------------------------------------------------------------------------


def test_stereo_is_the_mean_of_both_channels_not_the_left_one():
    tone = media.tone(440, 2.0, rate=48000, amplitude=0.5)
    for channel in (0, 1):
        decoded = decode(media.to_wav(media.one_sided(tone, 2, channel), 48000)).samples
        middle = decoded[RATE // 2 : -RATE // 2]
        # A 0.5 sine in one channel of two is a 0.25 sine in the mean (RMS 0.25 / sqrt 2).
        assert rms(middle) == pytest.approx(0.25 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize(("channels", "channel"), [(8, 0), (8, 3), (8, 7), (12, 11)])
def test_many_channels_mix_down_with_equal_weight(channels, channel):
    # 12 channels have no standard layout: FFmpeg's own downmix could not even place them.
    tone = media.tone(300, 2.0, rate=48000, amplitude=0.8)
    data = media.encode(media.one_sided(tone, channels, channel), 48000, container="wav", codec="pcm_s16le")
    decoded = decode(data)
    assert decoded.source.channels == channels
    middle = decoded.samples[RATE // 2 : -RATE // 2]
    assert rms(middle) == pytest.approx(0.8 / channels / np.sqrt(2), rel=0.01)


def test_stereo_recording_keeps_both_speakers(data_dir):
    left_right, rate = media.speech("stereo_diarization.wav")
    decoded = decode_audio(data_dir / "stereo_diarization.wav", max_duration_s=HOUR).samples
    expected = media.resample(left_right.mean(axis=0, keepdims=True), rate, RATE)[0]
    assert decoded.size == expected.size
    assert np.max(np.abs(decoded - expected)) < 1e-4


# Sample rates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [4000, 8000, 11025, 22050, 44100, 96000, 192000])
def test_extreme_sample_rates_resample_to_16k_keeping_pitch(rate):
    data = media.to_flac(media.tone(440, 1.5, rate=rate, amplitude=0.5), rate)
    decoded = decode(data)
    assert decoded.source.sample_rate_hz == rate
    assert decoded.duration_s == pytest.approx(1.5, abs=0.01)
    assert dominant_hz(decoded.samples) == pytest.approx(440, abs=2)


def test_content_above_8k_is_removed_not_aliased():
    decoded = decode(media.to_wav(media.tone(12000, 1.0, rate=48000, amplitude=0.5), 48000))
    # A 12 kHz tone would alias to 4 kHz at 16 kHz without the resampler's low-pass.
    assert rms(decoded.samples[2000:-2000]) < 0.01


# Truncated and damaged files --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "declares_length"), [("wav", False), ("flac", True), ("mp3", True)])
def test_a_file_cut_in_half_keeps_what_is_there(name, declares_length, jfk):
    samples, rate = jfk
    decoded = decode(media.truncated(ENCODERS[name](samples, rate), 0.5))
    assert decoded.duration_s == pytest.approx(5.5, abs=0.3)
    if declares_length:  # the header says 11 s: the shortfall is reported
        assert any("truncated" in w for w in decoded.warnings)


@pytest.mark.parametrize("name", ["ogg-opus", "webm-opus", "adts-aac"])
def test_streamable_formats_cut_in_half_decode_the_first_half(name, jfk):
    samples, rate = jfk
    decoded = decode(media.truncated(ENCODERS[name](samples, rate), 0.5))
    assert 4.0 < decoded.duration_s < 7.0


@pytest.mark.parametrize("name", ["flac", "ogg-opus", "ogg-vorbis"])
def test_a_file_whose_header_is_cut_is_corrupt(name, jfk):
    samples, rate = jfk
    data = media.truncated(ENCODERS[name](samples, rate), 0.01)
    with pytest.raises(CorruptAudioError, match="truncated or damaged") as info:
        decode(data, filename="meeting.bin")
    assert "'meeting.bin'" in str(info.value)
    assert info.value.__cause__ is not None


def test_m4a_cut_before_its_index_is_corrupt(jfk):
    # The encoder writes the index (moov) at the end, so half the file has samples but no index.
    samples, rate = jfk
    with pytest.raises(CorruptAudioError):
        decode(media.truncated(media.to_m4a_aac(samples, rate), 0.5))


def test_webm_cut_after_its_header_is_corrupt_not_empty(jfk):
    samples, rate = jfk
    with pytest.raises(CorruptAudioError, match=r"declares 11\.0 s"):
        decode(media.truncated(media.to_webm_opus(samples, rate), 0.01))


def test_damaged_middle_is_skipped(jfk):
    samples, rate = jfk
    data = bytearray(media.to_mp3(samples, rate))
    middle = len(data) // 2
    data[middle : middle + 2000] = media.random_bytes(2000, seed=3)
    decoded = decode(bytes(data))
    assert decoded.duration_s > 10.0


@pytest.mark.parametrize("name", ["mp3", "adts-aac", "flac"])
def test_mostly_undecodable_audio_is_corrupt(name, jfk):
    samples, rate = jfk
    data = bytearray(ENCODERS[name](samples, rate))
    # Scribble over half of every 64 bytes after the first 10 %: most frames cannot be decoded.
    for start in range(len(data) // 10, len(data), 64):
        data[start + 8 : start + 40] = media.random_bytes(32, seed=start)
    with pytest.raises(CorruptAudioError, match=r"of \d+ audio packets cannot be decoded"):
        decode(bytes(data))


# Not audio at all -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"", EmptyInputError, "empty_input"),
        (media.random_bytes(), NotAudioError, "not_audio"),
        (b"Dear team, please find the minutes attached.\n" * 50, NotAudioError, "not_audio"),
        (b'{"audio": "elsewhere"}', NotAudioError, "not_audio"),
        (bytes(4096), NotAudioError, "not_audio"),
        (b"\x89PNG\r\n\x1a\n" + media.random_bytes(512), NotAudioError, "not_audio"),
        (b"1\n00:00:01,000 --> 00:00:02,000\nhello\n\n", NotAudioError, "not_audio"),
        (media.header_only_wav(), ZeroDurationError, "zero_duration"),
        (media.video_without_audio(), NoAudioStreamError, "no_audio_stream"),
    ],
    ids=["empty", "random", "text", "json", "zeros", "png", "subtitles", "zero-duration", "video-only"],
)
def test_bad_input_raises_its_error_with_a_readable_message(data, error, reason):
    with pytest.raises(error) as info:
        decode(data, filename="upload.dat")
    exc = info.value
    assert isinstance(exc, InvalidInputError)
    assert exc.reason == reason
    assert not exc.transient
    assert "'upload.dat'" in exc.message
    assert len(exc.message) > 30


def test_errors_from_ffmpeg_are_chained():
    with pytest.raises(NotAudioError) as info:
        decode(media.random_bytes())
    assert "Invalid data" in str(info.value.__cause__)


def test_a_video_without_sound_says_what_it_found():
    with pytest.raises(NoAudioStreamError, match="found: video"):
        decode(media.video_without_audio())


@pytest.mark.parametrize(
    "head",
    [
        b"RIFF\x00\x00\x00\x00WAVE",
        b"fLaC\x00",
        b"OggS\x00",
        b"ID3\x04",
        b"\x00\x00\x00\x20ftypM4A ",
        b"\xff\xfb\x90",
        b"\xff\xf1\x50",
    ],
)
def test_media_signatures_are_recognised(head):
    assert looks_like_media(head)


@pytest.mark.parametrize("head", [b"%PDF-1.7", b"\x89PNG\r\n", b"hello", b"", b"\xff\x00", b"\xff\xe0"])
def test_other_signatures_are_not_media(head):
    assert not looks_like_media(head)


# Limits -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return media.decompression_bomb(hours=3.0)


def test_decompression_bomb_stops_just_past_the_limit(bomb):
    assert len(bomb) < 200_000  # three hours of audio in a small upload
    with pytest.raises(AudioTooLongError) as info:
        decode(bomb, max_duration_s=60.0)
    exc = info.value
    assert isinstance(exc, LimitExceededError) and exc.reason == "audio_too_long"
    # Decoding stopped within one output block of the limit instead of expanding three hours.
    assert 60.0 < exc.decoded_s <= 61.5
    assert exc.limit_s == 60.0
    assert "60 s" in exc.message and "3 h 00 min" in exc.message


def test_audio_at_the_limit_is_accepted(jfk):
    samples, rate = jfk
    data = media.to_flac(samples, rate)
    assert decode(data, max_duration_s=11.5).duration_s == pytest.approx(11.0, abs=0.01)
    with pytest.raises(AudioTooLongError, match=r"limit of 10\.0 s"):
        decode(data, max_duration_s=10.0)


def test_silent_file_decodes_to_zeros():
    decoded = decode(media.to_ogg_opus(media.silence(3.0, 48000), 48000))
    assert decoded.duration_s == pytest.approx(3.0, abs=0.05)
    assert np.max(np.abs(decoded.samples)) < 1e-4


def test_named_media_helpers_decode_as_described():
    assert decode(media.speech_as("ogg-vorbis")).duration_s == pytest.approx(11.0, abs=0.05)
    assert decode(media.speech_at_rate(8000)).source.sample_rate_hz == 8000
    eight = decode(media.speech_in_one_channel(8, 5))
    assert eight.source.channels == 8 and eight.duration_s == pytest.approx(11.0, abs=0.01)
    assert decode(media.long_speech_flac(30.0)).duration_s == pytest.approx(30.0, abs=0.01)
