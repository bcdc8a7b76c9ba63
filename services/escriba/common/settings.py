"""Typed settings read once from ``ESCRIBA_*`` environment variables.

Each service declares a frozen dataclass whose fields carry their variable name, a doc line (with the
unit) and an optional check. :func:`load` reads them all at start-up and fails fast with a
:class:`SettingsError` naming the variable, so a typo in a Helm value or a shell export is reported
before anything starts rather than as a confusing failure an hour later. The registry behind
:func:`all_settings_classes` lets the README table and the chart tests enumerate every variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_REGISTRY: list[type[Any]] = []

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


Check = Callable[[Any], str | None]


def setting(
    env: str,
    default: Any,
    doc: str,
    *,
    check: Check | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare a settings field bound to the environment variable ``env``."""
    if not env.startswith("ESCRIBA_"):
        raise ValueError(f"setting {env} must use the ESCRIBA_ prefix")
    metadata = {"env": env, "doc": doc, "check": check, "choices": choices}
    if isinstance(default, list | dict | tuple):
        frozen = default

        return dataclasses.field(default_factory=lambda: frozen, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_class(cls: type[T]) -> type[T]:
    """Register a settings dataclass (apply after ``@dataclass(frozen=True)``)."""
    _REGISTRY.append(cls)
    return cls


def all_settings_classes() -> list[type[Any]]:
    return list(_REGISTRY)


def env_variables() -> dict[str, str]:
    """Every ``ESCRIBA_*`` variable of every registered settings class, with its doc line."""
    out: dict[str, str] = {}
    for cls in _REGISTRY:
        for f in dataclasses.fields(cls):
            if "env" in f.metadata:
                out[f.metadata["env"]] = f.metadata["doc"]
    return out


def describe() -> list[tuple[str, str, str]]:
    """(variable, default as text, doc) for every registered setting, sorted by variable."""
    rows: list[tuple[str, str, str]] = []
    for cls in _REGISTRY:
        for f in dataclasses.fields(cls):
            if "env" not in f.metadata:
                continue
            if f.default is not dataclasses.MISSING:
                default: Any = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            rows.append((f.metadata["env"], _format_default(default), f.metadata["doc"]))
    return sorted(set(rows))


def _format_default(value: Any) -> str:
    if value is None:
        return "(required)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):
            return ",".join(f"{k:g}:{v}" for k, v in value)
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# Checks -----------------------------------------------------------------------------------------


def at_least(minimum: float) -> Check:
    return lambda v: None if v >= minimum else f"must be >= {minimum}, got {v}"


def between(low: float, high: float) -> Check:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}, got {v}"


def positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


# Parsing ----------------------------------------------------------------------------------------


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}, got {raw!r}")


def _parse_float(raw: str) -> float:
    value = float(raw)
    if math.isnan(value):
        raise ValueError("NaN is not a valid value")
    return value


def _parse_int_map(raw: str) -> tuple[tuple[float, int], ...]:
    """Parse ``"60:16,600:8,inf:4"`` into ((60.0, 16), (600.0, 8), (inf, 4))."""
    pairs: list[tuple[float, int]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"expected KEY:VALUE pairs separated by commas, got {item!r}")
        pairs.append((float(key), int(value)))
    if not pairs:
        raise ValueError("expected at least one KEY:VALUE pair")
    return tuple(sorted(pairs))


def _parser_for(tp: Any) -> Callable[[str], Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        inner_parse = _parser_for(inner)
        return lambda raw: None if raw.strip() == "" else inner_parse(raw)
    if tp is bool:
        return _parse_bool
    if tp is int:
        return lambda raw: int(raw.strip())
    if tp is float:
        return _parse_float
    if tp is str:
        return lambda raw: raw
    if origin is tuple and args and args[0] is str:
        return lambda raw: tuple(s.strip() for s in raw.split(",") if s.strip())
    if origin is tuple and args and typing.get_origin(args[0]) is tuple:
        return _parse_int_map
    raise TypeError(f"unsupported settings type {tp!r}")


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment; raise :class:`SettingsError` naming the bad variable."""
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata.get("env")
        if name is None:
            continue
        if name in env:
            raw = env[name]
            try:
                value = _parser_for(hints[f.name])(raw)
            except (ValueError, TypeError) as exc:
                raise SettingsError(name, f"cannot parse {raw!r}: {exc}") from exc
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise SettingsError(name, "is required but not set")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise SettingsError(name, f"must be one of {', '.join(choices)}; got {value!r}")
        check = f.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise SettingsError(name, problem)
        values[f.name] = value
    return cls(**values)


def secret_file_text(variable: str, path: str) -> str:
    """The text of a mounted Secret named by a ``*_FILE`` setting, without the newline Secrets often
    end with; an unreadable or empty file fails start-up naming the variable (never the content)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise SettingsError(variable, f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8").strip("\r\n")
    except UnicodeDecodeError as exc:
        raise SettingsError(variable, f"{path} is not UTF-8 text") from exc
    if not text:
        raise SettingsError(variable, f"{path} is empty")
    return text


def resolve_secret_file(
    obj: Any, field_name: str, variable: str, file_field: str, file_variable: str
) -> None:
    """Fill the secret field ``field_name`` of a frozen settings object from its ``*_FILE`` twin:
    credentials mount as files (not environment variables, which leak into `ps e`, crash dumps and
    child processes). Setting both is refused (the same value twice is what ``dataclasses.replace``
    of a loaded object passes, and is fine)."""
    path = getattr(obj, file_field)
    if not path:
        return
    text = secret_file_text(file_variable, path)
    if getattr(obj, field_name) not in ("", text):
        raise SettingsError(file_variable, f"set {variable} or {file_variable}, not both")
    object.__setattr__(obj, field_name, text)
