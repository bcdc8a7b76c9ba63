"""TLS for every gRPC server and client, and the gate in front of the internal stage services.

One flag (``ESCRIBA_AUTH_ENABLED``) turns caller checks on; certificates are separate settings because a
cluster may terminate TLS in a mesh instead. Key material is only ever read from files, which the chart
mounts from Secrets, so no secret travels through the environment or shows up in ``escriba settings``.

Stage services are not for end users: with checks on, they answer only peers whose client certificate
the CA verified (mTLS) or callers that present the service token. TaskService authenticates its callers
itself (:mod:`escriba.gateway.auth`), because it must know *who* is calling, not only that the caller
belongs to the platform. Health and reflection stay open so kubelet probes and grpcurl keep working.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from escriba.common.errors import PermanentError
from escriba.common.rpc_handlers import INFRASTRUCTURE_METHOD_PREFIXES
from escriba.common.settings import SettingsError, at_least, between, load, setting, settings_class

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
#: Shorter secrets can be guessed online; generated tokens are far longer.
MIN_TOKEN_CHARS = 16


class AuthenticationError(PermanentError):
    """The caller presented no credentials, or credentials this server does not accept."""

    reason = "unauthenticated"
    grpc_code = "UNAUTHENTICATED"


class PermissionDeniedError(PermanentError):
    """The caller is authenticated but may not do this."""

    reason = "permission_denied"
    grpc_code = "PERMISSION_DENIED"


@settings_class
@dataclass(frozen=True)
class SecuritySettings:
    tls_cert_file: str = setting(
        "ESCRIBA_TLS_CERT_FILE", "", "PEM certificate chain this gRPC server presents (empty: plaintext)"
    )
    tls_key_file: str = setting("ESCRIBA_TLS_KEY_FILE", "", "PEM private key of ESCRIBA_TLS_CERT_FILE")
    tls_ca_file: str = setting(
        "ESCRIBA_TLS_CA_FILE",
        "",
        "PEM CA bundle of the platform: when set, clients must present a certificate it signed (mTLS),"
        " and this service's own calls trust it",
    )
    tls_client_cert_file: str = setting(
        "ESCRIBA_TLS_CLIENT_CERT_FILE",
        "",
        "PEM certificate this service presents when it calls another Escriba service (mTLS)",
    )
    tls_client_key_file: str = setting(
        "ESCRIBA_TLS_CLIENT_KEY_FILE", "", "PEM private key of ESCRIBA_TLS_CLIENT_CERT_FILE"
    )
    health_port: int = setting(
        "ESCRIBA_GRPC_HEALTH_PORT",
        0,
        "extra plaintext port serving only grpc.health.v1, for kubelet probes (they cannot speak TLS);"
        " 0: none",
        check=between(0, 65535),
    )
    auth_enabled: bool = setting(
        "ESCRIBA_AUTH_ENABLED",
        False,
        "check callers: bearer tokens on TaskService, mTLS or the service token on stage services",
    )
    auth_tokens_file: str = setting(
        "ESCRIBA_AUTH_TOKENS_FILE",
        "",
        "file of static TaskService tokens, one `TOKEN:OWNER` a line (or a JSON object token -> owner)",
    )
    auth_tokens_reload_s: float = setting(
        "ESCRIBA_AUTH_TOKENS_RELOAD_S",
        10.0,
        "seconds between checks of ESCRIBA_AUTH_TOKENS_FILE for changes (a rotated Secret); a changed"
        " file that does not parse is refused and the tokens in force stay; 0 = read at start-up only",
        check=at_least(0),
    )
    jwt_public_key_file: str = setting(
        "ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE",
        "",
        "PEM public key (RSA, EC or Ed25519) that verifies JWT bearer tokens",
    )
    jwt_secret_file: str = setting(
        "ESCRIBA_AUTH_JWT_SECRET_FILE", "", "HMAC secret (32 bytes or more) that verifies HS256/384/512 JWTs"
    )
    jwt_issuer: str = setting("ESCRIBA_AUTH_JWT_ISSUER", "", "required `iss` of JWTs (empty: not checked)")
    jwt_audience: str = setting(
        "ESCRIBA_AUTH_JWT_AUDIENCE", "", "required `aud` of JWTs (empty: tokens must carry none)"
    )
    jwt_owner_claim: str = setting(
        "ESCRIBA_AUTH_JWT_OWNER_CLAIM", "sub", "JWT claim naming the owner of the caller's tasks"
    )
    jwt_leeway_s: float = setting(
        "ESCRIBA_AUTH_JWT_LEEWAY_S",
        30.0,
        "clock skew tolerated on JWT `exp`/`nbf`/`iat`, seconds",
        check=between(0, 600),
    )
    service_token_file: str = setting(
        "ESCRIBA_SERVICE_TOKEN_FILE",
        "",
        "file holding the token stage services accept from platform callers without a client certificate",
    )
    platform_identities: tuple[str, ...] = setting(
        "ESCRIBA_TLS_PLATFORM_IDENTITIES",
        (),
        "client certificate names (DNS SAN or common name), comma-separated, that stage services accept"
        " as platform callers; empty: any certificate ESCRIBA_TLS_CA_FILE signed (set it when end users'"
        " certificates come from the same CA)",
    )

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def mtls(self) -> bool:
        return bool(self.tls_ca_file)

    def validate(self) -> SecuritySettings:
        """Cross-field rules a single check cannot express; the first broken one names its variable."""
        pairs = (
            ("ESCRIBA_TLS_CERT_FILE", self.tls_cert_file, "ESCRIBA_TLS_KEY_FILE", self.tls_key_file),
            (
                "ESCRIBA_TLS_CLIENT_CERT_FILE",
                self.tls_client_cert_file,
                "ESCRIBA_TLS_CLIENT_KEY_FILE",
                self.tls_client_key_file,
            ),
        )
        for cert_var, cert, key_var, key in pairs:
            if bool(cert) != bool(key):
                missing = key_var if cert else cert_var
                other = cert_var if cert else key_var
                raise SettingsError(missing, f"is required when {other} is set")
        if self.tls_ca_file and not self.tls_cert_file:
            raise SettingsError("ESCRIBA_TLS_CERT_FILE", "is required when ESCRIBA_TLS_CA_FILE is set (mTLS)")
        if self.jwt_public_key_file and self.jwt_secret_file:
            raise SettingsError(
                "ESCRIBA_AUTH_JWT_SECRET_FILE", "set either it or ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE, not both"
            )
        if not self.jwt_owner_claim.strip():
            raise SettingsError("ESCRIBA_AUTH_JWT_OWNER_CLAIM", "must name a claim")
        return self

    @classmethod
    def from_env(cls) -> SecuritySettings:
        return load(cls).validate()


# Files ------------------------------------------------------------------------------------------


def read_secret(variable: str, path: str) -> bytes:
    """The bytes of a mounted Secret; an unreadable file fails start-up naming its variable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(variable, f"cannot read {path}: {exc.strerror or exc}") from exc


