"""Waiting for background threads that come and go (a service's coordinators)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def join_threads(
    current: Callable[[], list[threading.Thread]], timeout_s: float | None = None
) -> None:
    """Join the threads ``current()`` lists until it lists none (threads may start others while
    we wait, so it is asked again after each round), or until ``timeout_s`` has passed."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        threads = current()
        if not threads:
            return
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if deadline is not None and time.monotonic() >= deadline:
            return
