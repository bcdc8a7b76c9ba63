"""Wrap a gRPC method handler's behaviour whatever its streaming kind.

Server interceptors (metrics, tracing) replace the behaviour of a handler and must rebuild the handler
of the same kind with the same (de)serializers; this is that rebuilding, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

#: Health checking and reflection: open to every caller and left out of metrics and traces (probes
#: would drown the services' own RPCs).
INFRASTRUCTURE_METHOD_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
Wrap = Callable[[Behavior], Behavior]

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def wrap_handler(handler: grpc.RpcMethodHandler, *, unary: Wrap, streaming: Wrap) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour wrapped by ``unary`` (one response) or ``streaming`` (a stream)."""
    for attr, make, streams in _KINDS:
        behavior = getattr(handler, attr)
        if behavior is not None:
            return make(
                (streaming if streams else unary)(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
