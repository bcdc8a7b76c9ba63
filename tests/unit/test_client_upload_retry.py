"""Which refused uploads the client retries: only those Escriba's own code did not send."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import Metadata

from escriba.client import _transport_refusal
from escriba.common.grpc_status import REASON_METADATA

pytestmark = pytest.mark.timeout(10)


def error(code: grpc.StatusCode, reason: str | None = None) -> grpc.aio.AioRpcError:
    trailing = Metadata((REASON_METADATA, reason)) if reason else Metadata()
    return grpc.aio.AioRpcError(code, Metadata(), trailing, details="refused")


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL]
)
def test_a_refusal_from_the_transport_is_retried(code: grpc.StatusCode) -> None:
    assert _transport_refusal(error(code))


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "upload_too_large"),  # retrying would send it all again
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_limit"),
        (grpc.StatusCode.UNAVAILABLE, "enqueue_failed"),
        (grpc.StatusCode.INVALID_ARGUMENT, None),
        (grpc.StatusCode.UNAUTHENTICATED, None),
    ],
)
def test_escribas_own_refusals_and_other_codes_are_not(code: grpc.StatusCode, reason: str | None) -> None:
    assert not _transport_refusal(error(code, reason))
