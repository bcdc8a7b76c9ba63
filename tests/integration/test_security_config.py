"""Credentials read from mounted files: token files, JWT keys, and the local stack's throwaway set."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from escriba.common.security import AuthenticationError, SecuritySettings
from escriba.common.settings import SettingsError, load
from escriba.gateway.auth import (
    AnonymousAuthenticator,
    JwtVerifier,
    ReloadingTokens,
    StaticTokens,
    authenticator,
)
from escriba.local.secure import create_local_security

pytestmark = pytest.mark.timeout(60)

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"


def settings(**env: str) -> SecuritySettings:
    return load(SecuritySettings, env).validate()


def write(path: Path, data: str | bytes) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# Static token files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"# issued 2025-01\n{ALICE}:alice\n\n  {BOB} : bob  \n",
        f'{{"{ALICE}": "alice", "{BOB}": "bob"}}',
        f"{ALICE}: alice\n{BOB}: bob\n",  # YAML-looking lines read the same
        f"{ALICE}:team:alice\n{BOB}:bob\n",  # an owner may contain a colon; a token may not
    ],
)
def test_token_files_in_each_accepted_shape(tmp_path: Path, text: str) -> None:
    tokens = StaticTokens.from_file(write(tmp_path / "tokens", text))
    assert len(tokens) == 2
    assert tokens.owner(ALICE) in ("alice", "team:alice")
    assert tokens.owner(BOB) == "bob"
    assert tokens.owner(ALICE + "x") is None and tokens.owner(ALICE[:-1]) is None and tokens.owner("") is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rotated_tokens_file_is_picked_up_after_the_check_interval(tmp_path: Path) -> None:
    """As Kubernetes rotates a mounted Secret: a new file swapped in behind a symlink."""
    data = tmp_path / "..data"
    first, second = tmp_path / "v1", tmp_path / "v2"
    write(first, f"{ALICE}:alice\n")
    data.symlink_to(first)
    link = tmp_path / "tokens"
    link.symlink_to(data)
    clock = FakeClock()
    tokens = ReloadingTokens(str(link), 10.0, clock=clock)
    assert tokens.owner(ALICE) == "alice" and tokens.owner(BOB) is None

    write(second, f"{BOB}:bob\n")
    data.unlink()
    data.symlink_to(second)
    clock.now += 5
    assert tokens.owner(BOB) is None, "checked before the interval passed"
    clock.now += 5
    assert tokens.owner(BOB) == "bob" and tokens.owner(ALICE) is None, "the revoked token still works"


def test_a_broken_rotation_keeps_the_tokens_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    write(path, f"{ALICE}:alice\n")
    clock = FakeClock()
    tokens = ReloadingTokens(str(path), 1.0, clock=clock)
    write(path, "not a token line, and longer than before\n")
    clock.now += 2
    assert tokens.owner(ALICE) == "alice"
    assert "refused" in caplog.text and ALICE not in caplog.text
    path.unlink()  # gone for a moment (a symlink being swapped): keep going
    clock.now += 2
    assert tokens.owner(ALICE) == "alice"
    write(path, f"{ALICE}:alice\n{BOB}:bob\n")
    clock.now += 2
    assert tokens.owner(BOB) == "bob"


def test_zero_means_the_file_is_read_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    write(path, f"{ALICE}:alice\n")
    clock = FakeClock()
    tokens = ReloadingTokens(str(path), 0.0, clock=clock)
    write(path, f"{BOB}:bob\n")
    clock.now += 3600
    assert tokens.owner(ALICE) == "alice" and tokens.owner(BOB) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no tokens"),
        ("short:alice\n", "line 1: the token is shorter than 16"),
        (f"{ALICE}:alice\nnot a token line\n", "line 2: expected TOKEN:OWNER"),
        (f"{ALICE}:\n", "line 1: no owner"),
        (f"{ALICE}:alice\n{ALICE}:bob\n", "line 2: the same token is given to two owners"),
        ('{"unterminated": ', "Expecting value"),
        (f'{{"{ALICE}": null}}', "entry 1: the owner must be a string"),
    ],
)
def test_bad_token_files_fail_fast_without_quoting_tokens(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        StaticTokens.from_file(write(tmp_path / "tokens", text))
    assert info.value.variable == "ESCRIBA_AUTH_TOKENS_FILE"
    assert problem in str(info.value)
    assert ALICE not in str(info.value)


def test_a_missing_token_file_names_its_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        authenticator(
            settings(ESCRIBA_AUTH_ENABLED="true", ESCRIBA_AUTH_TOKENS_FILE=str(tmp_path / "nope")),
            "anonymous",
        )
    assert info.value.variable == "ESCRIBA_AUTH_TOKENS_FILE"


def test_checks_on_without_any_credential_source_fail_fast() -> None:
    with pytest.raises(SettingsError) as info:
        authenticator(settings(ESCRIBA_AUTH_ENABLED="true"), "anonymous")
    assert info.value.variable == "ESCRIBA_AUTH_TOKENS_FILE"


def test_checks_off_means_the_default_owner() -> None:
    assert isinstance(authenticator(settings(), "anonymous"), AnonymousAuthenticator)


# JWT keys ---------------------------------------------------------------------------------------


def test_jwt_algorithms_follow_the_key(tmp_path: Path) -> None:
    """A key verifies only its own family, so a token cannot pick a weaker or confused algorithm."""
    cases: list[tuple[Any, list[str]]] = [
        (ec.generate_private_key(ec.SECP256R1()), ["ES256"]),
        (ec.generate_private_key(ec.SECP384R1()), ["ES384"]),
        (ed25519.Ed25519PrivateKey.generate(), ["EdDSA"]),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), ["RS256", "RS384", "RS512"]),
    ]
    for key, expected in cases:
        path = write(tmp_path / "key.pem", public_pem(key))
        verifier = JwtVerifier.from_settings(settings(ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE=path))
        assert verifier is not None
        assert verifier.algorithms[: len(expected)] == expected
        algorithm = expected[0]
        token = jwt.encode({"sub": "erin", "exp": int(time.time()) + 60}, key, algorithm=algorithm)
        assert verifier.owner(token) == "erin"


def test_weak_or_wrong_jwt_keys_fail_fast(tmp_path: Path) -> None:
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for env, variable, problem in [
        (
            {"ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE": write(tmp_path / "rsa.pem", public_pem(small_rsa))},
            "ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE",
            "below 2048",
        ),
        (
            {"ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE": write(tmp_path / "garbage.pem", "not a key")},
            "ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE",
            "garbage.pem",
        ),
        (
            {"ESCRIBA_AUTH_JWT_SECRET_FILE": write(tmp_path / "secret", "short secret\n")},
            "ESCRIBA_AUTH_JWT_SECRET_FILE",
            "shorter than 32 bytes",
        ),
    ]:
        with pytest.raises(SettingsError) as info:
            JwtVerifier.from_settings(settings(**env))
        assert info.value.variable == variable and problem in str(info.value)


def test_hmac_algorithms_need_a_long_enough_secret(tmp_path: Path) -> None:
    secret = "k" * 40
    verifier = JwtVerifier.from_settings(settings(ESCRIBA_AUTH_JWT_SECRET_FILE=write(tmp_path / "s", secret)))
    assert verifier is not None and verifier.algorithms == ["HS256"]
    claims = {"sub": "erin", "exp": int(time.time()) + 60}
    assert verifier.owner(jwt.encode(claims, secret, algorithm="HS256")) == "erin"
    # HS512 wants 64 bytes: a 40-byte secret never verifies it (and PyJWT would only warn).
    with pytest.raises(AuthenticationError):
        verifier.owner(jwt.encode(claims, secret + "x" * 30, algorithm="HS512"))


def test_the_owner_claim_is_configurable(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = write(tmp_path / "key.pem", public_pem(key))
    verifier = JwtVerifier.from_settings(
        settings(ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE=path, ESCRIBA_AUTH_JWT_OWNER_CLAIM="tenant")
    )
    assert verifier is not None
    token = jwt.encode({"sub": "u1", "tenant": "acme", "exp": int(time.time()) + 60}, key, algorithm="ES256")
    assert verifier.owner(token) == "acme"


# The local stack's credentials ------------------------------------------------------------------


def test_local_credentials_are_private_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    first = create_local_security(tmp_path / "secure", owners=("local",))
    first_ca = first.ca.read_bytes()
    assert stat.S_IMODE((tmp_path / "secure").stat().st_mode) == 0o700
    for secret in (first.server.key, first.client.key, first.tokens_file, first.service_token_file):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    again = create_local_security(tmp_path / "secure", owners=("local", "second"))
    assert again.token("local") == first.token("local")
    assert again.token("second") != first.token("local")
    assert again.ca.read_bytes() != first_ca  # certificates are made anew
    tokens = StaticTokens.from_file(str(again.tokens_file))
    assert tokens.owner(again.token("local")) == "local" and tokens.owner(again.token("second")) == "second"
