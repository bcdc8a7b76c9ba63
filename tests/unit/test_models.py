"""The model catalogue: what ESCRIBA_MODELS may say, how jobs are routed, what a request may ask."""

from __future__ import annotations

import pytest

from escriba.common.settings import SettingsError, load
from escriba.models import (
    DEFAULT_CATALOGUE,
    ModelCatalogue,
    ModelSettings,
    TranslationUnsupportedError,
    UnknownModelError,
    UnsupportedLanguageRequestError,
    parse_catalogue,
)

pytestmark = pytest.mark.timeout(30)

TWO = (
    '[{"name": "tiny.en", "source": "bundled"},'
    ' {"name": "base", "source": "package:base", "languages": ["en", "ja"]}]'
)


def catalogue(raw: str = TWO) -> ModelCatalogue:
    return load(ModelSettings, {"ESCRIBA_MODELS": raw}).models()


def test_the_default_is_the_bundled_english_model() -> None:
    (entry,) = parse_catalogue(DEFAULT_CATALOGUE)
    assert entry.name == "tiny.en" and entry.english_only
    assert load(ModelSettings, {}).models().default is not None


def test_the_default_model_keeps_the_plain_route_others_get_their_token() -> None:
    models = catalogue()
    assert models.route("") is None and models.route("tiny.en") is None
    assert models.route("base") == "base"
    base = models.find("base")
    assert base is not None and base.multilingual
    assert parse_catalogue('[{"name": "large-v3.en", "source": "/m"}]')[0].token == "large-v3_en"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("not json", "not JSON"),
        ("[]", "non-empty"),
        ('[{"source": "bundled"}]', "with a name"),
        ('[{"name": "a b"}]', "is not a model name"),
        ('[{"name": "a", "colour": "red"}]', "unknown keys colour"),
        ('[{"name": "a"}, {"name": "a"}]', "named twice"),
        ('[{"name": "a.b"}, {"name": "a_b"}]', "named twice"),
        ('[{"name": "a", "multilingual": "yes"}]', "true or false"),
    ],
)
def test_a_bad_catalogue_fails_naming_the_variable(raw: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(ModelSettings, {"ESCRIBA_MODELS": raw})
    assert caught.value.variable == "ESCRIBA_MODELS" and problem in str(caught.value)


def test_an_unknown_model_is_refused_naming_the_served_ones() -> None:
    with pytest.raises(UnknownModelError, match=r"models: tiny\.en, base"):
        catalogue().check_request("large-v3", language="", task="")


def test_an_english_only_model_refuses_other_languages_and_translation() -> None:
    models = catalogue()
    assert models.check_request("", language="en", task="").name == "tiny.en"
    assert models.check_request("", language="EN-us", task="transcribe").name == "tiny.en"
    with pytest.raises(UnsupportedLanguageRequestError, match="English-only"):
        models.check_request("tiny.en", language="ja", task="")
    with pytest.raises(TranslationUnsupportedError, match="multilingual models here: base"):
        models.check_request("", language="", task="translate")


def test_a_multilingual_model_serves_its_allowed_languages_and_translates() -> None:
    models = catalogue()
    assert models.check_request("base", language="ja", task="translate").name == "base"
    with pytest.raises(UnsupportedLanguageRequestError, match="serves en, ja here"):
        models.check_request("base", language="de", task="")


def test_a_served_entry_brings_its_source_device_and_batch_tables() -> None:
    from escriba.transcription.server import served_settings
    from escriba.transcription.settings import TranscriptionSettings

    models = catalogue(
        '[{"name": "tiny.en", "source": "bundled"},'
        ' {"name": "base", "source": "package:base", "device": "cpu", "batch_sizes_cpu": "60:2,inf:4"}]'
    )
    settings, entry = served_settings(
        load(TranscriptionSettings, {"ESCRIBA_TRANSCRIPTION_MODEL": "base"}), models
    )
    assert entry is not None and entry.name == "base"
    assert settings.model == "package:base" and settings.device == "cpu"
    assert settings.batch_sizes_cpu == ((60.0, 2), (float("inf"), 4))
    outside, none = served_settings(
        load(TranscriptionSettings, {"ESCRIBA_TRANSCRIPTION_MODEL": "/m/x"}), models
    )
    assert none is None and outside.model == "/m/x"  # a directory outside the catalogue, as given
    broken = catalogue('[{"name": "a", "batch_sizes_cpu": "soon"}]')
    with pytest.raises(SettingsError) as caught:
        served_settings(load(TranscriptionSettings, {}), broken)
    assert caught.value.variable == "ESCRIBA_MODELS" and "model a" in str(caught.value)
