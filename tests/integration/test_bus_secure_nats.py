"""Services reach a NATS that platform teams secure: account JWTs with a .creds file, TLS from a
private CA, and client certificates. Real nats-servers configured that way (tests/support/nats_secure)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from escriba.bus import BusUnavailableError, connect, delete_topology, ensure_topology, publish_job
from escriba.bus.names import Stage
from escriba.common.settings import SettingsError
from tests.support.nats_fixtures import bus_settings
from tests.support.nats_secure import SecuredNats, secured_nats

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def jwt_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    with secured_nats(tmp_path_factory.mktemp("jwt-nats")) as server:
        yield server


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    with secured_nats(tmp_path_factory.mktemp("tls-nats"), tls=True, verify_clients=True) as server:
        yield server


async def use_jetstream(url: str, **settings: Any) -> None:
    """Connect as a service does, create the topology, queue a job, clean up."""
    config = bus_settings(url, **settings)
    nc = await connect(config, name="secure-test")
    try:
        js = nc.jetstream(timeout=config.request_timeout_s)
        await ensure_topology(js, config.names, config)
        stage = Stage.TRANSCRIPTION
        ack = await publish_job(
            js, config.names.job_subject(stage), b"job", task_id="t1", stage=stage.value, audio_duration_s=3
        )
        assert ack.stream == config.names.jobs_stream
        await delete_topology(js, config.names)
    finally:
        await nc.close()


async def test_a_creds_file_authenticates_against_account_jwts(jwt_nats: SecuredNats) -> None:
    await use_jetstream(jwt_nats.url, creds_file=str(jwt_nats.creds_file))


async def test_without_credentials_the_server_refuses(jwt_nats: SecuredNats) -> None:
    with pytest.raises(BusUnavailableError, match="Authorization Violation"):
        await use_jetstream(jwt_nats.url, startup_timeout_s=2.0, max_reconnect=0)


async def test_an_unreadable_creds_file_fails_naming_its_variable(
    jwt_nats: SecuredNats, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError) as caught:
        await use_jetstream(jwt_nats.url, creds_file=str(tmp_path / "missing.creds"))
    assert caught.value.variable == "ESCRIBA_NATS_CREDS_FILE"


async def test_tls_from_a_private_ca_with_a_client_certificate(tls_nats: SecuredNats) -> None:
    pki = tls_nats.pki
    assert pki is not None
    await use_jetstream(
        tls_nats.url,
        creds_file=str(tls_nats.creds_file),
        tls_ca_file=str(pki.ca),
        tls_cert_file=str(pki.client.cert),
        tls_key_file=str(pki.client.key),
    )


@pytest.mark.parametrize(
    "left_out",
    [
        ("tls_ca_file",),  # the system CAs do not know the private one: the server is not trusted
        ("tls_cert_file", "tls_key_file"),  # the server verifies clients: no certificate, no entry
    ],
    ids=["no-private-ca", "no-client-certificate"],
)
async def test_without_the_private_ca_or_the_client_certificate_tls_fails(
    tls_nats: SecuredNats, left_out: tuple[str, ...]
) -> None:
    pki = tls_nats.pki
    assert pki is not None
    files = {"tls_ca_file": pki.ca, "tls_cert_file": pki.client.cert, "tls_key_file": pki.client.key}
    tls = {name: str(path) for name, path in files.items() if name not in left_out}
    with pytest.raises(BusUnavailableError):
        await use_jetstream(
            tls_nats.url,
            creds_file=str(tls_nats.creds_file),
            startup_timeout_s=2.0,
            max_reconnect=0,
            **tls,
        )


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(SettingsError) as caught:
        bus_settings("tls://127.0.0.1:4222", tls_cert_file="/x/tls.crt")
    assert caught.value.variable == "ESCRIBA_NATS_TLS_KEY_FILE"


async def test_a_file_that_is_not_a_creds_file_fails_instead_of_freezing(
    jwt_nats: SecuredNats, tmp_path: Path
) -> None:
    wrong = tmp_path / "nats.creds"
    wrong.write_text("user: escriba\npassword: secret\n")  # the wrong Secret key mounted
    with pytest.raises(SettingsError, match=r"not a NATS \.creds file") as caught:
        await use_jetstream(jwt_nats.url, creds_file=str(wrong))
    assert caught.value.variable == "ESCRIBA_NATS_CREDS_FILE"
