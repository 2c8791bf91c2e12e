"""Background threads that come and go: a service's coordinators, and waiting for them."""

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


class Coordinators:
    """A service's background threads, one per job it drives (a batch job, a tuning job): each
    started under the job's id with a stop event, and forgotten when its thread ends; after
    ``close`` none starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._events: dict[str, threading.Event] = {}
        self.closed = False

    def start(self, key: str, name: str, run: Callable[[threading.Event], object]) -> bool:
        """Run ``run(stop_event)`` in a daemon thread; False (nothing started) when closed or
        when ``key`` is driven already."""
        with self._lock:
            if self.closed or key in self._threads:
                return False
            ev = threading.Event()
            t = threading.Thread(target=self._run, args=(key, run, ev), name=name, daemon=True)
            self._threads[key] = t
            self._events[key] = ev
        t.start()
        return True

    def _run(self, key: str, run: Callable[[threading.Event], object], ev: threading.Event) -> None:
        try:
            run(ev)
        finally:
            with self._lock:
                self._threads.pop(key, None)
                self._events.pop(key, None)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._threads

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._threads)

    def stop(self, key: str) -> bool:
        """Set ``key``'s stop event; False when no thread here drives it."""
        with self._lock:
            ev = self._events.get(key)
        if ev is not None:
            ev.set()
        return ev is not None

    def close(self) -> list[str]:
        """Start no more; return the keys driven now (their threads go on until stopped)."""
        with self._lock:
            self.closed = True
            return list(self._threads)

    def stop_all(self) -> None:
        with self._lock:
            events = list(self._events.values())
        for ev in events:
            ev.set()

    def wait(self, timeout_s: float | None = None) -> None:
        """Until every thread has ended (or ``timeout_s``)."""

        def current() -> list[threading.Thread]:
            with self._lock:
                return list(self._threads.values())

        join_threads(current, timeout_s)
