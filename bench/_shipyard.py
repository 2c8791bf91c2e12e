"""Shipyard's side of ``bench/tracking.py``: the same workloads as ``peers/mlflow_worker.py``,
through Shipyard's SDK against a running ``shipyard server``.

Runs in the benchmark's own process (Shipyard's environment); each function returns a dict of
plain numbers, like the MLflow worker's JSON.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from _data import (
    SEARCH_FILTER,
    SEARCH_ORDER,
    SEARCH_PAGE,
    chunks,
    metric_batches,
    synthetic_runs,
    timed_reps,
)

import shipyard as sy
from shipyard.sdk.client import Client

PROJECT = "bench"
SEARCH_PROJECT = "bench-search"


def log_metric(url: str | None, n: int) -> dict[str, Any]:
    """``sy.log_metric`` once per step; timed until ``sy.flush()`` returns (durable). With no
    ``url``, on the client ``sy.init`` was last given."""
    if url is not None:
        sy.init(project=PROJECT, tracking_uri=url)
    run = sy.start_run(experiment=f"log-metric-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    for i in range(n):
        sy.log_metric("loss", 1.0 / (i + 1), step=i)
    t_loop = time.perf_counter()
    sy.flush()
    t1 = time.perf_counter()
    stored = len(sy.get_client().get_metric_history(run.id, "loss").steps)
    run.end()
    return {
        "n": n,
        "loop_s": t_loop - t0,
        "total_s": t1 - t0,
        "per_call_us": (t_loop - t0) / n * 1e6,
        "points_per_s": n / (t1 - t0),
        "stored": stored,
    }


def log_metric_local(db_url: str, home: str, n: int) -> dict[str, Any]:
    """``sy.log_metric`` once per step in-process (no server: the SDK's embedded mode, straight
    on the database), timed until ``sy.flush()`` returns."""
    from shipyard.core.settings import Settings
    from shipyard.sdk.local import LocalBackend

    backend = LocalBackend(settings=Settings(database_url=db_url, home=home))
    sy.init(client=Client(PROJECT, backend=backend))
    try:
        return log_metric(None, n)
    finally:
        sy.flush()
        backend.services.close()


def log_batch(url: str, n: int, batch_size: int) -> dict[str, Any]:
    """Synchronous batches of ``batch_size`` metrics, each acknowledged (durable) in turn."""
    client = Client(PROJECT, url)
    sy.init(client=client)
    run = sy.start_run(experiment=f"log-batch-{uuid.uuid4().hex[:8]}")
    ts = int(time.time() * 1000)
    batches = [[(k, v, s, ts) for k, v, s in b] for b in metric_batches(n, batch_size)]
    t0 = time.perf_counter()
    for b in batches:
        client.backend.log_batch(client.project, run.id, metrics=b)
    t1 = time.perf_counter()
    stored = len(client.get_metric_history(run.id, "k0").steps) * 10
    run.end()
    return {
        "n": n,
        "batch_size": batch_size,
        "mode": "sync",
        "total_s": t1 - t0,
        "metrics_per_s": n / (t1 - t0),
        "stored": stored,
    }


def log_metrics_buffered(url: str, n: int, keys: int = 10) -> dict[str, Any]:
    """``run.log_metrics({10 keys}, step)`` per step through the background buffer, then
    ``sy.flush()``: the SDK's own batching."""
    client = Client(PROJECT, url)
    sy.init(client=client)
    run = sy.start_run(experiment=f"log-metrics-{uuid.uuid4().hex[:8]}")
    steps = [{f"k{j}": 1.0 / (s * keys + j + 1) for j in range(keys)} for s in range(n // keys)]
    t0 = time.perf_counter()
    for s, values in enumerate(steps):
        run.log_metrics(values, step=s)
    sy.flush()
    t1 = time.perf_counter()
    stored = len(client.get_metric_history(run.id, "k0").steps) * keys
    run.end()
    return {
        "n": n,
        "mode": "buffered log_metrics",
        "total_s": t1 - t0,
        "metrics_per_s": n / (t1 - t0),
        "stored": stored,
    }


def create_runs(url: str, n: int) -> dict[str, Any]:
    """``sy.start_run()`` then ``run.end()``, one run after another."""
    sy.init(project=PROJECT, tracking_uri=url)
    exp = f"runs-{uuid.uuid4().hex[:8]}"
    sy.start_run(experiment=exp).end()  # warm up
    t0 = time.perf_counter()
    for _ in range(n):
        sy.start_run(experiment=exp).end()
    t1 = time.perf_counter()
    return {"n": n, "total_s": t1 - t0, "runs_per_s": n / (t1 - t0)}


# The columns of ``tracking.chunks.chunk_row``, in its order.
CHUNK_COLUMNS = (
    "run_id",
    "key",
    "min_step",
    "max_step",
    "points",
    "steps_i64",
    "timestamps_i64",
    "values_f64",
)


def populate(url: str, db_url: str, n_runs: int) -> dict[str, Any]:
    """Make the project and experiment through the server, then bulk-insert runs into
    Shipyard's tables with SQLAlchemy Core (the same rows the MLflow worker loads)."""
    from sqlalchemy import create_engine

    from shipyard.core.db import normalize_url
    from shipyard.core.ids import new_id
    from shipyard.tracking.chunks import chunk_row
    from shipyard.tracking.tables import latest_metrics, metric_chunks, run_params, runs

    client = Client(SEARCH_PROJECT, url)
    project_id = client.backend.ensure_project(SEARCH_PROJECT).id
    exp = client.create_experiment(f"search-{uuid.uuid4().hex[:8]}")
    engine = create_engine(normalize_url(db_url))
    t0 = time.perf_counter()
    for batch in chunks(synthetic_runs(n_runs), 5000):
        rrows, prows, mrows = [], [], []
        for r in batch:
            rid = new_id()
            rrows.append(
                {
                    "id": rid,
                    "project_id": project_id,
                    "experiment_id": exp.id,
                    "parent_run_id": None,
                    "name": r.name,
                    "status": "FINISHED",
                    "start_time": r.start_ms,
                    "end_time": r.end_ms,
                    "lifecycle": "active",
                    "deleted_at": None,
                    "created_by": "bench",
                    "created_at": r.start_ms,
                    "updated_at": r.end_ms,
                }
            )
            prows += [{"run_id": rid, "key": k, "value": v} for k, v in r.params.items()]
            mrows += [
                {"run_id": rid, "key": k, "value": v, "step": 0, "timestamp": r.end_ms}
                for k, v in r.metrics.items()
            ]
        crows = [
            dict(
                zip(
                    CHUNK_COLUMNS,
                    chunk_row(m["run_id"], m["key"], [0], [m["timestamp"]], [m["value"]]),
                    strict=True,
                )
            )
            for m in mrows
        ]
        with engine.begin() as conn:
            conn.execute(runs.insert(), rrows)
            conn.execute(run_params.insert(), prows)
            conn.execute(metric_chunks.insert(), crows)
            conn.execute(latest_metrics.insert(), mrows)
    engine.dispose()
    return {"experiment_id": exp.id, "runs": n_runs, "load_s": time.perf_counter() - t0}


def search(url: str, reps: int, budget_s: float) -> dict[str, Any]:
    """``Client.search_runs`` with a metric filter and an order, ``reps`` times."""
    client = Client(SEARCH_PROJECT, url)

    def once() -> list[Any]:
        return client.search_runs(
            filter=SEARCH_FILTER, order_by=[SEARCH_ORDER], page_size=SEARCH_PAGE
        ).data

    times, found = timed_reps(once, reps, budget_s)
    client.close()
    return {
        "times_s": times,
        "returned": len(found),
        "top": [r.metrics["m0"].value for r in found[:10]],
        "top_names": [r.name for r in found[:10]],
    }
