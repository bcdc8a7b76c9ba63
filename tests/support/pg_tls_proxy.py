"""TLS in front of a PostgreSQL built without it (the embedded one): PostgreSQL's own negotiation.

A client that wants TLS sends an SSLRequest; the proxy answers ``S``, completes the TLS handshake with
its certificate and then relays the decrypted protocol to the real server on loopback. To the client
it is a PostgreSQL server serving TLS, so certificate and host name checks run exactly as against one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator

#: PostgreSQL's SSLRequest code (1234 << 16 | 5679).
SSL_REQUEST = 80877103


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(context: ssl.SSLContext, upstream_host: str, upstream_port: int) -> AsyncIterator[int]:
    """Serve TLS on a free loopback port (yielded) in front of ``upstream``."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(8)
            _, code = struct.unpack("!ii", first)
            if code != SSL_REQUEST:
                writer.close()  # this server speaks TLS only
                return
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(context)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            writer.close()  # a client that refused our certificate ends up here
            return
        up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(spawn, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