def read_token(variable: str, path: str) -> str:
    """A token file's single token (Secrets often end with a newline)."""
    try:
        token = read_secret(variable, path).decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise SettingsError(variable, f"{path} is not UTF-8 text") from exc
    if len(token) < MIN_TOKEN_CHARS:
        raise SettingsError(variable, f"the token in {path} is shorter than {MIN_TOKEN_CHARS} characters")
    return token


# Credentials ------------------------------------------------------------------------------------


def server_credentials(settings: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS (mTLS with a CA) for a server, or ``None`` for plaintext."""
    if not settings.tls:
        return None
    pair = (
        read_secret("ESCRIBA_TLS_KEY_FILE", settings.tls_key_file),
        read_secret("ESCRIBA_TLS_CERT_FILE", settings.tls_cert_file),
    )
    ca = read_secret("ESCRIBA_TLS_CA_FILE", settings.tls_ca_file) if settings.mtls else None
    # gRPC can request a client certificate only together with requiring it, so a CA means mTLS for all.
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS for a client: trust ``ca_file`` (system roots when ``None``), present a certificate if given."""
    if bool(cert_file) != bool(key_file):
        raise CredentialsFileError("a client certificate needs its key, and a key its certificate")
    ca = _read_credentials(ca_file, "CA bundle")
    cert = _read_credentials(cert_file, "client certificate")
    key = _read_credentials(key_file, "client key")
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class CredentialsFileError(PermanentError):
    """A client's CA, certificate or key file cannot be used."""

    reason = "bad_credentials_file"


def _read_credentials(path: str | Path | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CredentialsFileError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def client_credentials(settings: SecuritySettings) -> grpc.ChannelCredentials:
    """What this service uses to call another Escriba service: the platform CA and its own certificate."""
    return channel_credentials(
        settings.tls_ca_file or None,
        settings.tls_client_cert_file or None,
        settings.tls_client_key_file or None,
    )


def service_metadata(settings: SecuritySettings) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the service token, when this service has one."""
    if not settings.service_token_file:
        return ()
    return bearer_metadata(read_token("ESCRIBA_SERVICE_TOKEN_FILE", settings.service_token_file))


def open_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[Any] | None = None,
) -> grpc.aio.Channel:
    """A TLS channel with ``credentials``, a plaintext one without."""
    extra = list(interceptors) if interceptors else None
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=list(options), interceptors=extra)
    return grpc.aio.secure_channel(address, credentials, options=list(options), interceptors=extra)


# Binding ----------------------------------------------------------------------------------------


def bind(server: grpc.aio.Server, address: str, settings: SecuritySettings) -> int:
    """Add the listening port (TLS when configured); 0 when the address cannot be bound."""
    credentials = server_credentials(settings)
    if credentials is None:
        if settings.auth_enabled:
            log.warning("caller checks are on but gRPC is plaintext: tokens cross the network in clear")
        port: int = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    return port


async def start_health_server(
    health: health_aio.HealthServicer, host: str, settings: SecuritySettings
) -> grpc.aio.Server | None:
    """The plaintext health-only port, when configured: same health state as the main port."""
    if not settings.health_port:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"{host}:{settings.health_port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind the health port {address}")
    await server.start()
    return server


# Bearer tokens ----------------------------------------------------------------------------------


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION, f"Bearer {token}"),)


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer ...`` entry, if there is one."""
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def token_digest(token: str) -> bytes:
    """Tokens are compared as digests: equal length, so ``compare_digest`` leaks nothing, not even length."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def digest_matches(presented: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(presented, expected)


# The stage services' gate -----------------------------------------------------------------------


def is_verified_peer(context: grpc.aio.ServicerContext) -> bool:
    """True when the caller presented a client certificate the server verified against its CA."""
    auth = context.auth_context()
    return auth.get("transport_security_type") == [b"ssl"] and bool(auth.get("x509_pem_cert"))


def peer_names(context: grpc.aio.ServicerContext) -> set[str]:
    """The names a verified client certificate gives its holder: DNS SANs and the common name."""
    auth = context.auth_context()
    names = [*auth.get("x509_subject_alternative_name", ()), *auth.get("x509_common_name", ())]
    return {n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names}


class ServiceAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Let only platform peers reach ``services``: a verified client certificate or the service token."""

    def __init__(
        self, services: Iterable[str], service_token: str | None, identities: Iterable[str] = ()
    ) -> None:
        self._prefixes = tuple(f"/{name}/" for name in services)
        self._token = token_digest(service_token) if service_token else None
        #: Certificate names accepted as the platform; empty: any certificate the CA signed.
        self._identities = frozenset(identities)

    def guards(self, method: str) -> bool:
        return method.startswith(self._prefixes) and not method.startswith(INFRASTRUCTURE_METHOD_PREFIXES)

    def _token_ok(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        token = bearer_token(metadata)
        return (
            self._token is not None and token is not None and digest_matches(token_digest(token), self._token)
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not self.guards(details.method):
            return handler
        if self._token_ok(details.invocation_metadata):
            return handler
        # The peer's certificate is only visible from the call's context, inside the handler.
        return guard_handler(handler, self._require_platform_peer)

    async def _require_platform_peer(self, context: grpc.aio.ServicerContext) -> None:
        if not is_verified_peer(context):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "unauthenticated: stage services accept only platform callers"
                " (a client certificate or the service token)",
            )
        if self._identities and not (peer_names(context) & self._identities):
            # Signed by the CA, but not one of the platform's certificates (an end user's, say).
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "permission denied: this client certificate is not one of the platform's",
            )


Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def guard_handler(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """The same handler, running ``check`` (which aborts the call) before the method's own code."""
    serdes = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_checked_unary(handler.unary_unary, check), **serdes)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_checked_unary(handler.stream_unary, check), **serdes)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_checked_stream(handler.unary_stream, check), **serdes)
    return grpc.stream_stream_rpc_method_handler(_checked_stream(handler.stream_stream, check), **serdes)


def _checked_unary(behavior: Callable[..., Any], check: Check) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        return await behavior(request, context)

    return wrapper


def _checked_stream(behavior: Callable[..., Any], check: Check) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        result = behavior(request, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:  # a coroutine that writes with context.write()
            await result

    return wrapper


def server_interceptors(
    components: Iterable[Any], settings: SecuritySettings
) -> list[grpc.aio.ServerInterceptor]:
    """The gate for every service of ``components`` that does not authenticate its callers itself."""
    if not settings.auth_enabled:
        return []
    guarded = [
        name
        for component in components
        if not getattr(component, "authenticates_callers", False)
        for name in component.service_names
    ]
    if not guarded:
        return []
    token = (
        read_token("ESCRIBA_SERVICE_TOKEN_FILE", settings.service_token_file)
        if settings.service_token_file
        else None
    )
    if token is None and not settings.mtls:
        raise SettingsError(
            "ESCRIBA_SERVICE_TOKEN_FILE",
            "is required when ESCRIBA_AUTH_ENABLED is true and ESCRIBA_TLS_CA_FILE is empty"
            f" (nothing could call {', '.join(guarded)})",
        )
    return [ServiceAuthInterceptor(guarded, token, settings.platform_identities)]
