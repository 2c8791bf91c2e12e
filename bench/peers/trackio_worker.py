"""Trackio's side of ``bench/tracking.py``. Runs inside Trackio's own virtual environment
(``bench/.envs/trackio``) and prints one JSON line with its result.

``serve`` runs Trackio's server (its dashboard app, which takes writes from clients that hold
its write token) and prints the write URL. The workloads log through that server
(``--url``, the write URL) or in-process to a local store (``--local DIR``, Trackio's embedded
mode). ``trackio.log`` queues on a background thread, so each workload is timed until
``trackio.finish()`` returns, and the stored rows are then counted in the store's SQLite file.
Trackio has no run search, so there is no search workload.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _data import metric_batches  # noqa: E402

PROJECT = "bench"


def _emit(result: dict) -> None:
    from importlib.metadata import version

    result["trackio_version"] = version("trackio")
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _init_kwargs(a: argparse.Namespace) -> dict:
    # Quiet: no dashboard in a notebook, no CPU or GPU sampling threads competing.
    kw: dict = {"embed": False, "auto_log_cpu": False, "auto_log_gpu": False}
    if a.url:
        kw["server_url"] = a.url
    return kw


def _stored_rows(store: str, run_name: str) -> tuple[int, int]:
    """(rows, metric values) stored for the run in the store's SQLite file."""
    from trackio.sqlite_storage import SQLiteStorage

    db = Path(store) / SQLiteStorage.get_project_db_filename(PROJECT)
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT metrics FROM metrics WHERE run_name = ?", (run_name,)
        ).fetchall()
    values = sum(len([k for k in json.loads(m) if not k.startswith("_")]) for (m,) in rows)
    return len(rows), values


def cmd_serve(a: argparse.Namespace) -> None:
    """Trackio's server on 127.0.0.1:PORT; prints ``WRITE_URL <url>`` once it is up."""
    import trackio

    _, _, _, full_url = trackio.show(
        open_browser=False, block_thread=False, host="127.0.0.1", server_port=a.port
    )
    sys.stdout.write(f"WRITE_URL {full_url}\n")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


def cmd_log_metric(a: argparse.Namespace) -> None:
    """``trackio.log({"loss": v}, step=i)`` once per step, until ``finish()`` returns."""
    import trackio

    name = f"log-metric-{uuid.uuid4().hex[:8]}"
    trackio.init(project=PROJECT, name=name, **_init_kwargs(a))
    t0 = time.perf_counter()
    for i in range(a.n):
        trackio.log({"loss": 1.0 / (i + 1)}, step=i)
    t_loop = time.perf_counter()
    trackio.finish()
    t1 = time.perf_counter()
    rows, values = _stored_rows(a.store, name)
    _emit(
        {
            "n": a.n,
            "loop_s": t_loop - t0,
            "total_s": t1 - t0,
            "per_call_us": (t_loop - t0) / a.n * 1e6,
            "points_per_s": a.n / (t1 - t0),
            "stored": values,
        }
    )


def cmd_log_batch(a: argparse.Namespace) -> None:
    """``trackio.log({10 keys}, step)`` per step: Trackio's way of logging many metrics in one
    call (its client also batches queued calls into one request), until ``finish()``."""
    import trackio

    name = f"log-batch-{uuid.uuid4().hex[:8]}"
    steps: list[dict[str, float]] = []
    step_of: list[int] = []
    for k, v, s in metric_batches(a.n, a.n)[0]:
        if not step_of or step_of[-1] != s:
            steps.append({})
            step_of.append(s)
        steps[-1][k] = v
    trackio.init(project=PROJECT, name=name, **_init_kwargs(a))
    t0 = time.perf_counter()
    for s, values in zip(step_of, steps, strict=True):
        trackio.log(values, step=s)
    trackio.finish()
    t1 = time.perf_counter()
    _, stored = _stored_rows(a.store, name)
    _emit(
        {
            "n": a.n,
            "mode": "log(dict of 10) per step",
            "total_s": t1 - t0,
            "metrics_per_s": a.n / (t1 - t0),
            "stored": stored,
        }
    )


def cmd_create_runs(a: argparse.Namespace) -> None:
    """``trackio.init()`` then ``trackio.finish()``, one run after another."""
    import trackio

    kw = _init_kwargs(a)
    trackio.init(project=PROJECT, name=f"warm-{uuid.uuid4().hex[:8]}", **kw)  # warm up
    trackio.finish()
    t0 = time.perf_counter()
    for i in range(a.n):
        trackio.init(project=PROJECT, name=f"run-{uuid.uuid4().hex[:8]}-{i}", **kw)
        trackio.finish()
    t1 = time.perf_counter()
    _emit({"n": a.n, "total_s": t1 - t0, "runs_per_s": a.n / (t1 - t0)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.set_defaults(fn=cmd_serve)
    for name, fn in (
        ("log-metric", cmd_log_metric),
        ("log-batch", cmd_log_batch),
        ("create-runs", cmd_create_runs),
    ):
        s = sub.add_parser(name)
        s.add_argument("--url", help="the server's write URL; in-process when omitted")
        s.add_argument("--store", required=True, help="the store's folder (TRACKIO_DIR)")
        s.add_argument("--n", type=int, required=True)
        s.set_defaults(fn=fn)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    # Trackio reads its store's folder at import: set it before anything imports trackio.
    store = next((sys.argv[i + 1] for i, x in enumerate(sys.argv[:-1]) if x == "--store"), None)
    if store and "--url" not in sys.argv:
        os.environ["TRACKIO_DIR"] = store
    main()
