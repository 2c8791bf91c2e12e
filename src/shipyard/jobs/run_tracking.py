"""The job's run, from inside the job's process: the launcher's own tracking client and the
buffer that sends the profile's (and built-in algorithms') metrics in batches.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

# Metrics from the profiler (and built-in algorithms) are sent in batches this often.
METRICS_FLUSH_S = 5.0
METRICS_MAX_BATCH = 20_000  # rows in one request to the store
# How many of the run's metrics the rule checks read back (loss-like ones first).
MAX_RULE_METRICS = 200


class JobTracking:
    """The launcher's own tracking client (not the fluent API's, which the user's code owns),
    made on first use, and a small buffer that sends the profile's metrics in batches.

    The client records the metric rows that this process sends for the job's run, whoever
    sends them (the profile, a built-in algorithm, the job's code through ``sy.log_metric``):
    the rule checks read those instead of reading the run back from the store."""

    def __init__(self, project: str, run_id: str) -> None:
        self.project = project
        self.run_id = run_id
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._lock = threading.Lock()
        # Rows not sent yet; batches whose send failed (kept with their id for the retry).
        self._pending: list[Any] = []
        self._unsent: list[tuple[str, list[Any]]] = []
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        # Every metric row sent for the job's run from this process, by key.
        self._sent: dict[str, list[tuple[int, int, float | None]]] = {}
        self._sent_lock = threading.Lock()

    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                from shipyard.sdk.client import Client

                client = Client(self.project, known_project=True)  # made with the job
                self._record_sends(client.backend)
                self._client = client
            return self._client

    def _record_sends(self, backend: Any) -> None:
        """Have ``backend.log_batch`` note the metric rows it stored for the job's run."""
        send = backend.log_batch

        def log_batch(project: str, run_id: str, *args: Any, **kwargs: Any) -> Any:
            out = send(project, run_id, *args, **kwargs)
            if run_id == self.run_id and kwargs.get("metrics"):
                self._note_sent(kwargs["metrics"])
            return out

        backend.log_batch = log_batch

    def _note_sent(self, rows: Any) -> None:
        with self._sent_lock:
            for key, value, step, ts in rows:
                self._sent.setdefault(key, []).append((int(step), int(ts), value))

    def share_with_script(self) -> None:
        """Make this client the fluent API's default, so that ``sy.log_metric`` in the job's
        code logs through it rather than opening the store again. It is made when first
        needed: a short job's metrics and report go back to the worker with its result
        (``take_for_worker``), and such a job never opens the store at all."""
        from shipyard.sdk import fluent

        fluent._default_client = self.client

    # -- the buffer ----------------------------------------------------------------------------

    def add_rows(self, rows: list[Any]) -> None:
        with self._lock:
            self._pending.extend(rows)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._loop, name="shipyard-metrics", daemon=True
                )
                self._thread.start()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        ts = time.time_ns() // 1_000_000
        rows = [(k, float(v), step or 0, ts) for k, v in metrics.items()]
        self.add_rows(rows)

    def _loop(self) -> None:
        while not self._wake.wait(METRICS_FLUSH_S):
            with contextlib.suppress(Exception):  # kept: the next flush (or finish) retries
                self.flush()

    def take(self) -> list[Any]:
        """Every row not sent yet, which the caller now sends (or gives back with
        ``add_rows``)."""
        with self._lock:
            rows, self._pending = self._pending, []
            unsent, self._unsent = self._unsent, []
        return [r for _, batch in unsent for r in batch] + rows

    def flush(self) -> None:
        """Send what is buffered (in batches of at most ``METRICS_MAX_BATCH`` rows); a batch
        that failed is sent again under its id."""
        import uuid

        with self._send_lock:
            with self._lock:
                batches, self._unsent = self._unsent, []
                rows, self._pending = self._pending, []
            for i in range(0, len(rows), METRICS_MAX_BATCH):
                batches.append((uuid.uuid4().hex, rows[i : i + METRICS_MAX_BATCH]))
            for n, (batch_id, batch) in enumerate(batches):
                try:
                    self.client().backend.log_batch(
                        self.project, self.run_id, metrics=batch, batch_id=batch_id
                    )
                except BaseException:
                    with self._lock:
                        self._unsent = batches[n:] + self._unsent
                    raise

    def _script_buffer(self) -> Any:
        """The fluent API's metric buffer when the job's code logs through this client (or
        will: none made yet, and this one is the default), else None."""
        fluent = sys.modules.get("shipyard.sdk.fluent")
        buf = getattr(fluent, "_buffer", None)
        theirs = getattr(fluent, "_client", None)
        if buf is None:
            return None
        if theirs is None:
            return buf if getattr(fluent, "_default_client", None) == self.client else None
        return buf if theirs is self._client else None

    def send_with_script_metrics(self) -> bool:
        """Hand what is buffered to the fluent API's buffer, when the job's code logged through
        this client, so that both go to the store in one batch when it is flushed. Returns
        False (nothing handed) otherwise."""
        buf = self._script_buffer()
        if buf is None:
            return False
        rows = self.take()
        if rows:
            try:
                buf.add_many(self.run_id, rows)
            except Exception:  # its earlier failure, raised now: send ours separately
                self.add_rows(rows)
                return False
        return True

    def take_for_worker(self, max_rows: int) -> list[tuple[str, list[Any]]] | None:
        """Every metric row of the job's run not stored yet (this buffer's, and the job's
        code's in the fluent buffer when it logs through this client), as ``(batch id, rows)``
        batches, for the worker to store with how the attempt ended (``handed``), or to be
        sent from here after all (``send``). None, with nothing taken, when there are more
        than ``max_rows`` or an earlier send failed: ``flush`` and the fluent API send them."""
        joined = self.send_with_script_metrics()
        buf = self._script_buffer() if joined else None
        with self._send_lock, self._lock:
            mine = sum(len(b) for _, b in self._unsent) + len(self._pending)
            if mine + (buf.pending() if buf is not None else 0) > max_rows:
                return None
            batches: list[tuple[str, list[Any]]] = []
            if buf is not None:
                taken = buf.take_run(self.run_id)
                if taken is None:
                    return None
                batches += taken
            batches += self._unsent
            if self._pending:
                import uuid

                batches.append((uuid.uuid4().hex, self._pending))
            self._unsent, self._pending = [], []
        return batches

    def handed(self, batches: list[tuple[str, list[Any]]]) -> None:
        """The worker stores these: note them as sent, for the rule checks."""
        for _, rows in batches:
            self._note_sent(rows)

    def send(self, batches: list[tuple[str, list[Any]]]) -> None:
        """Send batches taken by ``take_for_worker`` from here after all, under their ids."""
        for batch_id, rows in batches:
            self.client().backend.log_batch(
                self.project, self.run_id, metrics=rows, batch_id=batch_id
            )

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def logged_here(self) -> bool:
        """Whether every metric of the job's run went through this process's client (so
        ``sent_histories`` has them all): the job's code logged through the fluent API on
        the launcher's client (or logged nothing)."""
        fluent = sys.modules.get("shipyard.sdk.fluent")
        theirs = getattr(fluent, "_client", None)
        return theirs is None or theirs is self._client

    def sent_histories(self) -> dict[str, Any]:
        """The job's run's metric histories as this process sent them (profile metrics
        excluded), for the rule checks."""
        from shipyard.jobs.profile import METRIC_PREFIX, History, is_loss_name

        with self._sent_lock:
            sent = {k: list(v) for k, v in self._sent.items()}
        keys = [k for k in sent if not k.startswith(METRIC_PREFIX) and "/rank-" not in k]
        keys.sort(key=lambda k: (not is_loss_name(k), k))
        out = {}
        for k in keys[:MAX_RULE_METRICS]:
            points = sorted(sent[k], key=lambda p: (p[0], p[1]))
            out[k] = History([p[0] for p in points], [p[2] for p in points], [p[1] for p in points])
        return out

    def histories(self) -> dict[str, Any]:
        """The run's metric histories read back from the store, for the rule checks (profile
        metrics excluded): for metrics logged by other processes (a command's, or those the
        worker parses from the log)."""
        from shipyard.jobs.profile import METRIC_PREFIX, History, is_loss_name

        c = self.client()
        run = c.get_run(self.run_id)
        keys = [k for k in run.metrics if not k.startswith(METRIC_PREFIX) and "/rank-" not in k]
        keys.sort(key=lambda k: (not is_loss_name(k), k))
        out = {}
        for k in keys[:MAX_RULE_METRICS]:
            h = c.get_metric_history(self.run_id, k)
            out[k] = History(list(h.steps), list(h.values), list(h.timestamps))
        return out
