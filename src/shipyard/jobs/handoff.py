"""What a completed attempt's process hands back to the job worker with its result, and how the
worker stores it.

A job's process is new: no statement of the store is compiled in it yet, so sending its last
metric batches and its report from there costs it tens of milliseconds, between the job's last
line of code and its waiter hearing that it ended. So an attempt that completed puts them in its
result instead (``pack``, called by ``launcher``), and the worker stores them (``store``) in the
transaction that records how the attempt ended. A failed or stopped attempt, or one with more
than ``MAX_ROWS`` rows, sends them from its own process as before.

The job's process imports this module (through ``launcher``): it imports only the standard
library at import time.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.core.db import Database
    from shipyard.tracking.service import TrackingService

# At most this many metric rows go back to the worker with an attempt's result; more are sent
# from the job's process (the result is read whole, and a batch this size is the SDK's).
MAX_ROWS = 20_000


def report_text(report: dict[str, Any]) -> str:
    """``report.json`` as it is written and stored as an artifact."""
    return json.dumps(report, indent=2, default=str)


def report_artifact(rank: int) -> str:
    """The artifact path of a rank's ``report.json`` on the job's run."""
    return "report.json" if rank == 0 else f"reports/rank-{rank}.json"


def pack(batches: Sequence[tuple[str, Sequence[Sequence[Any]]]], rank: int) -> dict[str, Any]:
    """The handoff of a rank's result: its metric batches ``(batch id, rows of (key, value,
    step, timestamp))``, by column as the REST API takes them, and where its report goes."""
    return {
        "metrics": [
            {
                "batch_id": batch_id,
                "keys": [r[0] for r in rows],
                "values": [r[1] for r in rows],
                "steps": [r[2] for r in rows],
                "timestamps": [r[3] for r in rows],
            }
            for batch_id, rows in batches
        ],
        "report_artifact": report_artifact(rank),
    }


def store(
    db: Database, tracking: TrackingService, project: str, run_id: str, result: dict[str, Any]
) -> None:
    """Store what ``result`` (a rank's, from ``run_job``) hands back, if anything: its metric
    batches under their ids, and its report as the run's artifact. Inside the caller's
    ``db.together()``, as one savepoint: all of it goes in, or none of it does (and the error
    is raised). The report's bytes go to the artifact store on a thread while the rows are
    written; the rows are in only once the bytes are durable."""
    handoff = result.get("handoff")
    if not isinstance(handoff, dict):
        return
    report = result.get("report")
    name = handoff.get("report_artifact")
    data = (
        report_text(report).encode() if isinstance(report, dict) and isinstance(name, str) else None
    )
    blob = _Background(tracking.store.put_bytes, data) if data is not None else None
    with db.together(), db.write():
        for b in handoff.get("metrics") or []:
            tracking.log_metric_columns(
                project,
                run_id,
                b["keys"],
                b["values"],
                b["steps"],
                b["timestamps"],
                batch_id=b["batch_id"],
            )
        if blob is not None and data is not None and isinstance(name, str):
            digest = hashlib.sha256(data).hexdigest()
            tracking.record_artifact(project, run_id, name, digest, len(data))
            blob.result()


class _Background:
    """``fn(*args)`` on a thread; ``result()`` waits for it and raises what it raised."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
