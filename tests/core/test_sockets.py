"""``readable_now``: what the pooled database connections and the SDK's kept-alive HTTP
connections ask before reuse (has the peer closed it?), for any descriptor number."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from shipyard.core.sockets import readable_now


def test_readable_now_tells_quiet_data_and_closed() -> None:
    a, b = socket.socketpair()
    try:
        assert not readable_now(a)
        b.send(b"x")
        assert readable_now(a) and readable_now(a.fileno())
        a.recv(1)
        b.close()
        assert readable_now(a)  # the end-of-file is waiting
    finally:
        a.close()


def test_a_descriptor_above_1024_works() -> None:
    """``select.select`` refuses these; a busy server has them."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 2000:
        pytest.skip(f"the open-files limit ({soft}) is too low to get a descriptor above 1024")
    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), 1500)
    try:
        assert not readable_now(high)
        b.send(b"x")
        assert readable_now(high)
    finally:
        os.close(high)
        a.close()
        b.close()
