"""Serving HTTP without Nagle's delay: shared by the API server and the endpoint runtime."""

from __future__ import annotations

import contextlib
import socket


def nodelay_http_protocol():  # type: ignore[no-untyped-def]
    """httptools' protocol with Nagle's algorithm off on each connection.

    A small response on a kept-alive connection otherwise waits for the client's delayed ACK
    (about 40 ms) before it leaves: uvicorn sets TCP_NODELAY only in some set-ups.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class NoDelayHttpTools(HttpToolsProtocol):
        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)

    return NoDelayHttpTools
