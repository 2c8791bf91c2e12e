"""MLflow's side of ``bench/tracking.py``. Runs inside MLflow's own virtual environment
(``bench/.envs/mlflow``) and prints one JSON line with its result.

Each subcommand measures one workload against a running ``mlflow server`` through MLflow's own
client, in MLflow's fastest mode for the call (asynchronous logging, batching for one second,
where it has one). ``populate`` loads runs straight into MLflow's tables, as the benchmark does
for Shipyard, because logging 100,000 runs through either server would take too long.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _data import (  # noqa: E402
    SEARCH_FILTER,
    SEARCH_ORDER,
    SEARCH_PAGE,
    chunks,
    metric_batches,
    synthetic_runs,
    timed_reps,
)

# Before mlflow is imported: its async logging batches only when this is set.
os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
# A search over many runs can take minutes: wait for it rather than time out and send it again.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "3600")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402


def _emit(result: dict) -> None:
    result["mlflow_version"] = mlflow.__version__
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def cmd_init(a: argparse.Namespace) -> None:
    """Create MLflow's schema in an empty store, so server start times exclude migrations."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    t = time.perf_counter()
    store = SqlAlchemyStore(a.db_uri, a.artifact_root)
    store.engine.dispose()
    _emit({"init_s": time.perf_counter() - t})


def _history_len(client: MlflowClient, run_id: str, key: str) -> int:
    return len(client.get_metric_history(run_id, key))


def cmd_log_metric(a: argparse.Namespace) -> None:
    """``mlflow.log_metric`` once per step, asynchronously, until the async queue is flushed."""
    mlflow.set_tracking_uri(a.uri)
    client = MlflowClient(a.uri)
    exp = client.create_experiment(f"log-metric-{uuid.uuid4().hex[:8]}")
    run = mlflow.start_run(experiment_id=exp)
    t0 = time.perf_counter()
    for i in range(a.n):
        mlflow.log_metric("loss", 1.0 / (i + 1), step=i, synchronous=False)
    t_loop = time.perf_counter()
    mlflow.flush_async_logging()
    t1 = time.perf_counter()
    stored = _history_len(client, run.info.run_id, "loss")
    mlflow.end_run()
    _emit(
        {
            "n": a.n,
            "loop_s": t_loop - t0,
            "total_s": t1 - t0,
            "per_call_us": (t_loop - t0) / a.n * 1e6,
            "points_per_s": a.n / (t1 - t0),
            "stored": stored,
        }
    )


