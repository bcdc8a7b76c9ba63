"""nats-server configured as platform teams run it: decentralized auth (operator, account and user JWTs,
a ``.creds`` file) and TLS signed by a private CA. Everything is generated here, offline.

The JWTs are what ``nsc`` writes: an ``ed25519-nkey`` signed header and claims, ``jti`` the base32
SHA-256 of the claims. The server trusts the operator and preloads the accounts (``resolver: MEMORY``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from escriba.local.nats import EmbeddedNats
from escriba.local.secure import LocalSecurity, create_local_security

_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True}
_ACCOUNT_LIMITS = {**_UNLIMITED, "conn": -1, "leaf": -1}
_JETSTREAM_LIMITS = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _new_key(prefix: int) -> Any:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _jwt(issuer: Any, subject: str, name: str, claims: Mapping[str, Any]) -> str:
    body: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**claims, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    signed = f"{header}.{_b64(json.dumps(body).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def creds_text(user_jwt: str, seed: str) -> str:
    """A ``.creds`` file as ``nsc`` writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


@dataclass(frozen=True)
class SecuredNats:
    """A running server, the user's ``.creds`` (file and text) and, with TLS, the CA and certificates."""

    server: EmbeddedNats
    creds_file: Path
    pki: LocalSecurity | None

    @property
    def creds(self) -> str:
        return self.creds_file.read_text()

    @property
    def url(self) -> str:
        scheme = "tls" if self.pki is not None else "nats"
        return f"{scheme}://127.0.0.1:{self.server.port}"


@contextmanager
def secured_nats(
    directory: Path, *, tls: bool = False, verify_clients: bool = False
) -> Iterator[SecuredNats]:
    """JWT accounts always; ``tls`` adds a server certificate from a private CA, ``verify_clients``
    requires client certificates from it as well (mTLS)."""
    directory.mkdir(parents=True, exist_ok=True)
    operator = _new_key(nkeys.PREFIX_BYTE_OPERATOR)
    account = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    system = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _new_key(nkeys.PREFIX_BYTE_USER)
    operator_jwt = _jwt(operator, operator.public_key.decode(), "escriba-test", {"type": "operator"})
    account_jwt = _jwt(
        operator,
        account.public_key.decode(),
        "escriba",
        {"type": "account", "limits": {**_ACCOUNT_LIMITS, **_JETSTREAM_LIMITS}},
    )
    system_jwt = _jwt(
        operator, system.public_key.decode(), "SYS", {"type": "account", "limits": _ACCOUNT_LIMITS}
    )
    user_jwt = _jwt(
        account,
        user.public_key.decode(),
        "escriba-service",
        {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
    )
    creds_file = directory / "user.creds"
    creds_file.write_text(creds_text(user_jwt, user.seed.decode()))
    lines = [
        f'operator: "{operator_jwt}"',
        f"system_account: {system.public_key.decode()}",
        "resolver: MEMORY",
        "resolver_preload: {",
        f'  {account.public_key.decode()}: "{account_jwt}"',
        f'  {system.public_key.decode()}: "{system_jwt}"',
        "}",
    ]
    pki = None
    if tls:
        pki = create_local_security(directory / "pki")
        lines += [
            "tls: {",
            f'  cert_file: "{pki.server.cert}"',
            f'  key_file: "{pki.server.key}"',
            *([f'  ca_file: "{pki.ca}"', "  verify: true"] if verify_clients else []),
            "}",
        ]
    config = directory / "server.conf"
    config.write_text("\n".join(lines) + "\n")
    server = EmbeddedNats(directory / "store", extra_args=["-c", str(config)])
    server.start()
    try:
        yield SecuredNats(server, creds_file, pki)
    finally:
        server.close()
