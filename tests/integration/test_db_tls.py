"""What the chart sets for PostgreSQL with a CA (PGSSLMODE=verify-full, PGSSLROOTCERT) does what it says,
against PostgreSQL over TLS (the embedded server behind a TLS proxy speaking PostgreSQL's negotiation:
its build has no TLS): the services connect when the certificate is signed by that CA and names the
host they dial, and refuse a certificate for another name or from another CA. ``require`` (refused by
the chart with a CA) accepts the certificate for another name."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from escriba.common.errors import EscribaError
from escriba.db.pool import create_pool
from escriba.db.settings import DatabaseSettings
from escriba.local.postgres import DATABASE, SUPERUSER, EmbeddedPostgres
from escriba.local.secure import issue, make_ca, pem_cert
from tests.support.pg_tls_proxy import tls_proxy

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class TlsPostgres:
    port: int
    ca_file: Path
    other_ca_file: Path

    def url(self, host: str) -> str:
        return f"postgresql://{SUPERUSER}@{host}:{self.port}/{DATABASE}"


@pytest.fixture
async def tls_postgres(postgres_server: EmbeddedPostgres, tmp_path: Path) -> AsyncIterator[TlsPostgres]:
    ca_key, ca = make_ca("escriba test database CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pem_cert(ca))
    other_ca_file = tmp_path / "other-ca.pem"
    other_ca_file.write_bytes(pem_cert(make_ca("someone else's CA")[1]))
    # The certificate names 127.0.0.1 only: dialling "localhost" is dialling a name it does not carry.
    identity = issue(ca_key, ca, "127.0.0.1", hosts=["127.0.0.1"], directory=tmp_path, name="server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(identity.cert, identity.key)
    async with tls_proxy(context, postgres_server.host, postgres_server.port) as port:
        yield TlsPostgres(port, ca_file, other_ca_file)


async def tls_in_use(url: str) -> bool:
    """Connect and query; the proxy closes every connection that does not ask for TLS."""
    settings = DatabaseSettings(url=url, connect_attempts=1, pool_min_size=1, pool_max_size=1)
    pool = await create_pool(settings)
    try:
        return bool(await pool.fetchval("SELECT 1") == 1)
    finally:
        await pool.close()


def libpq_env(monkeypatch: pytest.MonkeyPatch, mode: str, ca_file: Path) -> None:
    """PGSSLMODE and PGSSLROOTCERT, as the chart sets them (asyncpg reads libpq's variables)."""
    monkeypatch.setenv("PGSSLMODE", mode)
    monkeypatch.setenv("PGSSLROOTCERT", str(ca_file))


async def test_verify_full_connects_to_the_server_its_ca_signed_for_that_host(
    tls_postgres: TlsPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    libpq_env(monkeypatch, "verify-full", tls_postgres.ca_file)
    assert await tls_in_use(tls_postgres.url("127.0.0.1"))


async def test_verify_full_refuses_a_certificate_for_another_name(
    tls_postgres: TlsPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    libpq_env(monkeypatch, "verify-full", tls_postgres.ca_file)
    with pytest.raises(EscribaError, match=r"(?i)certificate|hostname|match"):
        await tls_in_use(tls_postgres.url("localhost"))


async def test_verify_full_refuses_a_certificate_from_another_ca(
    tls_postgres: TlsPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    libpq_env(monkeypatch, "verify-full", tls_postgres.other_ca_file)
    with pytest.raises(EscribaError, match=r"(?i)certificate"):
        await tls_in_use(tls_postgres.url("127.0.0.1"))


async def test_require_does_not_check_the_host_name(
    tls_postgres: TlsPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the chart refuses require (and prefer, allow) when a CA is given: with the CA, libpq's
    require checks the signature only, so a certificate for any name passes."""
    libpq_env(monkeypatch, "require", tls_postgres.ca_file)
    assert await tls_in_use(tls_postgres.url("localhost"))
