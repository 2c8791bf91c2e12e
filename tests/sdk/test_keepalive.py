"""``sdk.keepalive``: the standard-library connections the HTTP backend uses for per-run calls."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shipyard.sdk.keepalive import ConnectFailed, KeepAlivePool, usable_for


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise

    def do_POST(self) -> None:  # noqa: N802 (the standard library's spelling)
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.seen.append((self.path, body, self.headers["x-test"]))  # type: ignore[attr-defined]
        answer = b'{"ok": true}'
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        if self.server.hang_up:  # type: ignore[attr-defined]
            # What a server's keep-alive timeout does: it closes the idle connection, without
            # having said "connection: close" in the answer.
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen = []  # type: ignore[attr-defined]
    srv.hang_up = False  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _pool(srv: ThreadingHTTPServer) -> KeepAlivePool:
    host, port = srv.server_address[:2]
    return KeepAlivePool(f"http://{host}:{port}/api/v1", {"x-test": "sdk"}, timeout_s=5)


def test_requests_share_one_connection(http_server: ThreadingHTTPServer) -> None:
    pool = _pool(http_server)
    for i in range(3):
        assert pool.request("POST", f"/runs/{i}", b"{}", {}) == (201, b'{"ok": true}')
    assert [p for p, _, _ in http_server.seen] == [
        "/api/v1/runs/0",
        "/api/v1/runs/1",
        "/api/v1/runs/2",
    ]
    assert {h for _, _, h in http_server.seen} == {"sdk"}  # the pool's headers on every call
    assert len(pool._idle) == 1
    pool.close()


def test_a_connection_the_server_closed_while_idle_is_not_reused(
    http_server: ThreadingHTTPServer,
) -> None:
    """A POST is not retried by the SDK once sent: sending it down a connection the server
    already closed would fail a call that never reached the server."""
    http_server.hang_up = True  # type: ignore[attr-defined]
    pool = _pool(http_server)
    assert pool.request("POST", "/runs", b'{"n": 1}', {})[0] == 201
    stale = pool._idle[0]
    # Wait until the server's close has reached this end of the socket.
    assert stale.sock is not None
    stale.sock.settimeout(5)
    assert stale.sock.recv(1, socket.MSG_PEEK) == b""
    assert pool.request("POST", "/runs", b'{"n": 2}', {})[0] == 201
    assert [b for _, b, _ in http_server.seen] == [b'{"n": 1}', b'{"n": 2}']
    pool.close()


def test_a_refused_connection_is_told_apart() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    pool = KeepAlivePool(f"http://127.0.0.1:{port}", {}, timeout_s=5)
    with pytest.raises(ConnectFailed):
        pool.request("POST", "/runs", b"{}", {})


def test_only_plain_http_without_a_proxy_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert usable_for("http://127.0.0.1:5000")
    assert not usable_for("https://shipyard.example.com")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.com:3128")
    assert not usable_for("http://shipyard.example.com")
    monkeypatch.setenv("NO_PROXY", "shipyard.example.com")
    assert usable_for("http://shipyard.example.com")
