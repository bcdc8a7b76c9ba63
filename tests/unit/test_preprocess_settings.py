"""PreprocessSettings: defaults, parsing, and bad values failing fast with the variable's name."""

from __future__ import annotations

import dataclasses

import pytest

from escriba.common.settings import SettingsError, all_settings_classes, env_variables, load
from escriba.preprocess.settings import PreprocessSettings

PREFIX = "ESCRIBA_PREPROCESS_"


def test_defaults():
    settings = load(PreprocessSettings, {})
    assert settings.decoder_threads == 0
    assert settings.target_lufs == -16.0
    assert settings.peak_ceiling_dbfs == -1.5
    assert settings.max_duration_s == 4 * 3600
    assert settings.max_input_bytes == 1024**3
    assert settings.max_concurrency == 2
    assert settings.output_encoding == "flac"


def test_values_are_read_from_the_environment():
    settings = load(
        PreprocessSettings,
        {
            f"{PREFIX}DECODER_THREADS": "2",
            f"{PREFIX}TARGET_LUFS": "-23",
            f"{PREFIX}PEAK_CEILING_DBFS": "-1",
            f"{PREFIX}MAX_DURATION_S": "600",
            f"{PREFIX}MAX_INPUT_BYTES": "1048576",
            f"{PREFIX}MAX_CONCURRENCY": "4",
            f"{PREFIX}OUTPUT_ENCODING": "wav",
        },
    )
    assert settings == PreprocessSettings(
        decoder_threads=2,
        target_lufs=-23.0,
        peak_ceiling_dbfs=-1.0,
        max_duration_s=600.0,
        max_input_bytes=1048576,
        max_concurrency=4,
        output_encoding="wav",
    )


def test_from_env_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv(f"{PREFIX}TARGET_LUFS", "-20.5")
    assert PreprocessSettings.from_env().target_lufs == -20.5


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("DECODER_THREADS", "-1", "between 0 and 64"),
        ("DECODER_THREADS", "two", "cannot parse"),
        ("TARGET_LUFS", "-80", "between -70.0 and 0.0"),
        ("TARGET_LUFS", "3", "between -70.0 and 0.0"),
        ("TARGET_LUFS", "nan", "NaN"),
        ("PEAK_CEILING_DBFS", "0.5", "between -20.0 and 0.0"),
        ("MAX_DURATION_S", "0", "between 1.0"),
        ("MAX_DURATION_S", "inf", "between 1.0"),
        ("MAX_INPUT_BYTES", "0", ">= 1"),
        ("MAX_INPUT_BYTES", "1GiB", "cannot parse"),
        ("MAX_CONCURRENCY", "0", "between 1 and 64"),
        ("MAX_WORKER_DEATHS", "-1", "between 0 and 100"),
        ("OUTPUT_ENCODING", "mp3", "one of flac, wav"),
    ],
)
def test_bad_values_fail_naming_the_variable(name, value, problem):
    variable = PREFIX + name
    with pytest.raises(SettingsError, match=problem) as info:
        load(PreprocessSettings, {variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}:")


def test_every_variable_is_registered_with_a_unit():
    assert PreprocessSettings in all_settings_classes()
    names = {f.metadata["env"] for f in dataclasses.fields(PreprocessSettings)}
    assert names == {
        f"{PREFIX}{n}"
        for n in (
            "DECODER_THREADS",
            "NORMALIZE_LOUDNESS",
            "TARGET_LUFS",
            "PEAK_CEILING_DBFS",
            "MAX_DURATION_S",
            "MAX_INPUT_BYTES",
            "MAX_CONCURRENCY",
            "MAX_WORKER_DEATHS",
            "OUTPUT_ENCODING",
        )
    }
    docs = env_variables()
    units = {"count", "LUFS", "dBFS", "seconds", "bytes", "flac or wav"}
    switches = {f.metadata["env"] for f in dataclasses.fields(PreprocessSettings) if f.type in (bool, "bool")}
    assert switches == {f"{PREFIX}NORMALIZE_LOUDNESS"}
    for variable in names - switches:
        assert any(unit in docs[variable] for unit in units), variable
