"""Per-request options, device resolution and the engine's checks that need no model."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from escriba.common.errors import InvalidInputError, LimitExceededError, NotReadyError
from escriba.common.settings import load
from escriba.transcription.devices import (
    resolve_compute_type,
    resolve_cpu_threads,
    resolve_device,
    resolve_workers,
)
from escriba.transcription.engine import WhisperEngine
from escriba.transcription.errors import (
    AudioTooLongError,
    EngineNotReadyError,
    InvalidAudioError,
    InvalidOptionError,
    UnsupportedLanguageError,
)
from escriba.transcription.options import MAX_PROMPT_CHARS, TranscriptionOptions, VadParameters
from escriba.transcription.settings import TranscriptionSettings


def test_defaults_are_valid() -> None:
    opts = TranscriptionOptions()
    assert opts.language is None
    assert opts.vad.enabled
    assert 1 <= opts.beam_size <= 20


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (" EN ", "en"),
        ("de", "de"),
        ("pt-BR", "pt"),
        ("en_US", "en"),
        ("yue", "yue"),
        ("", None),
        ("auto", None),
    ],
)
def test_language_is_normalized(given: str, expected: str | None) -> None:
    assert TranscriptionOptions(language=given).language == expected


@pytest.mark.parametrize("code", ["xx", "english", "xx-US", "-en"])
def test_unknown_language_is_an_invalid_input(code: str) -> None:
    with pytest.raises(UnsupportedLanguageError) as excinfo:
        TranscriptionOptions(language=code)
    err = excinfo.value
    assert isinstance(err, InvalidInputError)
    assert not err.transient
    assert err.field == "language"
    assert err.reason == "unsupported_language"
    assert repr(code) in err.message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"beam_size": 0}, "beam_size"),
        ({"beam_size": 21}, "beam_size"),
        ({"beam_size": 2.5}, "beam_size"),
        ({"beam_size": True}, "beam_size"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 1.01}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"hotwords": "x" * (MAX_PROMPT_CHARS + 1)}, "hotwords"),
        ({"initial_prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "initial_prompt"),
        ({"initial_prompt": "a\x00b"}, "initial_prompt"),
    ],
)
def test_out_of_range_options_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidOptionError) as excinfo:
        TranscriptionOptions(**changes)
    assert excinfo.value.field == field
    assert excinfo.value.message.startswith(field)
    assert excinfo.value.reason == "invalid_option"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"threshold": 1.5}, "vad.threshold"),
        ({"threshold": -0.01}, "vad.threshold"),
        ({"min_speech_duration_ms": -1}, "vad.min_speech_duration_ms"),
        ({"min_silence_duration_ms": 10**7}, "vad.min_silence_duration_ms"),
        ({"speech_pad_ms": -1}, "vad.speech_pad_ms"),
        ({"max_speech_duration_s": 31.0}, "vad.max_speech_duration_s"),
        ({"max_speech_duration_s": 0.5}, "vad.max_speech_duration_s"),
    ],
)
def test_bad_vad_parameters_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidOptionError) as excinfo:
        VadParameters(**changes)
    assert excinfo.value.field == field


def test_blank_prompts_mean_none() -> None:
    opts = TranscriptionOptions(initial_prompt="  ", hotwords="")
    assert opts.initial_prompt is None
    assert opts.hotwords is None


def test_changes_skip_unset_values_and_are_validated() -> None:
    base = TranscriptionOptions(language="en", beam_size=5)
    changed = base.with_changes(beam_size=2, language=None, hotwords="ComfyUI")
    assert (changed.beam_size, changed.language, changed.hotwords) == (2, "en", "ComfyUI")
    vad = base.with_vad_changes(threshold=0.3, enabled=None)
    assert vad.vad == replace(base.vad, threshold=0.3)
    with pytest.raises(InvalidOptionError):
        base.with_changes(beam_size=50)
    with pytest.raises(InvalidOptionError):
        base.with_vad_changes(speech_pad_ms=-1)


def test_auto_device_follows_the_gpu_count() -> None:
    assert resolve_device("auto", cuda_devices=0) == "cpu"
    assert resolve_device("auto", cuda_devices=2) == "cuda"
    assert resolve_device("cpu", cuda_devices=2) == "cpu"
    assert resolve_device("cuda", cuda_devices=0) == "cuda"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_auto_compute_type_per_device() -> None:
    assert resolve_compute_type("auto", "cuda") == "int8_float16"
    assert resolve_compute_type("auto", "cpu") == "int8"
    assert resolve_compute_type("float32", "cpu") == "float32"
    with pytest.raises(ValueError, match="unknown compute type"):
        resolve_compute_type("fp4", "cpu")


def test_zero_cpu_threads_means_every_usable_cpu() -> None:
    assert resolve_cpu_threads(0) >= 1
    assert resolve_cpu_threads(3) == 3
    with pytest.raises(ValueError):
        resolve_cpu_threads(-1)


# The engine's checks that run before (and without) a model ---------------------------------------


@pytest.fixture
def unloaded() -> Any:
    engine = WhisperEngine(load(TranscriptionSettings, {"ESCRIBA_TRANSCRIPTION_MAX_DURATION_S": "10"}))
    yield engine
    engine.close()


def test_requests_before_load_are_retryable(unloaded: WhisperEngine) -> None:
    assert not unloaded.is_ready
    with pytest.raises(EngineNotReadyError) as excinfo:
        unloaded.transcribe(np.zeros(16000, dtype=np.float32))
    assert isinstance(excinfo.value, NotReadyError)
    assert excinfo.value.transient


async def test_async_requests_before_load_are_retryable(unloaded: WhisperEngine) -> None:
    with pytest.raises(EngineNotReadyError):
        await unloaded.transcribe_async(np.zeros(16000, dtype=np.float32))
    assert unloaded.pending_requests == 0


@pytest.mark.parametrize(
    ("samples", "problem"),
    [
        (np.zeros((2, 16000), dtype=np.float32), "1-D"),
        (np.zeros(16000, dtype=np.int16), "float"),
        (np.array([0.0, np.nan], dtype=np.float32), "NaN"),
        (np.array([0.0, np.inf]), "NaN"),
    ],
)
def test_unusable_samples_are_invalid_input(unloaded: WhisperEngine, samples: Any, problem: str) -> None:
    with pytest.raises(InvalidAudioError, match=problem):
        unloaded.transcribe(samples)


def test_audio_over_the_limit_is_refused(unloaded: WhisperEngine) -> None:
    with pytest.raises(AudioTooLongError) as excinfo:
        unloaded.transcribe(np.zeros(16000 * 11, dtype=np.float32))
    assert isinstance(excinfo.value, LimitExceededError)
    assert "ESCRIBA_TRANSCRIPTION_MAX_DURATION_S" in excinfo.value.message


def test_batch_size_follows_the_cpu_table() -> None:
    settings = load(
        TranscriptionSettings,
        {"ESCRIBA_TRANSCRIPTION_DEVICE": "cpu", "ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CPU": "30:1,inf:3"},
    )
    engine = WhisperEngine(settings)
    try:
        assert engine.batch_size_for(11.0) == 1
        assert engine.batch_size_for(300.0) == 3
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("device", "cpus", "workers", "threads", "expected"),
    [
        ("cpu", 2, 0, 0, (2, 2)),  # one worker per CPU, two threads each: alone, one still uses both
        ("cpu", 16, 0, 0, (8, 2)),  # at most 8 auto workers
        ("cpu", 32, 0, 0, (8, 4)),  # the rest as threads
        ("cpu", 1, 0, 0, (1, 1)),
        ("cpu", 2, 1, 0, (1, 2)),  # one worker asked for: it gets every CPU
        ("cpu", 4, 3, 0, (3, 1)),  # workers asked for: the CPUs divided among them
        ("cpu", 2, 2, 4, (2, 4)),  # explicit threads per worker win
        ("cpu", 2, 0, 1, (2, 1)),
        ("cuda", 4, 0, 0, (1, 4)),  # one worker feeds a GPU, batches fill it
        ("cuda", 4, 2, 0, (2, 2)),
    ],
)
def test_model_workers_and_threads_share_the_cpus(
    device: str, cpus: int, workers: int, threads: int, expected: tuple[int, int]
) -> None:
    assert resolve_workers(device, cpus=cpus, num_workers=workers, cpu_threads=threads) == expected


def test_model_workers_follow_the_container_cpu_limit(tmp_path: Any) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")  # one CPU
    assert resolve_workers("cpu", cpu_max=cpu_max) == (1, 1)
    with pytest.raises(ValueError, match=">= 0"):
        resolve_workers("cpu", num_workers=-1)
