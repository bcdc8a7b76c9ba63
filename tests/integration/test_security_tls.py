"""TLS, mTLS and the stage services' gate, over real gRPC with real certificates on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from escriba.common.grpc_server import Component, RunningServer, make_ready, start_server
from escriba.common.security import (
    SecuritySettings,
    bearer_metadata,
    channel_credentials,
    client_credentials,
    open_channel,
    service_metadata,
)
from escriba.common.settings import SettingsError, load
from escriba.correction.server import CorrectionComponent
from escriba.correction.settings import CorrectionSettings
from escriba.local.secure import Identity, LocalSecurity, create_local_security, issue, make_ca, pem_cert
from escriba.preprocess.server import PreprocessComponent
from escriba.preprocess.settings import PreprocessSettings
from escriba.v1 import common_pb2, correction_pb2, correction_pb2_grpc, preprocess_pb2, preprocess_pb2_grpc
from tests.support.grpc_servers import TEST_SERVER_SETTINGS, free_port

pytestmark = pytest.mark.timeout(60)

CORRECT = correction_pb2.CorrectRequest(
    segments=[common_pb2.Segment(id=0, start_s=0.0, end_s=1.0, text=" hello   world .")]
)


@pytest.fixture
def pki(tmp_path: Path) -> LocalSecurity:
    return create_local_security(tmp_path / "pki")


@pytest.fixture
def rogue(tmp_path: Path) -> tuple[Path, Identity]:
    """A CA nobody trusts, and a client certificate it signed."""
    folder = tmp_path / "rogue"
    folder.mkdir()
    key, cert = make_ca("Escriba local CA")  # the same name as the real one: only the key differs
    ca = folder / "ca.pem"
    ca.write_bytes(pem_cert(cert))
    return ca, issue(key, cert, "intruder", hosts=(), directory=folder, name="client")


def security(**env: str) -> SecuritySettings:
    return load(SecuritySettings, env).validate()


def tls_env(pki: LocalSecurity) -> dict[str, str]:
    return {"ESCRIBA_TLS_CERT_FILE": str(pki.server.cert), "ESCRIBA_TLS_KEY_FILE": str(pki.server.key)}


@asynccontextmanager
async def served(components: Sequence[Component], settings: SecuritySettings) -> AsyncIterator[RunningServer]:
    running = await start_server(components, TEST_SERVER_SETTINGS, port=0, security=settings)
    try:
        await make_ready(running)
        yield running
    finally:
        await running.shutdown()


async def correct(
    port: int,
    credentials: grpc.ChannelCredentials | None,
    metadata: Sequence[tuple[str, str]] = (),
) -> correction_pb2.CorrectResponse:
    async with open_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = correction_pb2_grpc.CorrectionServiceStub(channel)
        response: correction_pb2.CorrectResponse = await stub.Correct(CORRECT, metadata=metadata, timeout=10)
        return response


async def refused(
    port: int, credentials: grpc.ChannelCredentials | None, metadata: Sequence[tuple[str, str]] = ()
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await correct(port, credentials, metadata)
    return info.value


async def health_status(port: int, credentials: grpc.ChannelCredentials | None, service: str = "") -> int:
    async with open_channel(f"127.0.0.1:{port}", credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        return int(reply.status)


def correction() -> CorrectionComponent:
    return CorrectionComponent(CorrectionSettings())


# TLS --------------------------------------------------------------------------------------------


async def test_tls_server_is_reached_only_by_clients_that_trust_its_ca(
    pki: LocalSecurity, rogue: tuple[Path, Identity]
) -> None:
    async with served([correction()], security(**tls_env(pki))) as running:
        response = await correct(running.port, channel_credentials(pki.ca))
        assert response.text == "Hello world."
        # A client trusting another CA, the system roots, or speaking plaintext gets nowhere.
        for credentials in (channel_credentials(rogue[0]), channel_credentials(), None):
            error = await refused(running.port, credentials)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()


async def test_plaintext_stays_the_default() -> None:
    async with served([correction()], security()) as running:
        assert (await correct(running.port, None)).text == "Hello world."


# mTLS -------------------------------------------------------------------------------------------


async def test_mtls_stage_service_accepts_only_clients_with_a_certificate_from_its_ca(
    pki: LocalSecurity, rogue: tuple[Path, Identity]
) -> None:
    settings = security(**tls_env(pki), ESCRIBA_TLS_CA_FILE=str(pki.ca), ESCRIBA_AUTH_ENABLED="true")
    async with served([correction()], settings) as running:
        with_cert = channel_credentials(pki.ca, pki.client.cert, pki.client.key)
        assert (await correct(running.port, with_cert)).text == "Hello world."
        without_cert = await refused(running.port, channel_credentials(pki.ca))
        assert without_cert.code() == grpc.StatusCode.UNAVAILABLE
        wrong_ca_cert = await refused(running.port, channel_credentials(pki.ca, rogue[1].cert, rogue[1].key))
        assert wrong_ca_cert.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_port_answers_kubelet_probes_in_plaintext(pki: LocalSecurity) -> None:
    health_port = free_port()
    settings = security(
        **tls_env(pki),
        ESCRIBA_TLS_CA_FILE=str(pki.ca),
        ESCRIBA_AUTH_ENABLED="true",
        ESCRIBA_GRPC_HEALTH_PORT=str(health_port),
    )
    component = correction()
    async with served([component], settings) as running:
        serving = health_pb2.HealthCheckResponse.SERVING
        assert await health_status(health_port, None) == serving
        assert await health_status(health_port, None, component.service_names[0]) == serving
        # Only health is there: the stage service itself is not reachable through the plaintext port.
        error = await refused(health_port, None)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        await running.set_serving(False)
        assert await health_status(health_port, None) == health_pb2.HealthCheckResponse.NOT_SERVING


# The service token ------------------------------------------------------------------------------


def token_env(pki: LocalSecurity) -> dict[str, str]:
    return {
        **tls_env(pki),
        "ESCRIBA_AUTH_ENABLED": "true",
        "ESCRIBA_SERVICE_TOKEN_FILE": str(pki.service_token_file),
    }


async def test_stage_service_without_mtls_requires_the_service_token(pki: LocalSecurity) -> None:
    service_token = pki.service_token_file.read_text().strip()
    trust = channel_credentials(pki.ca)
    async with served([correction()], security(**token_env(pki))) as running:
        for metadata in ((), bearer_metadata("x" * 43), bearer_metadata(pki.token("local"))):
            error = await refused(running.port, trust, metadata)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.details().startswith("unauthenticated:")
        assert (await correct(running.port, trust, bearer_metadata(service_token))).text == "Hello world."
        # A client certificate is not requested without a CA, so it does not open the door either.
        with_cert = channel_credentials(pki.ca, pki.client.cert, pki.client.key)
        assert (await refused(running.port, with_cert)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_streaming_stage_rpc_is_gated_too(pki: LocalSecurity, data_dir: Path) -> None:
    service_token = pki.service_token_file.read_text().strip()
    audio = (data_dir / "jfk.flac").read_bytes()

    async def preprocess(channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]]) -> list[str]:
        stub = preprocess_pb2_grpc.PreprocessServiceStub(channel)
        requests = [preprocess_pb2.PreprocessRequest(chunk=audio)]
        call = stub.Preprocess(iter(requests), metadata=metadata, timeout=30)
        return [r.WhichOneof("payload") or "" async for r in call]

    component = PreprocessComponent(load(PreprocessSettings, {}))
    async with (
        served([component], security(**token_env(pki))) as running,
        open_channel(f"127.0.0.1:{running.port}", channel_credentials(pki.ca)) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await preprocess(channel, ())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        kinds = await preprocess(channel, bearer_metadata(service_token))
        assert kinds[0] == "info" and set(kinds[1:]) == {"chunk"}


async def test_health_and_reflection_need_no_credentials(pki: LocalSecurity) -> None:
    component = correction()
    async with (
        served([component], security(**token_env(pki))) as running,
        open_channel(f"127.0.0.1:{running.port}", channel_credentials(pki.ca)) as channel,
    ):
        assert await health_status(running.port, channel_credentials(pki.ca)) == 1
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name async for reply in call for s in reply.list_services_response.service}
        assert component.service_names[0] in services


async def test_a_platform_service_calls_stage_services_with_its_own_settings(pki: LocalSecurity) -> None:
    """What another Escriba service uses: ESCRIBA_TLS_CLIENT_* and ESCRIBA_SERVICE_TOKEN_FILE."""
    caller = security(
        ESCRIBA_TLS_CA_FILE=str(pki.ca),
        ESCRIBA_TLS_CLIENT_CERT_FILE=str(pki.client.cert),
        ESCRIBA_TLS_CLIENT_KEY_FILE=str(pki.client.key),
        ESCRIBA_SERVICE_TOKEN_FILE=str(pki.service_token_file),
        **tls_env(pki),
    )
    mtls = security(**tls_env(pki), ESCRIBA_TLS_CA_FILE=str(pki.ca), ESCRIBA_AUTH_ENABLED="true")
    async with served([correction()], mtls) as running:
        assert (await correct(running.port, client_credentials(caller))).text == "Hello world."
    async with served([correction()], security(**token_env(pki))) as running:
        response = await correct(running.port, client_credentials(caller), service_metadata(caller))
        assert response.text == "Hello world."
    assert service_metadata(security()) == ()


# Fail fast --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ESCRIBA_TLS_CERT_FILE": "/x.pem"}, "ESCRIBA_TLS_KEY_FILE"),
        ({"ESCRIBA_TLS_CLIENT_KEY_FILE": "/k.pem"}, "ESCRIBA_TLS_CLIENT_CERT_FILE"),
        ({"ESCRIBA_TLS_CA_FILE": "/ca.pem"}, "ESCRIBA_TLS_CERT_FILE"),
        (
            {"ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE": "/p.pem", "ESCRIBA_AUTH_JWT_SECRET_FILE": "/s"},
            "ESCRIBA_AUTH_JWT_SECRET_FILE",
        ),
        ({"ESCRIBA_GRPC_HEALTH_PORT": "70000"}, "ESCRIBA_GRPC_HEALTH_PORT"),
    ],
)
def test_inconsistent_settings_name_their_variable(env: Mapping[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(SecuritySettings, env).validate()
    assert info.value.variable == variable


async def test_server_start_fails_fast_on_missing_files_and_tokens(
    pki: LocalSecurity, tmp_path: Path
) -> None:
    cases = [
        (
            security(
                ESCRIBA_TLS_CERT_FILE=str(tmp_path / "none.pem"), ESCRIBA_TLS_KEY_FILE=str(pki.server.key)
            ),
            "ESCRIBA_TLS_CERT_FILE",
        ),
        # Checks on, no CA: without a service token nobody could call the stage service.
        (security(**tls_env(pki), ESCRIBA_AUTH_ENABLED="true"), "ESCRIBA_SERVICE_TOKEN_FILE"),
    ]
    short = tmp_path / "short-token"
    short.write_text("too-short\n")
    cases.append(
        (
            security(**tls_env(pki), ESCRIBA_AUTH_ENABLED="true", ESCRIBA_SERVICE_TOKEN_FILE=str(short)),
            "ESCRIBA_SERVICE_TOKEN_FILE",
        )
    )
    for settings, variable in cases:
        with pytest.raises(SettingsError) as info:
            await start_server([correction()], TEST_SERVER_SETTINGS, port=0, security=settings)
        assert info.value.variable == variable


async def test_platform_identity_is_the_certificate_name_not_just_the_ca(tmp_path: Path) -> None:
    """End users' certificates may come from the platform's CA: with the platform's names listed, a
    stage service refuses a certificate the CA signed for someone else."""
    key, cert = make_ca("Shared CA")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pem_cert(cert))
    server = issue(key, cert, "stage", hosts=("localhost", "127.0.0.1"), directory=tmp_path, name="server")
    platform = issue(key, cert, "escriba-gateway", hosts=(), directory=tmp_path, name="platform")
    end_user = issue(key, cert, "alice", hosts=(), directory=tmp_path, name="alice")
    env = {
        "ESCRIBA_TLS_CERT_FILE": str(server.cert),
        "ESCRIBA_TLS_KEY_FILE": str(server.key),
        "ESCRIBA_TLS_CA_FILE": str(ca),
        "ESCRIBA_AUTH_ENABLED": "true",
    }
    as_platform = channel_credentials(ca, platform.cert, platform.key)
    as_user = channel_credentials(ca, end_user.cert, end_user.key)
    async with served([correction()], security(**env)) as running:  # no names: the CA alone decides
        assert (await correct(running.port, as_user)).text == "Hello world."
    listed = security(**env, ESCRIBA_TLS_PLATFORM_IDENTITIES="escriba-gateway,escriba-operator")
    async with served([correction()], listed) as running:
        assert (await correct(running.port, as_platform)).text == "Hello world."
        error = await refused(running.port, as_user)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not one of the platform's" in (error.details() or "")
