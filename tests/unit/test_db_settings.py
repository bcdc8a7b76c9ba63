"""Database settings fail fast and name the variable."""

from __future__ import annotations

import pytest

from escriba.common.settings import SettingsError, load
from escriba.db.settings import DatabaseSettings


def test_defaults() -> None:
    settings = load(DatabaseSettings, {})
    assert settings.url == "" and settings.schema == "public"
    assert settings.pool_min_size <= settings.pool_max_size


def test_values_are_parsed() -> None:
    settings = load(
        DatabaseSettings,
        {
            "ESCRIBA_DATABASE_URL": "postgresql://escriba:secret@db:5432/escriba",
            "ESCRIBA_DATABASE_SCHEMA": "tenant_7",
            "ESCRIBA_DATABASE_POOL_MAX_SIZE": "20",
            "ESCRIBA_DATABASE_COMMAND_TIMEOUT_S": "2.5",
        },
    )
    assert settings.url.startswith("postgresql://") and settings.schema == "tenant_7"
    assert settings.pool_max_size == 20 and settings.command_timeout_s == 2.5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ESCRIBA_DATABASE_URL", "mysql://db/escriba"),
        ("ESCRIBA_DATABASE_SCHEMA", "Public"),
        ("ESCRIBA_DATABASE_SCHEMA", "tasks; DROP TABLE x"),
        ("ESCRIBA_DATABASE_SCHEMA", "x" * 64),
        ("ESCRIBA_DATABASE_SCHEMA", ""),
        ("ESCRIBA_DATABASE_POOL_MAX_SIZE", "0"),
        ("ESCRIBA_DATABASE_COMMAND_TIMEOUT_S", "0"),
        ("ESCRIBA_DATABASE_CONNECT_ATTEMPTS", "0"),
        ("ESCRIBA_DATABASE_CONNECT_BACKOFF_S", "-1"),
        ("ESCRIBA_DATABASE_POOL_MIN_SIZE", "11"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(DatabaseSettings, {variable: value})
    assert err.value.variable == variable
