"""The client reaches a TLS server by another address than the name on its certificate.

A port-forward (``localhost:50051``), an IP address or a load balancer's name is not what the server's
certificate names; ``server_name`` (``--tls-server-name``) says which name to verify instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from escriba import cli
from escriba.client import EscribaClient
from escriba.common.grpc_server import make_ready, start_server
from escriba.common.security import SecuritySettings
from escriba.common.settings import load
from escriba.local.secure import LocalSecurity, create_local_security
from tests.support.grpc_servers import TEST_SERVER_SETTINGS

pytestmark = pytest.mark.timeout(60)

NAME = "escriba.internal.test"
NO_TASK = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, LocalSecurity]]:
    """A TLS gRPC server (health only) whose certificate names NAME and nothing else."""
    pki = create_local_security(tmp_path / "pki", hosts=(NAME,))
    security = load(
        SecuritySettings,
        {"ESCRIBA_TLS_CERT_FILE": str(pki.server.cert), "ESCRIBA_TLS_KEY_FILE": str(pki.server.key)},
    ).validate()
    running = await start_server([], TEST_SERVER_SETTINGS, port=0, security=security)
    try:
        await make_ready(running)
        yield f"127.0.0.1:{running.port}", pki
    finally:
        await running.shutdown()


async def call_status(client: EscribaClient) -> grpc.StatusCode:
    """The status of one call: UNIMPLEMENTED means the TLS handshake succeeded (no TaskService here)."""
    async with client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.get(NO_TASK)
    return caught.value.code()


async def test_the_certificates_name_is_verified_instead_of_the_address(
    tls_server: tuple[str, LocalSecurity],
) -> None:
    address, pki = tls_server
    assert await call_status(EscribaClient(address, ca_file=pki.ca, server_name=NAME)) == (
        grpc.StatusCode.UNIMPLEMENTED
    )


async def test_without_the_name_or_with_a_wrong_one_the_server_is_not_trusted(
    tls_server: tuple[str, LocalSecurity],
) -> None:
    address, pki = tls_server
    assert await call_status(EscribaClient(address, ca_file=pki.ca)) == grpc.StatusCode.UNAVAILABLE
    wrong = EscribaClient(address, ca_file=pki.ca, server_name="other.internal.test")
    assert await call_status(wrong) == grpc.StatusCode.UNAVAILABLE


async def test_the_cli_takes_the_name_and_a_client_certificate(
    tls_server: tuple[str, LocalSecurity], capsys: pytest.CaptureFixture[str]
) -> None:
    address, pki = tls_server
    base = ["tasks", "get", NO_TASK, "--server", address, "--ca", str(pki.ca)]
    assert await asyncio.to_thread(cli.main, base) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    named = [*base, "--tls-server-name", NAME, "--cert", str(pki.client.cert), "--key", str(pki.client.key)]
    assert await asyncio.to_thread(cli.main, named) == 1
    assert "UNIMPLEMENTED" in capsys.readouterr().err
