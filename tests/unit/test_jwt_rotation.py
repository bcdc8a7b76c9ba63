"""A rotated JWT key is picked up like a rotated tokens file: the new key verifies after the reload
interval, the old one stops; a broken new key is refused and the key in force stays."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from escriba.common.security import AuthenticationError, SecuritySettings
from escriba.common.settings import load
from escriba.gateway.auth import ReloadingJwtVerifier

pytestmark = pytest.mark.timeout(30)

OLD = b"an old secret that is long enough for HS256!"
NEW = b"the new secret, rotated in by the platform team, also long enough"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def token(secret: bytes, owner: str = "alice") -> str:
    return jwt.encode({"sub": owner, "exp": int(time.time()) + 600}, secret, algorithm="HS256")


def test_a_rotated_secret_is_used_after_the_interval(tmp_path: Path) -> None:
    secret = tmp_path / "jwt"
    secret.write_bytes(OLD)
    settings = load(
        SecuritySettings,
        {"ESCRIBA_AUTH_JWT_SECRET_FILE": str(secret), "ESCRIBA_AUTH_TOKENS_RELOAD_S": "10"},
    )
    clock = Clock()
    verifier = ReloadingJwtVerifier(settings, clock=clock)
    assert verifier.owner(token(OLD)) == "alice"

    secret.write_bytes(NEW)
    clock.now = 5.0  # within the interval: the old key still rules
    assert verifier.owner(token(OLD)) == "alice"
    clock.now = 11.0
    assert verifier.owner(token(NEW, "bob")) == "bob"
    with pytest.raises(AuthenticationError):
        verifier.owner(token(OLD))

    secret.write_bytes(b"short")  # a broken rotation: refused, the key in force stays
    clock.now = 22.0
    assert verifier.owner(token(NEW, "bob")) == "bob"
