"""Loading the model: the bundled default, and clear failures for every way a configuration can be wrong.

Nothing is ever downloaded: a model name that is not in the local cache fails at once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from escriba.common.errors import PermanentError
from escriba.common.settings import load
from escriba.transcription.devices import cuda_device_count
from escriba.transcription.engine import WhisperEngine, resolve_model_source
from escriba.transcription.errors import ModelLoadError, ModelNotFoundError
from escriba.transcription.settings import BUNDLED_MODEL_NAME, TranscriptionSettings

pytestmark = pytest.mark.timeout(60)


def settings(**changes: object) -> TranscriptionSettings:
    base = load(TranscriptionSettings, {"ESCRIBA_TRANSCRIPTION_DEVICE": "cpu"})
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def failed_load(**changes: object) -> ModelLoadError:
    engine = WhisperEngine(settings(**changes))
    try:
        with pytest.raises(ModelLoadError) as excinfo:
            engine.load()
        assert not engine.is_ready
        assert engine.model_name == ""
        return excinfo.value
    finally:
        engine.close()


def test_empty_setting_means_the_bundled_tiny_en() -> None:
    source = resolve_model_source("")
    assert source.name == BUNDLED_MODEL_NAME
    assert source.is_directory
    assert (Path(source.path_or_name) / "model.bin").is_file()


def test_a_model_directory_is_named_after_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "faster-whisper-small"
    folder.mkdir()
    source = resolve_model_source(str(folder) + "/")
    assert (source.name, source.is_directory) == ("faster-whisper-small", True)


def test_names_are_looked_up_in_the_cache_not_on_disk() -> None:
    source = resolve_model_source("Systran/faster-whisper-large-v3")
    assert (source.name, source.is_directory) == ("Systran/faster-whisper-large-v3", False)


def test_missing_directory_names_the_variable(tmp_path: Path) -> None:
    err = failed_load(model=str(tmp_path / "nowhere"))
    assert isinstance(err, ModelNotFoundError)
    assert isinstance(err, PermanentError)
    assert "ESCRIBA_TRANSCRIPTION_MODEL" in err.message
    assert err.reason == "model_not_found"


def test_directory_without_a_model(tmp_path: Path) -> None:
    err = failed_load(model=str(tmp_path))
    assert "model.bin" in err.message
    assert isinstance(err.__cause__, RuntimeError)


def test_unknown_model_name() -> None:
    err = failed_load(model="no-such-model")
    assert "no-such-model" in err.message
    assert err.__cause__ is not None


@pytest.mark.parametrize("name", ["tiny", "Systran/faster-whisper-tiny"])
def test_known_name_that_is_not_cached_is_not_downloaded(tmp_path: Path, name: str) -> None:
    err = failed_load(model=name, download_root=str(tmp_path), local_files_only=True)
    assert name in err.message
    assert not any(tmp_path.rglob("model.bin"))


def test_precision_the_device_cannot_run() -> None:
    err = failed_load(compute_type="float16")
    assert "float16" in err.message


@pytest.mark.skipif(cuda_device_count() > 0, reason="a GPU is present")
def test_cuda_without_a_gpu() -> None:
    err = failed_load(device="cuda")
    assert "cuda" in err.message
