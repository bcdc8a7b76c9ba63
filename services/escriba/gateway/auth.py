"""Who is calling: the owner every task belongs to.

With authentication off (the local default) every caller is the configured default owner. With it on,
a caller sends ``authorization: Bearer <token>``: either a static token from a mounted Secret, mapped
to its owner, or a JWT signed by the configured key whose owner claim (``sub`` by default) names the
owner. Servicers only ever ask ``owner(context)``, so every RPC is scoped by the same answer.

A refused caller learns only a short reason (missing, invalid or expired token); which check failed
(signature, issuer, audience...) is logged here, never sent back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from escriba.common.security import (
    MIN_TOKEN_CHARS,
    AuthenticationError,
    PermissionDeniedError,
    SecuritySettings,
    bearer_token,
    digest_matches,
    read_secret,
    token_digest,
)
from escriba.common.settings import SettingsError

log = logging.getLogger(__name__)

TOKENS_VARIABLE = "ESCRIBA_AUTH_TOKENS_FILE"
MIN_RSA_BITS = 2048
#: RFC 7518 3.2: an HMAC key at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}


class Authenticator(Protocol):
    """Who is calling, from a gRPC call's metadata or from an HTTP request's bearer token."""

    def owner(self, context: grpc.aio.ServicerContext) -> str: ...

    def owner_of(self, token: str | None) -> str: ...


class AnonymousAuthenticator:
    def __init__(self, owner: str) -> None:
        self._owner = owner

    def owner(self, context: grpc.aio.ServicerContext) -> str:
        return self._owner

    def owner_of(self, token: str | None) -> str:
        return self._owner


# Static tokens ----------------------------------------------------------------------------------


class StaticTokens:
    """Tokens mapped to owners, matched in constant time over the whole table."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._entries = [(token_digest(token), owner) for token, owner in tokens.items()]

    def __len__(self) -> int:
        return len(self._entries)

    def owner(self, token: str) -> str | None:
        presented = token_digest(token)
        found: str | None = None
        for digest, owner in self._entries:  # no early exit: every lookup costs the same
            if digest_matches(presented, digest):
                found = owner
        return found

    @classmethod
    def parse(cls, text: str) -> StaticTokens:
        """``TOKEN:OWNER`` lines (``#`` comments, blank lines) or a JSON object; ValueError says where."""
        stripped = text.strip()
        pairs: list[tuple[str, str, str]] = []  # (where, token, owner)
        if stripped.startswith("{"):
            data = json.loads(stripped)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object of token -> owner")
            for number, (token, owner) in enumerate(data.items(), start=1):
                if not isinstance(owner, str):
                    raise ValueError(f"entry {number}: the owner must be a string")
                pairs.append((f"entry {number}", token, owner.strip()))
        else:
            for number, line in enumerate(text.splitlines(), start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                token, sep, owner = line.partition(":")
                if not sep:
                    raise ValueError(f"line {number}: expected TOKEN:OWNER")
                pairs.append((f"line {number}", token.strip(), owner.strip()))
        tokens: dict[str, str] = {}
        for where, token, owner in pairs:
            # Messages never quote a token: they end up in logs.
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters")
            if not owner:
                raise ValueError(f"{where}: no owner after the token")
            if tokens.get(token, owner) != owner:
                raise ValueError(f"{where}: the same token is given to two owners")
            tokens[token] = owner
        if not tokens:
            raise ValueError("no tokens")
        return cls(tokens)

    @classmethod
    def from_file(cls, path: str) -> StaticTokens:
        raw = read_secret(TOKENS_VARIABLE, path)
        try:
            return cls.parse(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SettingsError(TOKENS_VARIABLE, f"{path}: {exc}") from exc


class FileWatch:
    """Whether a mounted Secret's file changed, asked at most every ``interval_s``.

    Kubernetes updates a mounted Secret by swapping a symlink, so the file's identity (device, inode,
    size, modification time) is what is compared. A file gone for a moment (mid-swap) is unchanged.
    """

    def __init__(self, path: str, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._interval_s = interval_s
        self._clock = clock
        self._identity = self._stat()
        self._checked = clock()

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def changed(self) -> bool:
        """True once per change (the caller re-reads the file, or logs why it could not)."""
        now = self._clock()
        if self._interval_s <= 0 or now - self._checked < self._interval_s:
            return False
        self._checked = now
        identity = self._stat()
        if identity is None or identity == self._identity:
            return False
        self._identity = identity  # a broken new file is refused once, not on every check
        return True


class ReloadingTokens:
    """The static tokens of a file that may change while the gateway runs (a rotated Secret).

    A changed file that does not parse is refused (logged) and the tokens in force stay: a
    half-written or broken Secret must not lock every caller out.
    """

    def __init__(self, path: str, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._watch = FileWatch(path, interval_s, clock=clock)
        self._tokens = StaticTokens.from_file(path)

    def __len__(self) -> int:
        return len(self._tokens)

    def owner(self, token: str) -> str | None:
        if self._watch.changed():
            try:
                self._tokens = StaticTokens.from_file(self._path)
                log.info("tokens file reloaded", extra={"tokens": len(self._tokens)})
            except SettingsError as exc:
                log.error("the changed tokens file was refused; the previous tokens stay: %s", exc)
        return self._tokens.owner(token)


# JWT --------------------------------------------------------------------------------------------


class JwtVerifier:
    """Verify a JWT's signature, expiry, issuer and audience; its owner claim names the owner."""

    def __init__(
        self,
        key: Any,
        algorithms: list[str],
        *,
        owner_claim: str = "sub",
        issuer: str = "",
        audience: str = "",
        leeway_s: float = 30.0,
    ) -> None:
        self._key = key
        self._algorithms = algorithms
        self._owner_claim = owner_claim
        self._issuer = issuer or None
        self._audience = audience or None
        self._leeway_s = leeway_s
        required = ["exp"] + (["iss"] if issuer else []) + (["aud"] if audience else [])
        self._options: dict[str, Any] = {
            "require": required,
            # Without a configured audience a token that names one is meant for someone else.
            "verify_aud": True,
            "enforce_minimum_key_length": True,
        }

    @property
    def algorithms(self) -> list[str]:
        return list(self._algorithms)

    def owner(self, token: str) -> str:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options=self._options,  # type: ignore[arg-type]
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("the token has expired", reason="token_expired") from exc
        except jwt.PyJWTError as exc:
            log.info("JWT refused", extra={"detail": str(exc)})
            raise AuthenticationError("the token is not valid here", reason="invalid_token") from exc
        owner = claims.get(self._owner_claim)
        if not isinstance(owner, str) or not owner.strip():
            raise PermissionDeniedError("the token names no owner", reason="no_owner")
        return owner

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> JwtVerifier | None:
        options: dict[str, Any] = {
            "owner_claim": settings.jwt_owner_claim,
            "issuer": settings.jwt_issuer,
            "audience": settings.jwt_audience,
            "leeway_s": settings.jwt_leeway_s,
        }
        if settings.jwt_public_key_file:
            variable = "ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE"
            pem = read_secret(variable, settings.jwt_public_key_file)
            try:
                key, algorithms = public_key_algorithms(pem)
            except ValueError as exc:
                raise SettingsError(variable, f"{settings.jwt_public_key_file}: {exc}") from exc
            return cls(key, algorithms, **options)
        if settings.jwt_secret_file:
            variable = "ESCRIBA_AUTH_JWT_SECRET_FILE"
            secret = read_secret(variable, settings.jwt_secret_file).rstrip(b"\r\n")
            algorithms = [name for name, size in _HMAC_MIN_BYTES.items() if len(secret) >= size]
            if not algorithms:
                raise SettingsError(variable, f"the secret is shorter than {_HMAC_MIN_BYTES['HS256']} bytes")
            return cls(secret, algorithms, **options)
        return None


class ReloadingJwtVerifier:
    """The JWT key of a mounted Secret that may be rotated while the gateway runs, re-read like the
    tokens file (``ESCRIBA_AUTH_TOKENS_RELOAD_S``); a changed key that does not load is refused and
    the key in force stays."""

    def __init__(self, settings: SecuritySettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        verifier = JwtVerifier.from_settings(settings)
        if verifier is None:
            raise ValueError("no JWT key is configured")
        self._settings = settings
        self._verifier = verifier
        path = settings.jwt_public_key_file or settings.jwt_secret_file
        self._watch = FileWatch(path, settings.auth_tokens_reload_s, clock=clock)

    @property
    def algorithms(self) -> list[str]:
        return self._verifier.algorithms

    def owner(self, token: str) -> str:
        if self._watch.changed():
            try:
                fresh = JwtVerifier.from_settings(self._settings)
            except SettingsError as exc:
                log.error("the changed JWT key was refused; the previous key stays: %s", exc)
            else:
                if fresh is not None:
                    self._verifier = fresh
                    log.info("JWT key reloaded", extra={"algorithms": fresh.algorithms})
        return self._verifier.owner(token)


def public_key_algorithms(pem: bytes) -> tuple[Any, list[str]]:
    """The key, and the only algorithms it may verify (never HMAC: no algorithm confusion)."""
    key = serialization.load_pem_public_key(pem)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA key of {key.key_size} bits is below {MIN_RSA_BITS}")
        return key, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"the curve {key.curve.name} has no JWT algorithm")
        return key, [algorithm]
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, ["EdDSA"]
    raise ValueError(f"{type(key).__name__} keys cannot verify JWTs")


# The gateway's authenticator --------------------------------------------------------------------


class TokenAuthenticator:
    """Bearer tokens: a static token first, then a JWT."""

    def __init__(
        self,
        tokens: StaticTokens | ReloadingTokens | None = None,
        verifier: JwtVerifier | ReloadingJwtVerifier | None = None,
    ) -> None:
        if tokens is None and verifier is None:
            raise ValueError("a token authenticator needs static tokens or a JWT key")
        self._tokens = tokens
        self._verifier = verifier

    def owner(self, context: grpc.aio.ServicerContext) -> str:
        return self.owner_of(bearer_token(context.invocation_metadata()))

    def owner_of(self, token: str | None) -> str:
        if token is None:
            raise AuthenticationError("send `authorization: Bearer <token>`", reason="missing_credentials")
        if self._tokens is not None:
            owner = self._tokens.owner(token)
            if owner is not None:
                return owner
        if self._verifier is not None and token.count(".") == 2:
            return self._verifier.owner(token)
        raise AuthenticationError("the token is not valid here", reason="invalid_token")

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> TokenAuthenticator:
        tokens = (
            ReloadingTokens(settings.auth_tokens_file, settings.auth_tokens_reload_s)
            if settings.auth_tokens_file
            else None
        )
        verifier = (
            ReloadingJwtVerifier(settings)
            if settings.jwt_public_key_file or settings.jwt_secret_file
            else None
        )
        if tokens is None and verifier is None:
            raise SettingsError(
                TOKENS_VARIABLE,
                "ESCRIBA_AUTH_ENABLED is true but neither it nor ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE"
                " / ESCRIBA_AUTH_JWT_SECRET_FILE is set: no caller could be accepted",
            )
        return cls(tokens, verifier)


def authenticator(settings: SecuritySettings, default_owner: str) -> Authenticator:
    """Tokens when caller checks are on; otherwise everyone is ``default_owner``."""
    if settings.auth_enabled:
        return TokenAuthenticator.from_settings(settings)
    return AnonymousAuthenticator(default_owner)
