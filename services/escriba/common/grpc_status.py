"""Translate Escriba errors to gRPC status codes, in servicers only.

Domain code raises :mod:`escriba.common.errors`; this is the single place that decides what a client sees,
so the same failure has the same status in every service.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc

from escriba.common.errors import (
    DeadlineError,
    EscribaError,
    InvalidInputError,
    LimitExceededError,
    NotReadyError,
    PermanentError,
    TransientError,
)

log = logging.getLogger(__name__)

R = TypeVar("R")


def status_code_for(error: EscribaError) -> grpc.StatusCode:
    # Subclasses may pin their own code (e.g. not-found, permission) through a ``grpc_code`` name.
    pinned = getattr(error, "grpc_code", None)
    if isinstance(pinned, str) and hasattr(grpc.StatusCode, pinned):
        code: grpc.StatusCode = getattr(grpc.StatusCode, pinned)
        return code
    if isinstance(error, LimitExceededError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, DeadlineError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, NotReadyError | TransientError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, PermanentError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


#: Trailing metadata key naming the reason of a status Escriba itself sent.
REASON_METADATA = "escriba-reason"

#: Longest status message sent (percent-encoded UTF-8, still under 12 KiB). Details travel as trailing
#: metadata, which clients cap (16 KiB by default): a message quoting a hostile 10 MB field would
#: otherwise replace the real status with an unrelated "metadata size exceeds hard limit" error.
MAX_DETAILS_CHARS = 1000


def status_details(error: EscribaError) -> str:
    details = f"{error.reason}: {error.message}"
    if len(details) > MAX_DETAILS_CHARS:
        details = details[: MAX_DETAILS_CHARS - 1] + "…"
    return details


@asynccontextmanager
async def grpc_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Abort the RPC with the right status for an :class:`EscribaError`; log anything unexpected."""
    try:
        yield
    except EscribaError as exc:
        code = status_code_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("internal error")
        # The reason also as metadata: a refusal without it came from the transport (a server at its
        # concurrent-RPC limit, grpc core), which a client may retry; Escriba's own may not be.
        await context.abort(code, status_details(exc), trailing_metadata=((REASON_METADATA, exc.reason),))


def translate_errors(
    method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    """Decorate a unary-response servicer method so Escriba errors become their gRPC status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        async with grpc_errors(context):
            return await method(self, request, context)
        raise AssertionError("unreachable: grpc_errors aborts")  # pragma: no cover

    return wrapper


def translate_stream_errors(
    method: Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]]:
    """The same for server-streaming methods (async generators)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[R]:
        async with grpc_errors(context):
            async for item in method(self, request, context):
                yield item

    return wrapper
