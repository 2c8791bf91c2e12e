"""The metric buffer: ``log_metric`` appends to memory and returns; a background thread sends
batches. A training loop pays microseconds per call, not a round trip.

Batches are flushed when ``max_batch`` points are waiting, every ``interval_s``, on ``flush()``,
at run end and at interpreter exit. Each batch carries an id, so a retry after a lost answer is
stored once. A failure that retrying cannot fix (the run was deleted, say) is kept and raised on
the next call of the training loop, so nothing is lost silently.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from shipyard.core.errors import Internal, ShipyardError, Unavailable
from shipyard.tracking.schemas import MetricRow

SendFn = Callable[[str, list[MetricRow], str], None]


class MetricBuffer:
    def __init__(self, send: SendFn, *, max_batch: int = 20_000, interval_s: float = 0.5) -> None:
        self._send = send
        self.max_batch = max_batch
        self.interval_s = interval_s
        self._pending: dict[str, list[MetricRow]] = {}
        self._unsent: list[tuple[str, str, list[MetricRow]]] = []  # (run id, batch id, rows)
        self._count = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="shipyard-metrics", daemon=True)
            self._thread.start()

    def add(self, run_id: str, row: MetricRow) -> None:
        if self._error is not None:
            self._raise()
        with self._lock:
            self._pending.setdefault(run_id, []).append(row)
            self._count += 1
            full = self._count >= self.max_batch
            if self._thread is None:
                self._ensure_thread()
        if full:
            self._wake.set()

    def add_many(self, run_id: str, rows: list[MetricRow]) -> None:
        if self._error is not None:
            self._raise()
        with self._lock:
            self._pending.setdefault(run_id, []).extend(rows)
            self._count += len(rows)
            if self._thread is None:
                self._ensure_thread()
        if self._count >= self.max_batch:
            self._wake.set()

    def _take(self) -> dict[str, list[MetricRow]]:
        with self._lock:
            taken, self._pending = self._pending, {}
            self._count = 0
        return taken

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                self._flush_once()
            except BaseException as exc:  # kept for the caller: see _raise
                self._error = exc

    def _flush_once(self) -> None:
        with self._flush_lock:
            # Batches that failed to send keep their ids: if the server did commit one but its
            # answer was lost, resending it under the same id cannot store it twice, however
            # long the outage lasted.
            batches, self._unsent = self._unsent, []
            for run_id, rows in self._take().items():
                for i in range(0, len(rows), self.max_batch):
                    batches.append((run_id, uuid.uuid4().hex, rows[i : i + self.max_batch]))
            refused: BaseException | None = None
            dead: set[str] = set()
            for n, (run_id, batch_id, chunk) in enumerate(batches):
                if run_id in dead:
                    continue
                try:
                    self._send(run_id, chunk, batch_id)
                except BaseException as exc:
                    if isinstance(exc, ShipyardError) and not isinstance(
                        exc, (Unavailable, Internal)
                    ):
                        # Retrying cannot help (the run was deleted, say): keeping these rows
                        # would fail every later flush. Drop this run's rows, report the
                        # error, and still send the other runs' rows.
                        refused = refused or exc
                        dead.add(run_id)
                        continue
                    # Keep what was not sent, in order, for a later flush to retry.
                    rest = [b for b in batches[n:] if b[0] not in dead]
                    with self._lock:
                        self._unsent = rest + self._unsent
                        self._count += sum(len(b[2]) for b in rest)
                    raise
            if refused is not None:
                raise refused

    def _raise(self) -> None:
        err, self._error = self._error, None
        if isinstance(err, ShipyardError):
            raise type(err)(f"logging metrics in the background failed: {err.message}", err.details)
        raise RuntimeError(f"logging metrics in the background failed: {err}") from err

    def flush(self) -> None:
        """Send everything logged so far; return when it is durable on the backend."""
        self._flush_once()
        if self._error is not None:
            self._raise()

    def take_run(self, run_id: str) -> list[tuple[str, list[MetricRow]]] | None:
        """Remove and return what is waiting for one run, as ``(batch id, rows)`` batches (a
        batch that failed to send keeps its id), for the caller to store some other way; a
        send in progress ends first. None, with nothing taken, when an earlier send failed for
        good (``flush`` raises that error)."""
        with self._flush_lock:
            if self._error is not None:
                return None
            with self._lock:
                mine = [(bid, rows) for rid, bid, rows in self._unsent if rid == run_id]
                self._unsent = [b for b in self._unsent if b[0] != run_id]
                rows = self._pending.pop(run_id, [])
                self._count -= len(rows) + sum(len(r) for _, r in mine)
        if rows:
            mine.append((uuid.uuid4().hex, rows))
        return mine

    def pending(self) -> int:
        return self._count

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._closed = True
            self._wake.set()
