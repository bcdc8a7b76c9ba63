"""Credentials mount as files: the database URL (ESCRIBA_DATABASE_URL_FILE) and the NATS user, password
and token (ESCRIBA_NATS_*_FILE) are read from them, against real servers that require them; a bad file
fails start-up naming its variable, never showing what it holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from escriba.bus import BusUnavailableError, NatsSettings, connect
from escriba.common.settings import SettingsError, load
from escriba.db.pool import create_pool
from escriba.db.settings import DatabaseSettings
from escriba.local.nats import EmbeddedNats

pytestmark = pytest.mark.timeout(60)

PASSWORD = "s3cr3t-Pa55word-for-nats"
TOKEN = "a-nats-token-of-some-length-0123456789"


def secret(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text + "\n")  # Secrets made with `kubectl create secret --from-file` often end so
    return str(path)


@pytest.fixture(scope="module")
def password_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(
        tmp_path_factory.mktemp("nats-pw"), extra_args=("--user", "escriba", "--pass", PASSWORD)
    )
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def token_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats-token"), extra_args=("--auth", TOKEN))
    server.start()
    yield server
    server.close()


async def test_the_nats_user_and_password_come_from_files(
    password_nats: EmbeddedNats, tmp_path: Path
) -> None:
    env = {
        "ESCRIBA_NATS_URL": password_nats.url,
        "ESCRIBA_NATS_USER_FILE": secret(tmp_path, "user", "escriba"),
        "ESCRIBA_NATS_PASSWORD_FILE": secret(tmp_path, "password", PASSWORD),
        "ESCRIBA_NATS_STARTUP_TIMEOUT_S": "5",
    }
    settings = load(NatsSettings, env)
    assert settings.password == PASSWORD and settings.user == "escriba"
    nc = await connect(settings)
    await nc.close()
    # The same file with another password is refused by the server.
    env["ESCRIBA_NATS_PASSWORD_FILE"] = secret(tmp_path, "wrong", "not-the-password")
    env["ESCRIBA_NATS_STARTUP_TIMEOUT_S"] = "2"
    with pytest.raises(BusUnavailableError, match="uthoriz"):
        await connect(load(NatsSettings, env))


async def test_the_nats_token_comes_from_a_file(token_nats: EmbeddedNats, tmp_path: Path) -> None:
    env = {"ESCRIBA_NATS_URL": token_nats.url, "ESCRIBA_NATS_TOKEN_FILE": secret(tmp_path, "token", TOKEN)}
    nc = await connect(load(NatsSettings, env))
    await nc.close()


async def test_the_database_url_comes_from_a_file(postgres_dsn: str, tmp_path: Path) -> None:
    settings = load(DatabaseSettings, {"ESCRIBA_DATABASE_URL_FILE": secret(tmp_path, "url", postgres_dsn)})
    assert settings.url == postgres_dsn
    pool = await create_pool(settings)
    try:
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


def test_a_file_and_the_variable_together_are_refused(tmp_path: Path) -> None:
    env = {
        "ESCRIBA_DATABASE_URL": "postgresql://a@b/c",
        "ESCRIBA_DATABASE_URL_FILE": secret(tmp_path, "url", "postgresql://x:pw@y/z"),
    }
    with pytest.raises(SettingsError, match="ESCRIBA_DATABASE_URL_FILE: set ESCRIBA_DATABASE_URL or"):
        load(DatabaseSettings, env)
    env = {"ESCRIBA_NATS_TOKEN": TOKEN, "ESCRIBA_NATS_TOKEN_FILE": secret(tmp_path, "token", "other")}
    with pytest.raises(SettingsError, match="ESCRIBA_NATS_TOKEN_FILE"):
        load(NatsSettings, env)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("", "is empty"), ("mysql://root:hunter2@db/x", "holds no postgresql:// URL")],
)
def test_a_bad_url_file_names_its_variable_and_not_its_content(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "url"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as err:
        load(DatabaseSettings, {"ESCRIBA_DATABASE_URL_FILE": str(path)})
    assert err.value.variable == "ESCRIBA_DATABASE_URL_FILE"
    assert problem in str(err.value) and "hunter2" not in str(err.value)
