"""The preprocess engine end to end: upload bytes in, canonical audio and its description out."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from faster_whisper import decode_audio

from escriba.audio.loudness import integrated_loudness
from escriba.audio.pcm import decode_pcm
from escriba.common.errors import InvalidInputError, LimitExceededError
from escriba.common.settings import load
from escriba.preprocess import Preprocessor, PreprocessSettings, sha256_file
from escriba.preprocess.errors import (
    AudioTooLongError,
    CorruptAudioError,
    EmptyInputError,
    InputTooLargeError,
    InvalidOptionError,
    NoAudioStreamError,
    NotAudioError,
)
from tests.support import media

CEILING = 10 ** (-1.5 / 20)


@pytest.fixture(scope="module")
def settings() -> PreprocessSettings:
    return load(PreprocessSettings, {})


@pytest.fixture(scope="module")
def engine(settings: PreprocessSettings) -> Preprocessor:
    return Preprocessor(settings)


def with_settings(settings: PreprocessSettings, **changes: object) -> Preprocessor:
    return Preprocessor(dataclasses.replace(settings, **changes))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def jfk_mp3() -> bytes:
    samples, rate = media.speech("jfk.flac")
    return media.to_mp3(samples, rate)


def test_mp3_becomes_canonical_flac(engine, jfk_mp3):
    result = engine.run(jfk_mp3, filename="jfk.mp3")
    info = result.info
    assert info.sha256 == hashlib.sha256(jfk_mp3).hexdigest()
    assert info.duration_s == pytest.approx(11.0, abs=0.05)
    assert (info.source_container, info.source_codec) == ("mp3", "mp3")
    assert (info.source_sample_rate_hz, info.source_channels, info.source_bytes) == (44100, 2, len(jfk_mp3))
    assert (info.sample_rate_hz, info.encoding) == (16000, "flac")
    assert result.audio.startswith(b"fLaC")
    assert info.normalized_sha256 == hashlib.sha256(result.audio).hexdigest()
    # The samples handed back are exactly what the canonical bytes decode to.
    assert np.array_equal(decode_pcm(result.audio), result.samples)
    assert result.samples.size == round(info.duration_s * 16000)
    # The signal as recorded: loudness measured and reported, no gain, no limiter.
    assert info.gain_db == 0.0 and info.limiter_reduction_db == 0.0
    assert info.output_loudness_lufs == info.input_loudness_lufs
    assert integrated_loudness(result.samples, 16000) == pytest.approx(info.input_loudness_lufs, abs=0.1)
    assert not info.silent and info.warnings == () and info.skipped_packets == 0


def test_path_input_gives_the_same_result_as_its_bytes(engine, data_dir):
    path = data_dir / "jfk.flac"
    from_path = engine.run(path)
    from_bytes = engine.run(path.read_bytes())
    assert from_path.info == from_bytes.info
    assert from_path.info.sha256 == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_output_is_deterministic(engine, jfk_mp3):
    assert engine.run(jfk_mp3).info.normalized_sha256 == engine.run(jfk_mp3).info.normalized_sha256


@pytest.mark.parametrize("gain_db", [-30.0, -10.0, 0.0])
def test_speech_at_any_level_keeps_its_level(engine, gain_db):
    samples, rate = media.speech("hotwords.mp3")
    result = engine.run(media.to_flac(media.with_gain(samples, gain_db), rate))
    reference = engine.run(media.to_flac(samples, rate))
    assert result.info.output_loudness_lufs == pytest.approx(
        reference.info.output_loudness_lufs + gain_db, abs=0.3
    )
    assert result.info.gain_db == 0.0


def test_a_quiet_recording_with_a_loud_click_is_left_undistorted(engine):
    """What once got +28 dB and a limiter that cut around the click by 26 dB: the samples the model
    hears are the ones plain faster-whisper decodes from the same file (resampling aside)."""
    samples, rate = media.speech("hotwords.mp3")
    quiet = media.with_gain(samples, -35.0)
    click_at = quiet.shape[-1] // 2
    quiet[..., click_at : click_at + 40] = 0.9
    data = media.to_wav(quiet, rate)
    result = engine.run(data)
    expected = decode_audio(io.BytesIO(data))
    n = min(expected.size, result.samples.size)
    assert abs(expected.size - result.samples.size) <= 16
    error = result.samples[:n] - expected[:n]
    assert float(np.sqrt(np.mean(error**2))) < 0.02 * float(np.sqrt(np.mean(expected[:n] ** 2)))
    assert np.max(np.abs(result.samples)) > 0.5  # the click was not limited away
    assert result.info.gain_db == 0.0 and result.info.limiter_reduction_db == 0.0


@pytest.mark.parametrize("gain_db", [-30.0, -10.0, 0.0, 10.0])
def test_a_normalized_copy_comes_out_at_the_target(settings, gain_db):
    engine = with_settings(settings, normalize_loudness=True)
    samples, rate = media.speech("hotwords.mp3")
    result = engine.run(media.to_flac(media.with_gain(samples, gain_db), rate))
    assert result.info.output_loudness_lufs == pytest.approx(-16.0, abs=0.5)
    assert np.max(np.abs(result.samples)) <= CEILING


def test_per_call_overrides(engine, jfk_mp3):
    result = engine.run(jfk_mp3, target_lufs=-23.0, encoding="wav")
    assert result.info.encoding == "wav" and result.audio.startswith(b"RIFF")
    assert result.info.output_loudness_lufs == pytest.approx(-23.0, abs=0.5)
    assert np.array_equal(decode_pcm(result.audio), result.samples)


def test_settings_choose_the_defaults(settings, jfk_mp3):
    engine = with_settings(
        settings, normalize_loudness=True, target_lufs=-20.0, output_encoding="wav", peak_ceiling_dbfs=-6.0
    )
    result = engine.run(jfk_mp3, encoding="")
    assert result.info.encoding == "wav"
    assert result.info.output_loudness_lufs == pytest.approx(-20.0, abs=0.5)
    assert np.max(np.abs(result.samples)) <= 10 ** (-6.0 / 20)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"target_lufs": 3.0}, "between -70 and 0 LUFS; got 3.0"),
        ({"target_lufs": -90.0}, "between -70 and 0 LUFS"),
        ({"target_lufs": math.nan}, "between -70 and 0 LUFS"),
        ({"encoding": "mp3"}, "one of flac, wav; got 'mp3'"),
    ],
)
def test_bad_options_are_refused_before_any_work(engine, options, match):
    with pytest.raises(InvalidOptionError, match=match) as info:
        engine.run(media.random_bytes(), **options)
    assert info.value.reason == "invalid_option"
    assert isinstance(info.value, InvalidInputError)


def test_silence_is_reported_and_not_amplified(engine):
    result = engine.run(media.to_wav(media.silence(4.0), 16000))
    info = result.info
    assert info.silent
    assert info.gain_db == 0.0
    assert info.input_loudness_lufs == -math.inf and info.output_loudness_lufs == -math.inf
    assert info.duration_s == pytest.approx(4.0)
    assert not result.samples.any()


def test_truncation_is_reported_in_the_info(engine, jfk_mp3):
    info = engine.run(media.truncated(jfk_mp3, 0.5)).info
    assert info.duration_s == pytest.approx(5.5, abs=0.3)
    assert any("truncated" in warning for warning in info.warnings)


# Limits and bad input ---------------------------------------------------------------------------


def test_byte_limit_is_checked_before_decoding(settings):
    engine = with_settings(settings, max_input_bytes=1000)
    # Random bytes would be "not audio" if they were decoded: the size check comes first.
    with pytest.raises(InputTooLargeError) as info:
        engine.run(media.random_bytes(2000), filename="big.wav")
    exc = info.value
    assert isinstance(exc, LimitExceededError) and exc.reason == "input_too_large"
    assert (exc.limit_bytes, exc.actual_bytes) == (1000, 2000)
    assert "'big.wav' is 2000 bytes" in exc.message and "limit of 1000 bytes" in exc.message
    assert engine.run(media.to_mp3(media.tone(440, 0.5), 16000, bit_rate=8000)).info.source_bytes <= 1000


def test_byte_limit_uses_the_file_size_of_a_path(settings, data_dir):
    path = data_dir / "jfk.flac"
    engine = with_settings(settings, max_input_bytes=path.stat().st_size - 1)
    with pytest.raises(InputTooLargeError, match=r"1\.1 MiB"):
        engine.run(path)


def test_duration_limit_stops_a_decompression_bomb(settings):
    engine = with_settings(settings, max_duration_s=30.0)
    bomb = media.decompression_bomb(hours=2.0)
    with pytest.raises(AudioTooLongError) as info:
        engine.run(bomb, filename="silence.flac")
    assert info.value.decoded_s <= 31.5
    assert "limit of 30.0 s" in info.value.message


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyInputError),
        (media.random_bytes(), NotAudioError),
        (media.video_without_audio(), NoAudioStreamError),
        (media.truncated(media.to_flac(media.tone(440, 2.0), 16000), 0.005), CorruptAudioError),
    ],
    ids=["empty", "random", "video-only", "cut-header"],
)
def test_bad_input_errors_pass_through(engine, data, error):
    with pytest.raises(error):
        engine.run(data)


# Concurrency and caching ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_concurrent_runs_match_serial_runs(engine):
    samples, rate = media.speech("stereo_diarization.wav")
    inputs = [
        media.to_ogg_opus(samples, rate),
        media.to_m4a_aac(samples, rate),
        media.to_wav(samples, rate),
        media.video(samples, rate),
    ]
    serial = [engine.run(data).info for data in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda data: engine.run(data).info, inputs * 3))
    assert parallel == serial * 3


def test_cache_key_depends_on_everything_that_shapes_the_output(settings, engine):
    sha = hashlib.sha256(b"upload").hexdigest()
    key = engine.cache_key(sha)
    assert key.startswith(sha + ".")
    assert re.fullmatch(r"[-/_=.a-zA-Z0-9]+", key)  # a valid NATS KV key
    assert engine.cache_key(sha, encoding="flac") == key
    normalizing = with_settings(settings, normalize_loudness=True)
    assert normalizing.cache_key(sha) == engine.cache_key(sha, target_lufs=-16.0)
    others = {
        engine.cache_key(sha, target_lufs=-16.0),
        engine.cache_key(sha, target_lufs=-23.0),
        engine.cache_key(sha, encoding="wav"),
        with_settings(normalizing.settings, peak_ceiling_dbfs=-3.0).cache_key(sha),
        engine.cache_key(hashlib.sha256(b"other").hexdigest()),
    }
    assert key not in others and len(others) == 5
    # The peak ceiling only shapes a normalized copy.
    assert with_settings(settings, peak_ceiling_dbfs=-3.0).cache_key(sha) == key
    # Limits do not change the output of a run that succeeds, so they do not split the cache.
    assert with_settings(settings, max_duration_s=60.0, decoder_threads=2).cache_key(sha) == key
