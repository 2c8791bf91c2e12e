"""Whether a socket has something to read right now, for any file descriptor number.

``select.select`` refuses descriptors at or above ``FD_SETSIZE`` (1024), which a busy server
(many endpoints, logs and connections open) can reach; ``poll`` has no such limit where it
exists (not on Windows, where ``select`` has none either).
"""

from __future__ import annotations

import select
from typing import Any


def readable_now(sock: Any) -> bool:
    """True when ``sock`` (a socket or a file descriptor) would not block on a read: data, an
    end-of-file (the peer closed it) or an error is waiting."""
    fd = sock if isinstance(sock, int) else sock.fileno()
    if hasattr(select, "poll"):
        p = select.poll()
        p.register(fd, select.POLLIN | select.POLLPRI)
        return bool(p.poll(0))
    return bool(select.select([fd], [], [], 0)[0])