def cmd_log_batch(a: argparse.Namespace) -> None:
    """``MlflowClient.log_batch`` of ``batch_size`` metrics per call (1000 is MLflow's limit),
    synchronous or asynchronous (then waited for)."""
    client = MlflowClient(a.uri)
    exp = client.create_experiment(f"log-batch-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(exp).info.run_id
    ts = int(time.time() * 1000)
    batches = [[Metric(k, v, ts, s) for k, v, s in b] for b in metric_batches(a.n, a.batch_size)]
    t0 = time.perf_counter()
    if a.mode == "async":
        ops = [client.log_batch(run_id, metrics=b, synchronous=False) for b in batches]
        for op in ops:
            op.wait()
    else:
        for b in batches:
            client.log_batch(run_id, metrics=b, synchronous=True)
    t1 = time.perf_counter()
    stored = _history_len(client, run_id, "k0") * 10
    client.set_terminated(run_id)
    _emit(
        {
            "n": a.n,
            "batch_size": a.batch_size,
            "mode": a.mode,
            "total_s": t1 - t0,
            "metrics_per_s": a.n / (t1 - t0),
            "stored": stored,
        }
    )


def cmd_create_runs(a: argparse.Namespace) -> None:
    """``mlflow.start_run()`` then ``mlflow.end_run()``, one run after another."""
    mlflow.set_tracking_uri(a.uri)
    client = MlflowClient(a.uri)
    exp = client.create_experiment(f"runs-{uuid.uuid4().hex[:8]}")
    mlflow.start_run(experiment_id=exp)  # warm up: imports, connection, git lookups
    mlflow.end_run()
    t0 = time.perf_counter()
    for _ in range(a.n):
        mlflow.start_run(experiment_id=exp)
        mlflow.end_run()
    t1 = time.perf_counter()
    _emit({"n": a.n, "total_s": t1 - t0, "runs_per_s": a.n / (t1 - t0)})


def cmd_populate(a: argparse.Namespace) -> None:
    """Create an experiment through the server, then bulk-insert runs into MLflow's tables."""
    from sqlalchemy import MetaData, Table, create_engine

    client = MlflowClient(a.uri)
    exp_id = client.create_experiment(f"search-{uuid.uuid4().hex[:8]}")
    engine = create_engine(a.db_uri)
    md = MetaData()
    t = {n: Table(n, md, autoload_with=engine) for n in ("runs", "params", "tags")}
    t["metrics"] = Table("metrics", md, autoload_with=engine)
    t["latest_metrics"] = Table("latest_metrics", md, autoload_with=engine)
    t0 = time.perf_counter()
    for batch in chunks(synthetic_runs(a.runs), 5000):
        rows: dict[str, list[dict]] = {k: [] for k in t}
        for r in batch:
            rid = uuid.UUID(int=r.index + 1).hex
            rows["runs"].append(
                {
                    "run_uuid": rid,
                    "name": r.name,
                    "source_type": "LOCAL",
                    "source_name": "bench",
                    "entry_point_name": "",
                    "user_id": "bench",
                    "status": "FINISHED",
                    "start_time": r.start_ms,
                    "end_time": r.end_ms,
                    "source_version": "",
                    "lifecycle_stage": "active",
                    "artifact_uri": f"{a.artifact_root}/{exp_id}/{rid}/artifacts",
                    "experiment_id": int(exp_id),
                }
            )
            rows["tags"].append({"key": "mlflow.runName", "value": r.name, "run_uuid": rid})
            for k, v in r.params.items():
                rows["params"].append({"key": k, "value": v, "run_uuid": rid})
            for k, v in r.metrics.items():
                m = {
                    "key": k,
                    "value": v,
                    "timestamp": r.end_ms,
                    "step": 0,
                    "is_nan": False,
                    "run_uuid": rid,
                }
                rows["metrics"].append(m)
                rows["latest_metrics"].append(m)
        with engine.begin() as conn:
            for name in ("runs", "tags", "params", "metrics", "latest_metrics"):
                conn.execute(t[name].insert(), rows[name])
    engine.dispose()
    _emit({"experiment_id": exp_id, "runs": a.runs, "load_s": time.perf_counter() - t0})


def cmd_search(a: argparse.Namespace) -> None:
    """``MlflowClient.search_runs`` with a metric filter and an order, ``reps`` times."""
    client = MlflowClient(a.uri)

    def once() -> list:
        return list(
            client.search_runs(
                [a.experiment_id],
                filter_string=SEARCH_FILTER,
                order_by=[SEARCH_ORDER],
                max_results=SEARCH_PAGE,
            )
        )

    times, found = timed_reps(once, a.reps, a.budget_s)
    _emit(
        {
            "times_s": times,
            "returned": len(found),
            "top": [r.data.metrics["m0"] for r in found[:10]],
            "top_names": [r.info.run_name for r in found[:10]],
        }
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("init")
    s.add_argument("--db-uri", required=True)
    s.add_argument("--artifact-root", required=True)
    s.set_defaults(fn=cmd_init)
    s = sub.add_parser("log-metric")
    s.add_argument("--uri", required=True)
    s.add_argument("--n", type=int, required=True)
    s.set_defaults(fn=cmd_log_metric)
    s = sub.add_parser("log-batch")
    s.add_argument("--uri", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--batch-size", type=int, default=1000)
    s.add_argument("--mode", choices=["sync", "async"], default="sync")
    s.set_defaults(fn=cmd_log_batch)
    s = sub.add_parser("create-runs")
    s.add_argument("--uri", required=True)
    s.add_argument("--n", type=int, required=True)
    s.set_defaults(fn=cmd_create_runs)
    s = sub.add_parser("populate")
    s.add_argument("--uri", required=True)
    s.add_argument("--db-uri", required=True)
    s.add_argument("--artifact-root", required=True)
    s.add_argument("--runs", type=int, required=True)
    s.set_defaults(fn=cmd_populate)
    s = sub.add_parser("search")
    s.add_argument("--uri", required=True)
    s.add_argument("--experiment-id", required=True)
    s.add_argument("--reps", type=int, default=20)
    s.add_argument("--budget-s", type=float, default=600)
    s.set_defaults(fn=cmd_search)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
