"""Aim's side of ``bench/tracking.py``. Runs inside Aim's own virtual environment
(``bench/.envs/aim``) and prints one JSON line with its result.

The workloads log through Aim's remote tracking server (``--repo aim://127.0.0.1:PORT``, started
by the bench with ``aim server``) or into an embedded repository (``--repo DIR``). Aim's remote
client drains its queue at ``close()``, so each workload is timed until ``close()`` returns.
Aim's query language reads metric values only from runs its indexer has caught up with, and
creating the 100,000 runs of the search workload through its SDK takes hours (about 4 to 6 runs
a second here), so search is not measured for Aim.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _data import metric_batches  # noqa: E402

EXPERIMENT = "bench"


def _emit(result: dict) -> None:
    from importlib.metadata import version

    result["aim_version"] = version("aim")
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _run(repo: str, name: str):  # type: ignore[no-untyped-def]
    from aim import Run

    # No system-metrics thread, no terminal capture: nothing competes with the workload.
    run = Run(
        repo=repo,
        experiment=EXPERIMENT,
        system_tracking_interval=None,
        capture_terminal_logs=False,
        log_system_params=False,
    )
    run.name = name
    return run


def cmd_log_metric(a: argparse.Namespace) -> None:
    """``run.track(v, name="loss", step=i)`` once per step, until ``close()`` returns."""
    run = _run(a.repo, f"log-metric-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    for i in range(a.n):
        run.track(1.0 / (i + 1), name="loss", step=i)
    t_loop = time.perf_counter()
    run.close()
    t1 = time.perf_counter()
    _emit(
        {
            "n": a.n,
            "loop_s": t_loop - t0,
            "total_s": t1 - t0,
            "per_call_us": (t_loop - t0) / a.n * 1e6,
            "points_per_s": a.n / (t1 - t0),
            "stored": None,
        }
    )


def cmd_log_batch(a: argparse.Namespace) -> None:
    """``run.track({10 keys}, step=s)`` per step (Aim tracks a dict of values in one call),
    until ``close()`` returns."""
    steps: list[dict[str, float]] = []
    step_of: list[int] = []
    for k, v, s in metric_batches(a.n, a.n)[0]:
        if not step_of or step_of[-1] != s:
            steps.append({})
            step_of.append(s)
        steps[-1][k] = v
    run = _run(a.repo, f"log-batch-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    for s, values in zip(step_of, steps, strict=True):
        run.track(values, step=s)
    run.close()
    t1 = time.perf_counter()
    _emit(
        {
            "n": a.n,
            "mode": "track(dict of 10) per step",
            "total_s": t1 - t0,
            "metrics_per_s": a.n / (t1 - t0),
            "stored": None,
        }
    )


def cmd_create_runs(a: argparse.Namespace) -> None:
    """``Run(...)`` then ``close()``, one run after another."""
    _run(a.repo, "warm-up").close()
    t0 = time.perf_counter()
    for i in range(a.n):
        _run(a.repo, f"run-{i}").close()
    t1 = time.perf_counter()
    _emit({"n": a.n, "total_s": t1 - t0, "runs_per_s": a.n / (t1 - t0)})


def main() -> None:
    logging.disable(logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (
        ("log-metric", cmd_log_metric),
        ("log-batch", cmd_log_batch),
        ("create-runs", cmd_create_runs),
    ):
        s = sub.add_parser(name)
        s.add_argument("--repo", required=True, help="aim://host:port, or a folder (embedded)")
        s.add_argument("--n", type=int, required=True)
        s.set_defaults(fn=fn)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
