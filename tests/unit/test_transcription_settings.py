"""TranscriptionSettings: defaults, parsing and fail-fast validation that names the variable."""

from __future__ import annotations

import math

import pytest

from escriba.common.settings import SettingsError, env_variables, load
from escriba.transcription.batching import check_batch_table
from escriba.transcription.options import TranscriptionOptions, VadParameters
from escriba.transcription.settings import (
    DEFAULT_BATCH_SIZES_CPU,
    DEFAULT_BATCH_SIZES_CUDA,
    TranscriptionSettings,
)

PREFIX = "ESCRIBA_TRANSCRIPTION_"


def test_defaults_never_download_and_pick_the_device_automatically() -> None:
    s = load(TranscriptionSettings, {})
    assert s.model == ""
    assert s.device == "auto"
    assert s.compute_type == "auto"
    assert s.local_files_only is True
    assert s.batch_sizes_cpu == DEFAULT_BATCH_SIZES_CPU
    assert s.batch_sizes_cuda == DEFAULT_BATCH_SIZES_CUDA
    assert check_batch_table(s.batch_sizes_cpu) is None
    assert check_batch_table(s.batch_sizes_cuda) is None


def test_default_options_mirror_the_settings() -> None:
    s = load(
        TranscriptionSettings,
        {
            PREFIX + "LANGUAGE": "DE",
            PREFIX + "BEAM_SIZE": "3",
            PREFIX + "WORD_TIMESTAMPS": "false",
            PREFIX + "SEGMENT_TIMESTAMPS": "no",
            PREFIX + "TEMPERATURE": "0.2",
            PREFIX + "CONDITION_ON_PREVIOUS_TEXT": "true",
            PREFIX + "VAD_ENABLED": "off",
            PREFIX + "VAD_THRESHOLD": "0.35",
            PREFIX + "VAD_MIN_SPEECH_MS": "250",
            PREFIX + "VAD_MIN_SILENCE_MS": "500",
            PREFIX + "VAD_SPEECH_PAD_MS": "200",
            PREFIX + "VAD_MAX_SPEECH_S": "20",
        },
    )
    assert s.default_options() == TranscriptionOptions(
        language="de",
        beam_size=3,
        word_timestamps=False,
        segment_timestamps=False,
        temperature=0.2,
        condition_on_previous_text=True,
        vad=VadParameters(
            enabled=False,
            threshold=0.35,
            min_speech_duration_ms=250,
            min_silence_duration_ms=500,
            speech_pad_ms=200,
            max_speech_duration_s=20.0,
        ),
    )


def test_empty_language_means_detect() -> None:
    assert load(TranscriptionSettings, {PREFIX + "LANGUAGE": ""}).default_options().language is None


def test_batch_tables_parse_from_pairs() -> None:
    s = load(
        TranscriptionSettings,
        {PREFIX + "BATCH_SIZES_CPU": "600:8, 60:4 ,inf:16", PREFIX + "BATCH_SIZES_CUDA": "inf:32"},
    )
    assert s.batch_sizes_cpu == ((60.0, 4), (600.0, 8), (math.inf, 16))
    assert s.batch_sizes_cuda == ((math.inf, 32),)


@pytest.mark.parametrize(
    ("suffix", "raw"),
    [
        ("DEVICE", "gpu"),
        ("COMPUTE_TYPE", "fp8"),
        ("CPU_THREADS", "-1"),
        ("CPU_THREADS", "two"),
        ("NUM_WORKERS", "-1"),
        ("NUM_WORKERS", "65"),
        ("CPUS", "-2"),
        ("MAX_CONCURRENCY", "0"),
        ("MAX_DURATION_S", "0"),
        ("MAX_INPUT_BYTES", "0"),
        ("BATCH_SIZES_CPU", "60:0"),
        ("BATCH_SIZES_CPU", "60:4,60:8"),
        ("BATCH_SIZES_CPU", "-5:4"),
        ("BATCH_SIZES_CPU", "sixty:4"),
        ("BATCH_SIZES_CUDA", "inf:1000"),
        ("BATCH_SIZES_CUDA", ","),
        ("LOCAL_FILES_ONLY", "maybe"),
        ("LANGUAGE", "klingon"),
        ("BEAM_SIZE", "0"),
        ("BEAM_SIZE", "21"),
        ("WORD_TIMESTAMPS", "2"),
        ("TEMPERATURE", "1.5"),
        ("TEMPERATURE", "nan"),
        ("VAD_THRESHOLD", "-0.1"),
        ("VAD_MIN_SPEECH_MS", "-1"),
        ("VAD_MIN_SILENCE_MS", "999999"),
        ("VAD_SPEECH_PAD_MS", "-5"),
        ("VAD_MAX_SPEECH_S", "45"),
    ],
)
def test_bad_values_fail_naming_the_variable(suffix: str, raw: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load(TranscriptionSettings, {PREFIX + suffix: raw})
    assert excinfo.value.variable == PREFIX + suffix
    assert str(excinfo.value).startswith(PREFIX + suffix)


def test_every_variable_is_documented_with_the_prefix() -> None:
    documented = {k: v for k, v in env_variables().items() if k.startswith(PREFIX)}
    assert {PREFIX + "MODEL", PREFIX + "DEVICE", PREFIX + "BATCH_SIZES_CPU", PREFIX + "VAD_THRESHOLD"} <= set(
        documented
    )
    assert all(doc.strip() for doc in documented.values())


@pytest.mark.parametrize(
    ("content", "expected"),
    [("max 100000", None), ("150000 100000", 2), ("100000 100000", 1), ("50000 100000", 1), ("junk", None)],
)
def test_cgroup_cpu_limit(tmp_path, content: str, expected: int | None) -> None:
    from escriba.transcription.devices import cgroup_cpu_limit, resolve_cpu_threads

    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content + "\n")
    assert cgroup_cpu_limit(cpu_max) == expected
    threads = resolve_cpu_threads(0, cpu_max)
    assert 1 <= threads <= (expected or threads)
    assert resolve_cpu_threads(3, cpu_max) == 3


def test_no_cgroup_file_means_no_limit(tmp_path) -> None:
    from escriba.transcription.devices import cgroup_cpu_limit

    assert cgroup_cpu_limit(tmp_path / "missing") is None
