"""Throwaway credentials for a secure local stack (``escriba up --secure``, ``StackConfig(secure=True)``).

A private CA signs one server certificate (valid for the local host names) and one client certificate
for service-to-service calls; static tokens map owners to random tokens, and a service token lets
callers inside the platform reach the stage services without a certificate. Certificates are made anew
at every start (milliseconds, short-lived); tokens are kept in the data directory so scripts that use
them keep working across restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_VALIDITY = datetime.timedelta(days=30)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalSecurity:
    directory: Path
    ca: Path
    server: Identity
    client: Identity
    tokens_file: Path
    #: owner -> token
    tokens: Mapping[str, str]
    service_token_file: Path

    def token(self, owner: str) -> str:
        return self.tokens[owner]

    def environment(self) -> dict[str, str]:
        """What every service of the stack runs with (stage processes add ESCRIBA_TLS_CA_FILE)."""
        return {
            "ESCRIBA_AUTH_ENABLED": "true",
            "ESCRIBA_TLS_CERT_FILE": str(self.server.cert),
            "ESCRIBA_TLS_KEY_FILE": str(self.server.key),
            "ESCRIBA_TLS_CLIENT_CERT_FILE": str(self.client.cert),
            "ESCRIBA_TLS_CLIENT_KEY_FILE": str(self.client.key),
            "ESCRIBA_AUTH_TOKENS_FILE": str(self.tokens_file),
            "ESCRIBA_SERVICE_TOKEN_FILE": str(self.service_token_file),
        }


def create_local_security(
    directory: Path, *, owners: Iterable[str] = ("local",), hosts: Iterable[str] = LOCAL_HOSTS
) -> LocalSecurity:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    ca_key, ca_cert = make_ca("Escriba local CA")
    ca = _write(directory / "ca.pem", pem_cert(ca_cert))
    server = issue(ca_key, ca_cert, "escriba-local-server", hosts=hosts, directory=directory, name="server")
    client = issue(ca_key, ca_cert, "escriba-local-client", hosts=(), directory=directory, name="client")
    tokens_file = directory / "tokens"
    tokens = _ensure_tokens(tokens_file, owners)
    service_token_file = directory / "service-token"
    if not service_token_file.exists():
        _write(service_token_file, secrets.token_urlsafe(32).encode() + b"\n", private=True)
    return LocalSecurity(directory, ca, server, client, tokens_file, tokens, service_token_file)


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    hosts: Iterable[str],
    directory: Path,
    name: str,
) -> Identity:
    """A leaf certificate: a server one when ``hosts`` are given, a client one otherwise."""
    key = ec.generate_private_key(ec.SECP256R1())
    hosts = list(hosts)
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in dict.fromkeys(hosts)]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return Identity(
        cert=_write(directory / f"{name}.pem", pem_cert(cert)),
        key=_write(directory / f"{name}-key.pem", pem_key(key), private=True),
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _ensure_tokens(path: Path, owners: Iterable[str]) -> dict[str, str]:
    """Keep the tokens already issued; add one for each owner that has none."""
    tokens: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            token, sep, owner = line.strip().partition(":")
            if sep and not line.startswith("#"):
                tokens.setdefault(owner.strip(), token.strip())
    missing = [o for o in owners if o not in tokens]
    for owner in missing:
        tokens[owner] = secrets.token_urlsafe(32)
    if missing or not path.exists():
        lines = ["# TOKEN:OWNER (escriba up --secure)"] + [f"{t}:{o}" for o, t in tokens.items()]
        _write(path, ("\n".join(lines) + "\n").encode(), private=True)
    return tokens


def _write(path: Path, data: bytes, *, private: bool = False) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if private:
        path.chmod(0o600)  # the mode above applies only to a new file
    return path
