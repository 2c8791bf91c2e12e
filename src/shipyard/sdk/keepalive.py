"""Kept-alive HTTP/1.1 connections on the standard library, for the SDK's small JSON calls.

httpx spends about 1 ms of CPU on each small request (URL parsing and merging, cookie handling,
h11's pure-Python parser); ``http.client`` about 0.3 ms. A script that starts and ends runs in a
loop makes two such calls per run, so httpx was most of the client's share of a run's time.

Used only where httpx would do the same thing on the wire: plain ``http://`` base URLs that no
proxy setting covers (``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``). TLS and proxies stay with
httpx, which verifies certificates against its own bundle.
"""

from __future__ import annotations

import http.client
import threading
import urllib.request
from urllib.parse import urlsplit

from shipyard.core.sockets import readable_now


class ConnectFailed(Exception):
    """The connection could not be made: nothing reached the server."""


class SendFailed(Exception):
    """The request failed after it was sent, or while it was: the server may have acted on it."""


def usable_for(url: str) -> bool:
    """Whether ``url`` (a base URL) can go through ``KeepAlivePool`` with the same effect as
    through httpx: plain HTTP, with no proxy configured for its host."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    if not ("http" in proxies or "all" in proxies):
        return True
    return bool(urllib.request.proxy_bypass(parts.hostname))


class KeepAlivePool:
    """Connections to one ``http://`` base URL, reused across calls and threads (one request
    at a time on each). Thread-safe."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = headers
        self.timeout_s = timeout_s
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                # A kept-alive connection that the server closed while it sat idle (its
                # keep-alive timeout) reads as ready: its end-of-file is waiting. Reusing it
                # would fail a request that never reached the server; open a fresh one instead.
                sock = conn.sock
                if sock is not None and not readable_now(sock):
                    return conn
                conn.close()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.connect()  # sets TCP_NODELAY
        except OSError as exc:
            conn.close()
            raise ConnectFailed(f"{self.host}:{self.port}: {exc}") from exc
        return conn

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """Send one request and read its whole answer: (status, body)."""
        conn = self._take()
        try:
            conn.request(method, self.prefix + path, body=body, headers={**self.headers, **headers})
            resp = conn.getresponse()
            content = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise SendFailed(f"{type(exc).__name__}: {exc}") from exc
        if resp.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        return resp.status, content

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
