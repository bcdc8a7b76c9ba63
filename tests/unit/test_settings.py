"""Settings are typed, validated, and name the variable when wrong."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from escriba.common.grpc_server import ServerSettings
from escriba.common.settings import SettingsError, at_least, load, setting


@dataclass(frozen=True)
class Example:
    threads: int = setting("ESCRIBA_EXAMPLE_THREADS", 2, "threads", check=at_least(1))
    ratio: float = setting("ESCRIBA_EXAMPLE_RATIO", 0.5, "ratio")
    enabled: bool = setting("ESCRIBA_EXAMPLE_ENABLED", False, "flag")
    mode: str = setting("ESCRIBA_EXAMPLE_MODE", "a", "mode", choices=("a", "b"))
    table: tuple[tuple[float, int], ...] = setting("ESCRIBA_EXAMPLE_TABLE", ((60.0, 4),), "table")
    names: tuple[str, ...] = setting("ESCRIBA_EXAMPLE_NAMES", (), "names")
    optional: int | None = setting("ESCRIBA_EXAMPLE_OPTIONAL", None, "optional")


def test_defaults_and_parsing() -> None:
    assert load(Example, {}) == Example()
    got = load(
        Example,
        {
            "ESCRIBA_EXAMPLE_THREADS": "8",
            "ESCRIBA_EXAMPLE_RATIO": "1.5",
            "ESCRIBA_EXAMPLE_ENABLED": "yes",
            "ESCRIBA_EXAMPLE_MODE": "b",
            "ESCRIBA_EXAMPLE_TABLE": "600:8, 60:16 ,inf:2",
            "ESCRIBA_EXAMPLE_NAMES": "x, y",
            "ESCRIBA_EXAMPLE_OPTIONAL": "3",
        },
    )
    assert got.threads == 8 and got.ratio == 1.5 and got.enabled and got.mode == "b"
    assert got.table == ((60.0, 16), (600.0, 8), (float("inf"), 2))
    assert got.names == ("x", "y") and got.optional == 3


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("ESCRIBA_EXAMPLE_THREADS", "many", "cannot parse"),
        ("ESCRIBA_EXAMPLE_THREADS", "0", ">= 1"),
        ("ESCRIBA_EXAMPLE_RATIO", "nan", "NaN"),
        ("ESCRIBA_EXAMPLE_ENABLED", "maybe", "expected one of"),
        ("ESCRIBA_EXAMPLE_MODE", "c", "must be one of"),
        ("ESCRIBA_EXAMPLE_TABLE", "60=4", "KEY:VALUE"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(Example, {variable: value})
    assert err.value.variable == variable
    assert str(err.value).startswith(variable)
    assert fragment in str(err.value)


def test_server_settings_validate_port() -> None:
    with pytest.raises(SettingsError, match="ESCRIBA_GRPC_PORT"):
        load(ServerSettings, {"ESCRIBA_GRPC_PORT": "70000"})
