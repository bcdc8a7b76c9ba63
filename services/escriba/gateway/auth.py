"""Who is calling: the owner every task belongs to.

With authentication off (the local default) every caller is the configured default owner. Bearer
tokens and mTLS identities plug in here, so servicers only ever ask ``owner(context)``.
"""

from __future__ import annotations

from typing import Protocol

import grpc


class Authenticator(Protocol):
    def owner(self, context: grpc.aio.ServicerContext) -> str: ...


class AnonymousAuthenticator:
    def __init__(self, owner: str) -> None:
        self._owner = owner

    def owner(self, context: grpc.aio.ServicerContext) -> str:
        return self._owner
