"""Bounds on what one RPC, one stream and one peer may hold of a server, and readiness that says so.

A gRPC server serves at most ``ESCRIBA_GRPC_MAX_CONCURRENT_RPCS`` calls at once, and a call holds its
slot until its handler returns. Without bounds, a stream that never sends (a CreateTask that sends no
spec, a reflection stream left open) or never ends (``Health.Watch``) holds its slot forever, so a
handful of idle streams from one client made every real caller get RESOURCE_EXHAUSTED while readiness,
answered from the separate health port, stayed green. So every RPC goes through :class:`StreamGuard`:

- a client stream must send its next message within ``idle_s`` (DEADLINE_EXCEEDED otherwise);
- any streaming RPC lives at most ``max_s`` in all (a watcher reconnects; an upload this long is
  not one);
- one peer (by address, not port: a client opening many connections is still one peer) holds at
  most ``per_peer`` calls, so no single client can take every slot;
- while every slot is taken, health reports NOT_SERVING for the server's services, so Kubernetes
  stops sending new work to a replica that would refuse it.

Streams per HTTP/2 connection are bounded by the server option ``grpc.max_concurrent_streams``
(:func:`escriba.common.grpc_server.server_options`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from escriba.common.rpc_handlers import Behavior

log = logging.getLogger(__name__)

SaturationHook = Callable[[bool], Awaitable[None]]


@dataclass(frozen=True)
class StreamLimits:
    #: The server's slot count (``maximum_concurrent_rpcs``): when all are held it is saturated.
    max_rpcs: int
    #: Calls one peer address may hold at once (0: no bound).
    per_peer: int
    #: Longest wait for a client stream's next message, seconds.
    idle_s: float
    #: Longest life of a streaming RPC, seconds.
    max_s: float


def peer_address(context: grpc.aio.ServicerContext) -> str:
    """``ipv4:10.0.0.7:53122`` -> ``ipv4:10.0.0.7``; a Unix socket or unknown peer is itself."""
    peer = str(context.peer() or "")
    if peer.startswith(("ipv4:", "ipv6:")):
        host, _, port = peer.rpartition(":")
        if port.isdigit():
            return host
    return peer


class StreamGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, limits: StreamLimits, on_saturation: SaturationHook | None = None) -> None:
        self.limits = limits
        #: Told when the server becomes saturated or stops being so (set after the server exists).
        self.on_saturation = on_saturation
        self.active = 0
        self._by_peer: Counter[str] = Counter()
        self._saturated = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        for attr, make in _KINDS:
            behavior = getattr(handler, attr)
            if behavior is not None:
                wrapped = self._wrap(
                    behavior,
                    request_streaming=attr.startswith("stream_"),
                    response_streaming=attr.endswith("_stream"),
                )
                return make(
                    wrapped,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    # Slots ----------------------------------------------------------------------------------------

    async def _enter(self, context: grpc.aio.ServicerContext) -> str:
        peer = peer_address(context)
        per_peer = self.limits.per_peer
        if per_peer and self._by_peer[peer] >= per_peer:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this client already holds {per_peer} calls on this server; finish some first",
            )
        self._by_peer[peer] += 1
        self.active += 1
        await self._saturation_changed()
        return peer

    async def _leave(self, peer: str) -> None:
        self.active -= 1
        self._by_peer[peer] -= 1
        if self._by_peer[peer] <= 0:
            del self._by_peer[peer]
        await self._saturation_changed()

    async def _saturation_changed(self) -> None:
        saturated = self.active >= self.limits.max_rpcs
        if saturated == self._saturated:
            return
        self._saturated = saturated
        if saturated:
            log.warning("every RPC slot is taken: reporting NOT_SERVING", extra={"rpcs": self.active})
        else:
            log.info("RPC slots free again: serving", extra={"rpcs": self.active})
        if self.on_saturation is not None:
            await self.on_saturation(saturated)

    # Behaviours -----------------------------------------------------------------------------------

    def _wrap(self, behavior: Behavior, *, request_streaming: bool, response_streaming: bool) -> Behavior:
        limits = self.limits

        def requests_of(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return _idle_bounded(request, limits.idle_s, context) if request_streaming else request

        if not response_streaming:

            async def one_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
                peer = await self._enter(context)
                try:
                    if not request_streaming:
                        return await behavior(request, context)
                    try:
                        async with asyncio.timeout(limits.max_s):
                            return await behavior(requests_of(request, context), context)
                    except TimeoutError:
                        await _too_long(context, limits.max_s)
                finally:
                    await self._leave(peer)

            return one_response

        if inspect.iscoroutinefunction(behavior) or inspect.iscoroutinefunction(
            getattr(behavior, "__func__", None)
        ):
            # A handler that writes with ``context.write`` (the health service's Watch).

            async def writes(request: Any, context: grpc.aio.ServicerContext) -> None:
                peer = await self._enter(context)
                try:
                    async with asyncio.timeout(limits.max_s):
                        await behavior(requests_of(request, context), context)
                except TimeoutError:
                    await _too_long(context, limits.max_s)
                finally:
                    await self._leave(peer)

            return writes

        async def yields(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            peer = await self._enter(context)
            deadline = asyncio.get_running_loop().time() + limits.max_s
            responses = behavior(requests_of(request, context), context)
            try:
                while True:
                    # The bound around each wait, never across a yield: whoever resumes this generator
                    # (another task, when a cancelled RPC is closed) runs the wait in its own task.
                    try:
                        async with asyncio.timeout_at(deadline):
                            item = await anext(responses)
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        await _too_long(context, limits.max_s)
                    yield item
            finally:
                await responses.aclose()
                await self._leave(peer)

        return yields


_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


async def _idle_bounded(
    requests: AsyncIterator[Any], idle_s: float, context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    iterator = aiter(requests)
    while True:
        try:
            # In the handler's own task (no task per message), and never across the yield.
            async with asyncio.timeout(idle_s):
                item = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"the stream sent nothing for {idle_s:g} s; closing it"
            )
        yield item


async def _too_long(context: grpc.aio.ServicerContext, max_s: float) -> None:
    await context.abort(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"the stream has been open for {max_s:g} s, the longest allowed"
    )
