"""Experiment tracking, side by side: Shipyard against MLflow, Trackio and Aim, on SQLite and on
PostgreSQL.

    .venv/bin/python bench/tracking.py [--quick] [--db sqlite|postgres|both] [--skip-install]
                                       [--peers mlflow,trackio,aim]

Each peer (the newest release that installs) goes into its own virtual environment under
``bench/.envs/``; every tool runs on this machine, each through its own server, each with a
fresh store, and each in its fastest mode for the call:

- ``log_metric`` once per training step, timed until durable: Shipyard's SDK buffers on a
  background thread until ``sy.flush()`` returns; MLflow logs asynchronously with
  ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1`` until ``mlflow.flush_async_logging()`` returns;
  Trackio's ``log`` queues on a thread until ``trackio.finish()`` returns; Aim's ``track``
  until ``run.close()`` returns. Through each server, and in-process (each tool's embedded
  mode: Shipyard's and MLflow's straight on the database, Trackio's and Aim's local stores).
- Batched logging, metrics per second: MLflow's ``log_batch`` (1,000 metrics per call, its
  limit; synchronous and asynchronous, the faster is kept), Trackio's ``log`` and Aim's
  ``track`` of a dict of 10 metrics per step, against Shipyard's batches (synchronous
  ``log_batch`` of 1,000 and 10,000, and buffered ``log_metrics``; the fastest is kept).
- ``search_runs`` over N runs of 5 params and 5 metrics each, loaded straight into each tool's
  tables (the same values for both), with a metric filter and an order: median and p95.
  MLflow and Shipyard only: Trackio has no search, and Aim's is not measured (see
  ``peers/aim_worker.py``).
- Run creation through the server (start and end of a run), runs per second; Shipyard's is the
  median of 5 repetitions (each takes it a second or two, MLflow half a minute). ``--runs-only``
  measures this row alone (each tool's server started once, no other workload).
- The server: seconds from start to healthy, idle RSS of the whole process tree and its number
  of processes, and a small GET on one kept-alive connection (wall time, and wall time beyond
  the server's own CPU time per request). MLflow is measured both as ``mlflow server`` starts
  by default (4 workers) and with ``--workers 1``, which the workloads use: with several
  workers its kept-alive responses wait for delayed ACKs (about 40 ms each).

Trackio and Aim keep their own stores whatever the database, so they are measured once and
shown in both tables. Prints one table per database, with Shipyard's ratio to MLflow and to the
fastest peer of each row, and writes every number to ``bench/results/tracking-*.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import _shipyard as shipyard_side
import psutil
from _common import (
    BENCH_DIR,
    REPO,
    Row,
    Server,
    format_table,
    free_port,
    fresh_pg_database,
    idle_footprint,
    keepalive_probe,
    median,
    p95,
    pg_analyze,
    run_json,
    wait_quiet,
)

ENVS = BENCH_DIR / ".envs"
MLFLOW_ENV = ENVS / "mlflow"
MLFLOW_PY = MLFLOW_ENV / "bin" / "python"
MLFLOW_WORKER = BENCH_DIR / "peers" / "mlflow_worker.py"
TRACKIO_PY = ENVS / "trackio" / "bin" / "python"
TRACKIO_WORKER = BENCH_DIR / "peers" / "trackio_worker.py"
AIM_ENV = ENVS / "aim"
AIM_PY = AIM_ENV / "bin" / "python"
AIM_WORKER = BENCH_DIR / "peers" / "aim_worker.py"
# Per peer: the specs tried in order (the newest release whose dependencies resolve, then the
# newest known to install here), the extras installed with it, and its version's package.
PEERS: dict[str, dict[str, Any]] = {
    "mlflow": {
        "specs": (["--upgrade", "mlflow"], ["mlflow==3.17.2"]),
        "extras": ["psycopg[binary]", "psycopg2-binary", "psutil"],
    },
    "trackio": {"specs": (["--upgrade", "trackio"], ["trackio==0.43.0"]), "extras": ["psutil"]},
    "aim": {"specs": (["--upgrade", "aim"], ["aim==3.29.1"]), "extras": []},
}
SHIPYARD_BIN = Path(sys.executable).parent / "shipyard"

FULL = {"log_metric": 100_000, "log_batch": 200_000, "create_runs": 500, "search_runs": 100_000}
QUICK = {"log_metric": 20_000, "log_batch": 20_000, "create_runs": 100, "search_runs": 10_000}
# The slowest peers get fewer calls, so one run of the bench stays within minutes; rates are
# per second either way, and the notes say how many calls each peer made.
PEER_CAPS = {
    "aim": {"log_metric": 10_000, "log_batch": 10_000, "create_runs": 20},
    "trackio": {"create_runs": 50},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the peers' environments -------------------------------------------------------------------


def env_python(name: str) -> Path:
    return ENVS / name / "bin" / "python"


def install_peer(name: str) -> None:
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is needed to build the peers' environments (pip install uv)")
    env = ENVS / name
    if not env_python(name).exists():
        subprocess.run([uv, "venv", "-q", "-p", "3.11", str(env)], check=True)
    for spec in PEERS[name]["specs"]:
        cmd = [uv, "pip", "install", "-q", "--compile-bytecode", "-p", str(env)]
        if subprocess.run([*cmd, *spec, *PEERS[name]["extras"]]).returncode == 0:
            return
        log(f"installing {' '.join(spec)} failed; trying the next")
    raise SystemExit(f"could not install {name} into bench/.envs/{name}")


def peer_version(name: str) -> str:
    out = subprocess.run(
        [
            str(env_python(name)),
            "-c",
            f"import importlib.metadata as m; print(m.version({name!r}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def mlflow_worker(*args: str, env: dict[str, str] | None = None) -> Any:
    return run_json([str(MLFLOW_PY), str(MLFLOW_WORKER), *args], env=env)


# Shipyard's run creation is measured this many times (the median is kept).
CREATE_RUNS_REPS = 5
# Set by --runs-only: each tool's server is started, run creation measured, and nothing else.
RUNS_ONLY = False
# Set by --batched-only: each tool's server is started, batched logging measured, nothing else.
BATCHED_ONLY = False


def capped(peer: str, counts: dict[str, int], what: str) -> int:
    return min(counts[what], PEER_CAPS.get(peer, {}).get(what, counts[what]))


# -- one database -------------------------------------------------------------------------------


def bench_shipyard(
    db_url: str, work: Path, counts: dict[str, int], reps: int, budget_s: float, kind: str
) -> dict[str, Any]:
    env = {"SHIPYARD_HOME": str(work / "home"), "SHIPYARD_DATABASE_URL": db_url}
    subprocess.run(
        [str(SHIPYARD_BIN), "db", "upgrade"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    port = free_port()
    out: dict[str, Any] = {}
    with Server(
        "shipyard",
        [str(SHIPYARD_BIN), "server", "--port", str(port)],
        port,
        "/healthz",
        env=env,
        log_path=work / "shipyard-server.log",
    ) as server:
        out["start_s"] = server.start()
        out["idle"] = idle_footprint(server)
        out["keepalive"] = keepalive_probe(server, "/healthz")
        log(f"shipyard: up in {out['start_s']:.2f}s, {out['idle']}")
        if BATCHED_ONLY:
            return out | shipyard_log_batch(server.url, counts["log_batch"])
        # Shipyard's runs take a second or two where MLflow's take half a minute: one spike of
        # the machine's load would decide a single short measurement, so it is repeated and
        # the median kept.
        runs = [
            shipyard_side.create_runs(server.url, counts["create_runs"])
            for _ in range(CREATE_RUNS_REPS)
        ]
        out["create_runs"] = sorted(runs, key=lambda r: r["runs_per_s"])[len(runs) // 2]
        out["create_runs_reps"] = [r["runs_per_s"] for r in runs]
        log(f"shipyard: create_runs {[round(r) for r in out['create_runs_reps']]}/s")
        if RUNS_ONLY:
            return out
        out["log_metric"] = shipyard_side.log_metric(server.url, counts["log_metric"])
        log(f"shipyard: log_metric {out['log_metric']}")
        out |= shipyard_log_batch(server.url, counts["log_batch"])
        out["log_metric_local"] = shipyard_side.log_metric_local(
            db_url, str(work / "home"), counts["log_metric"]
        )
        log(f"shipyard: log_metric in-process {out['log_metric_local']['points_per_s']:.0f}/s")
        out["populate"] = shipyard_side.populate(server.url, db_url, counts["search_runs"])
        if kind == "postgres":
            pg_analyze(db_url)
        log(f"shipyard: loaded {counts['search_runs']} runs in {out['populate']['load_s']:.1f}s")
        wait_quiet(server)
        out["search"] = shipyard_side.search(server.url, reps, budget_s)
        out["busy"] = {"rss_mb": server.footprint()[0] / 2**20}
        log(f"shipyard: search median {median(out['search']['times_s']) * 1000:.1f} ms")
    return out


def shipyard_log_batch(url: str, n: int) -> dict[str, Any]:
    modes = [
        shipyard_side.log_batch(url, n, 1000),
        shipyard_side.log_batch(url, n, 10_000),
        shipyard_side.log_metrics_buffered(url, n),
    ]
    log(f"shipyard: log_batch {[round(m['metrics_per_s']) for m in modes]}")
    return {"log_batch_modes": modes, "log_batch": max(modes, key=lambda m: m["metrics_per_s"])}


def bench_mlflow(
    db_url: str,
    work: Path,
    counts: dict[str, int],
    reps: int,
    budget_s: float,
    kind: str,
    workers: int,
) -> dict[str, Any]:
    art = work / "mlartifacts"
    mlflow_worker("init", "--db-uri", db_url, "--artifact-root", str(art))
    out: dict[str, Any] = {}

    def server(extra: list[str], tag: str) -> Server:
        port = free_port()
        argv = [str(MLFLOW_ENV / "bin" / "mlflow"), "server", "--backend-store-uri", db_url]
        argv += ["--artifacts-destination", str(art), "--host", "127.0.0.1", "--port", str(port)]
        return Server(
            f"mlflow ({tag})",
            argv + extra,
            port,
            "/health",
            env={"PATH": f"{MLFLOW_ENV / 'bin'}:{os.environ['PATH']}"},
            cwd=work,
            log_path=work / f"mlflow-{tag}.log",
        )

    # As a user starts it: the default number of workers.
    if not (RUNS_ONLY or BATCHED_ONLY):
        with server([], "default") as s:
            out["default"] = {"start_s": s.start()}
            out["default"]["idle"] = idle_footprint(s)
            out["default"]["keepalive"] = keepalive_probe(s, "/health")
            log(f"mlflow default: {out['default']}")

    # Its fastest set-up for one client: the workloads run against this one.
    with server(["--workers", str(workers)], f"{workers}w") as s:
        out["start_s"] = s.start()
        out["idle"] = idle_footprint(s)
        out["keepalive"] = keepalive_probe(s, "/health")
        log(f"mlflow {workers} worker(s): up in {out['start_s']:.1f}s, {out['keepalive']}")
        if BATCHED_ONLY:
            return out | mlflow_log_batch(s.url, counts["log_batch"])
        out["create_runs"] = mlflow_worker(
            "create-runs", "--uri", s.url, "--n", str(counts["create_runs"])
        )
        log(f"mlflow: create_runs {out['create_runs']['runs_per_s']:.0f}/s")
        if RUNS_ONLY:
            return out
        out["log_metric"] = mlflow_worker(
            "log-metric", "--uri", s.url, "--n", str(counts["log_metric"])
        )
        log(f"mlflow: log_metric {out['log_metric']}")
        out |= mlflow_log_batch(s.url, counts["log_batch"])
        out["log_metric_local"] = mlflow_worker(
            "log-metric", "--uri", db_url, "--n", str(counts["log_metric"])
        )
        log(f"mlflow: log_metric in-process {out['log_metric_local']['points_per_s']:.0f}/s")
        out["populate"] = mlflow_worker(
            "populate",
            "--uri",
            s.url,
            "--db-uri",
            db_url,
            "--artifact-root",
            str(art),
            "--runs",
            str(counts["search_runs"]),
        )
        if kind == "postgres":
            pg_analyze(db_url)
        log(f"mlflow: loaded {counts['search_runs']} runs in {out['populate']['load_s']:.1f}s")
        wait_quiet(s)
        out["search"] = mlflow_worker(
            "search",
            "--uri",
            s.url,
            "--experiment-id",
            out["populate"]["experiment_id"],
            "--reps",
            str(reps),
            "--budget-s",
            str(budget_s),
        )
        out["busy"] = {"rss_mb": s.footprint()[0] / 2**20}
        log(f"mlflow: search median {median(out['search']['times_s']) * 1000:.1f} ms")
    return out


def mlflow_log_batch(url: str, n: int) -> dict[str, Any]:
    modes = [
        mlflow_worker("log-batch", "--uri", url, "--n", str(n), "--mode", mode)
        for mode in ("sync", "async")
    ]
    log(f"mlflow: log_batch {[round(m['metrics_per_s']) for m in modes]}")
    return {"log_batch_modes": modes, "log_batch": max(modes, key=lambda m: m["metrics_per_s"])}


def _write_url(log_path: Path, timeout_s: float = 60.0) -> str:
    """The write URL Trackio's server prints once it is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_path.exists():
            for line in log_path.read_text(errors="replace").splitlines():
                if line.startswith("WRITE_URL "):
                    return line.split(" ", 1)[1].strip()
        time.sleep(0.1)
    raise RuntimeError(f"Trackio's server printed no write URL; see {log_path}")


def _workloads() -> list[tuple[str, str]]:
    """A peer's workloads through its server: (result key, worker command)."""
    every = [
        ("create_runs", "create-runs"),
        ("log_metric", "log-metric"),
        ("log_batch", "log-batch"),
    ]
    return every[:1] if RUNS_ONLY else every[2:] if BATCHED_ONLY else every


def bench_trackio(work: Path, counts: dict[str, int]) -> dict[str, Any]:
    """Trackio's server (its dashboard app), then the workloads through it and in-process."""
    store, local = work / "server-store", work / "local-store"
    store.mkdir(parents=True)
    local.mkdir()
    py, worker = str(TRACKIO_PY), str(TRACKIO_WORKER)

    def run(cmd: str, n: int, *where: str) -> Any:
        return run_json([py, worker, cmd, *where, "--n", str(n)])

    out: dict[str, Any] = {"counts": {}}
    port = free_port()
    log_path = work / "trackio-server.log"
    with Server(
        "trackio",
        [py, worker, "serve", "--port", str(port)],
        port,
        "/version",
        env={"TRACKIO_DIR": str(store), "GRADIO_ANALYTICS_ENABLED": "False"},
        log_path=log_path,
    ) as s:
        out["start_s"] = s.start()
        url = _write_url(log_path)
        out["idle"] = idle_footprint(s)
        out["keepalive"] = keepalive_probe(s, "/version")
        log(f"trackio: up in {out['start_s']:.2f}s, {out['idle']}")
        remote = ("--url", url, "--store", str(store))
        for what, cmd in _workloads():
            n = out["counts"][what] = capped("trackio", counts, what)
            out[what] = run(cmd, n, *remote)
            log(f"trackio: {what} {out[what]}")
        out["busy"] = {"rss_mb": s.footprint()[0] / 2**20}
    if RUNS_ONLY or BATCHED_ONLY:
        return out
    out["log_metric_local"] = run("log-metric", counts["log_metric"], "--store", str(local))
    log(f"trackio: log_metric in-process {out['log_metric_local']['points_per_s']:.0f}/s")
    return out


def bench_aim(work: Path, counts: dict[str, int]) -> dict[str, Any]:
    """Aim's remote tracking server (``aim server``), then the workloads through it and into an
    embedded repository."""
    aim = str(AIM_ENV / "bin" / "aim")
    repo, local = work / "server-repo", work / "local-repo"
    for d in (repo, local):
        d.mkdir(parents=True)
        subprocess.run([aim, "init", "--repo", str(d)], check=True, capture_output=True)
    py, worker = str(AIM_PY), str(AIM_WORKER)

    def run(cmd: str, n: int, where: str) -> Any:
        return run_json([py, worker, cmd, "--repo", where, "--n", str(n)])

    out: dict[str, Any] = {"counts": {}}
    port = free_port()
    argv = [aim, "server", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port), "-y"]
    with Server("aim", argv, port, "/status", log_path=work / "aim-server.log") as s:
        out["start_s"] = s.start()
        out["idle"] = idle_footprint(s)
        out["keepalive"] = keepalive_probe(s, "/status")
        log(f"aim: up in {out['start_s']:.2f}s, {out['idle']}")
        for what, cmd in _workloads():
            n = out["counts"][what] = capped("aim", counts, what)
            out[what] = run(cmd, n, f"aim://127.0.0.1:{port}")
            log(f"aim: {what} {out[what]}")
        out["busy"] = {"rss_mb": s.footprint()[0] / 2**20}
    if RUNS_ONLY or BATCHED_ONLY:
        return out
    out["log_metric_local"] = run("log-metric", capped("aim", counts, "log_metric"), str(local))
    log(f"aim: log_metric in-process {out['log_metric_local']['points_per_s']:.0f}/s")
    return out


def bench_database(
    kind: str, counts: dict[str, int], reps: int, budget_s: float, mlflow_workers: int
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tracking-")))
        for d in ("shipyard", "mlflow"):
            (work / d).mkdir()
        if kind == "sqlite":
            sy_url = f"sqlite:///{work / 'shipyard' / 'shipyard.db'}"
            ml_url = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
        else:
            sy_url = stack.enter_context(fresh_pg_database("bench_shipyard"))
            ml_url = stack.enter_context(fresh_pg_database("bench_mlflow"))
        load_before = os.getloadavg()
        log(f"== {kind}: Shipyard (load average {load_before[0]:.1f})")
        sy_res = bench_shipyard(sy_url, work / "shipyard", counts, reps, budget_s, kind)
        log(f"== {kind}: MLflow")
        ml_res = bench_mlflow(ml_url, work / "mlflow", counts, reps, budget_s, kind, mlflow_workers)
        if os.environ.get("BENCH_KEEP_LOGS"):
            shutil.copytree(work, BENCH_DIR / "results" / f"logs-{kind}", dirs_exist_ok=True)
    return {
        "shipyard": sy_res,
        "mlflow": ml_res,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }


# -- the table ----------------------------------------------------------------------------------


def _get(res: dict[str, Any] | None, *path: str) -> Any:
    for k in path:
        if res is None:
            return None
        res = res.get(k)
    return res


def rows_for(
    res: dict[str, Any], peers: dict[str, Any], counts: dict[str, int], mlflow_workers: int
) -> list[Row]:
    sy, ml = res["shipyard"], res["mlflow"]
    tr, am = peers.get("trackio"), peers.get("aim")
    rows: list[Row] = []

    def others(*path: str) -> dict[str, float | None]:
        return {"Trackio": _get(tr, *path), "Aim": _get(am, *path)}

    def calls(what: str) -> str:
        made = [
            f"{name} {p['counts'][what]:,}"
            for name, p in (("Trackio", tr), ("Aim", am))
            if p and p["counts"].get(what, counts[what]) != counts[what]
        ]
        return f"; calls made: {', '.join(made)} (the others {counts[what]:,})" if made else ""

    def three_x_trackio(r: Row) -> bool:
        trackio = r.peers.get("Trackio")
        return r.shipyard is not None and (not trackio or r.shipyard >= 3 * trackio)

    def batched_row() -> Row:
        mb, sb = ml["log_batch"], sy["log_batch"]
        r = Row(
            "batched logging via server",
            mb["metrics_per_s"],
            sb["metrics_per_s"],
            "metrics/s",
            "higher",
            "≥10x MLflow, ≥3x Trackio",
            peers=others("log_batch", "metrics_per_s"),
        )
        r.met = r.ratio is not None and r.ratio >= 10 and three_x_trackio(r)
        r.note = (
            f"best of each: MLflow log_batch {mb['mode']} x{mb['batch_size']}; Trackio and Aim "
            f"a dict of 10 per call; Shipyard {sb['mode']}"
            f"{' x' + str(sb['batch_size']) if 'batch_size' in sb else ''}; all modes: "
            + ", ".join(
                f"MLflow {m['mode']} {m['metrics_per_s']:,.0f}/s" for m in ml["log_batch_modes"]
            )
            + "; "
            + ", ".join(
                f"Shipyard {m['mode']}{' x' + str(m['batch_size']) if 'batch_size' in m else ''} "
                f"{m['metrics_per_s']:,.0f}/s"
                for m in sy["log_batch_modes"]
            )
            + calls("log_batch")
        )
        return r

    if BATCHED_ONLY:
        return [batched_row()]

    creation = Row(
        "run created and ended via server",
        ml["create_runs"]["runs_per_s"],
        sy["create_runs"]["runs_per_s"],
        "runs/s",
        "higher",
        "≥10x fastest peer",
        peers=others("create_runs", "runs_per_s"),
    )
    creation.met = creation.ratio_fastest is not None and creation.ratio_fastest >= 10
    creation.note = (
        f"Shipyard: median of {len(sy['create_runs_reps'])} repetitions "
        f"({', '.join(f'{r:,.0f}' for r in sy['create_runs_reps'])} runs/s)" + calls("create_runs")
    )
    if RUNS_ONLY:
        return [creation]

    lm = ("log_metric", "points_per_s")
    r = Row(
        f"log_metric x{counts['log_metric']:,} via server, until durable",
        ml["log_metric"]["points_per_s"],
        sy["log_metric"]["points_per_s"],
        "points/s",
        "higher",
        "≥10x MLflow, ≥3x Trackio",
        peers=others(*lm),
    )
    r.met = r.ratio is not None and r.ratio >= 10 and three_x_trackio(r)
    r.note = (
        f"per call in the loop: MLflow {ml['log_metric']['per_call_us']:.1f} µs, "
        + "".join(
            f"{name} {p['log_metric']['per_call_us']:.1f} µs, "
            for name, p in (("Trackio", tr), ("Aim", am))
            if p
        )
        + f"Shipyard {sy['log_metric']['per_call_us']:.1f} µs"
        + calls("log_metric")
    )
    rows.append(r)

    lml = ("log_metric_local", "points_per_s")
    r = Row(
        "  same, in-process (embedded store)",
        _get(ml, *lml),
        _get(sy, *lml),
        "points/s",
        "higher",
        peers=others(*lml),
    )
    r.note = (
        "no server: Shipyard's and MLflow's SDKs straight on the database, Trackio's local "
        "SQLite, Aim's embedded repository"
    )
    rows.append(r)

    rows.append(batched_row())

    ms, ss = ml["search"]["times_s"], sy["search"]["times_s"]
    n_runs = f"{counts['search_runs']:,}"
    r = Row(
        f"search_runs over {n_runs} runs, median",
        median(ms) * 1000,
        median(ss) * 1000,
        "ms",
        "lower",
        "≤50 ms, ≥10x MLflow",
        peers={"Trackio": None, "Aim": None},
    )
    r.met = r.ratio is not None and r.ratio >= 10 and median(ss) <= 0.050
    same = ml["search"]["top_names"] == sy["search"]["top_names"]
    r.note = (
        f"repetitions: MLflow {len(ms)}, Shipyard {len(ss)}; both returned "
        f"{sy['search']['returned']} runs; top 10 identical in both: {'yes' if same else 'NO'}; "
        "Trackio has no search; Aim's is not measured (its SDK creates about 5 runs a second, "
        "so loading the runs would take hours)"
    )
    rows.append(r)
    rows.append(
        Row(
            f"search_runs over {n_runs} runs, p95",
            p95(ms) * 1000,
            p95(ss) * 1000,
            "ms",
            "lower",
            peers={"Trackio": None, "Aim": None},
        )
    )

    rows.append(creation)

    d = ml["default"]
    r = Row(
        "server start to healthy",
        d["start_s"],
        sy["start_s"],
        "s",
        "lower",
        "<1.5 s (≤3 s)",
        peers=others("start_s"),
    )
    r.met = sy["start_s"] < 1.5
    r.note = f"MLflow with --workers {mlflow_workers}: {ml['start_s']:.1f} s"
    rows.append(r)
    r = Row(
        "server idle RSS, whole tree",
        d["idle"]["rss_mb"],
        sy["idle"]["rss_mb"],
        "MiB",
        "lower",
        "≤Trackio's (<300 MB)",
        peers=others("idle", "rss_mb"),
    )
    trackio_rss = r.peers.get("Trackio")
    r.met = sy["idle"]["rss_mb"] * 2**20 < 300e6 and (
        not trackio_rss or sy["idle"]["rss_mb"] <= trackio_rss
    )
    r.note = (
        f"MLflow with --workers {mlflow_workers}: {ml['idle']['rss_mb']:.0f} MiB; after the "
        f"workloads: MLflow {ml['busy']['rss_mb']:.0f} MiB, "
        + "".join(
            f"{name} {p['busy']['rss_mb']:.0f} MiB, "
            for name, p in (("Trackio", tr), ("Aim", am))
            if p
        )
        + f"Shipyard {sy['busy']['rss_mb']:.0f} MiB"
    )
    rows.append(r)
    r = Row(
        "server processes",
        d["idle"]["processes"],
        sy["idle"]["processes"],
        "count",
        "lower",
        peers=others("idle", "processes"),
    )
    r.note = f"MLflow with --workers {mlflow_workers}: {ml['idle']['processes']}"
    rows.append(r)

    ka_d, ka_1, ka_s = d["keepalive"], ml["keepalive"], sy["keepalive"]
    r = Row(
        "kept-alive small GET, median",
        ka_d["median_ms"],
        ka_s["median_ms"],
        "ms",
        "lower",
        peers=others("keepalive", "median_ms"),
    )
    r.note = (
        f"MLflow --workers {mlflow_workers}: {ka_1['median_ms']:.3f} ms; p95 MLflow default "
        f"{ka_d['p95_ms']:.3f}, Shipyard {ka_s['p95_ms']:.3f} ms; server CPU per request "
        f"MLflow {ka_1['server_cpu_ms']:.3f}, Shipyard {ka_s['server_cpu_ms']:.3f} ms"
    )
    rows.append(r)
    r = Row(
        f"  same, beyond server CPU (MLflow --workers {mlflow_workers})",
        ka_1["beyond_work_ms"],
        ka_s["beyond_work_ms"],
        "ms",
        "lower",
        "<1 ms",
        peers=others("keepalive", "beyond_work_ms"),
    )
    r.met = ka_s["beyond_work_ms"] < 1.0
    rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument(
        "--peers",
        default="trackio,aim",
        help="peers besides MLflow (always run): a comma-separated subset of trackio,aim, "
        "or 'none'",
    )
    ap.add_argument(
        "--skip-install", action="store_true", help="use the peers' environments as they are"
    )
    ap.add_argument(
        "--runs-only",
        action="store_true",
        help="measure run creation alone (the servers start, nothing else runs)",
    )
    ap.add_argument(
        "--batched-only",
        action="store_true",
        help="measure batched logging alone (the servers start, nothing else runs)",
    )
    ap.add_argument(
        "--create-runs", type=int, default=None, help="runs each tool creates (before peer caps)"
    )
    ap.add_argument("--reps", type=int, default=None, help="search repetitions (default 25)")
    ap.add_argument(
        "--search-budget-s",
        type=float,
        default=600,
        help="seconds each tool may spend on search repetitions (at least one is run)",
    )
    ap.add_argument(
        "--mlflow-workers",
        type=int,
        default=1,
        help="workers of the MLflow server the workloads run against (default 1, its fastest)",
    )
    args = ap.parse_args()
    counts = dict(QUICK if args.quick else FULL)
    if args.create_runs:
        counts["create_runs"] = args.create_runs
    global RUNS_ONLY, BATCHED_ONLY
    RUNS_ONLY, BATCHED_ONLY = args.runs_only, args.batched_only
    reps = args.reps or 25
    extra = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",") if p]
    unknown = set(extra) - {"trackio", "aim"}
    if unknown:
        ap.error(f"--peers: unknown {', '.join(sorted(unknown))} (expected trackio, aim)")

    versions = {}
    for name in ["mlflow", *extra]:
        if args.skip_install:
            if not env_python(name).exists():
                raise SystemExit(f"bench/.envs/{name} does not exist: run without --skip-install")
        else:
            log(f"installing {name} into bench/.envs/{name}")
            install_peer(name)
        versions[name] = peer_version(name)
    log(f"versions: {versions}")

    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results: dict[str, Any] = {
        "benchmark": "tracking",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "counts": counts,
        "peer_caps": PEER_CAPS,
        "search_reps": reps,
        "search_budget_s": args.search_budget_s,
        "load_average_at_start": os.getloadavg(),
        "versions": versions,
        "mlflow_workers": args.mlflow_workers,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "peers": {},
        "databases": {},
    }

    # Trackio and Aim keep their own stores whatever the database: measured once.
    def measure_peers() -> dict[str, Any]:
        peers: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="bench-tracking-peers-") as tmp:
            for name, fn in (("trackio", bench_trackio), ("aim", bench_aim)):
                if name in extra:
                    load = os.getloadavg()[0]
                    log(f"== {name} (load average {load:.1f})")
                    peers[name] = fn(Path(tmp) / name, counts) | {"load_average_before": load}
        return peers

    # With --batched-only the peers take seconds, so they are measured again just before
    # Shipyard on each database: on a shared machine the load an earlier measurement met can
    # differ several-fold from the load Shipyard meets minutes later.
    peers = {} if BATCHED_ONLY else measure_peers()
    results["peers"] = peers

    names = [n for n, key in (("Trackio", "trackio"), ("Aim", "aim")) if key in extra]
    title_peers = ", ".join(
        f"{label} {versions[key]}"
        for label, key in (("Trackio", "trackio"), ("Aim", "aim"))
        if key in extra
    )
    for kind in kinds:
        if BATCHED_ONLY:
            peers = results["peers"][kind] = measure_peers()
        res = bench_database(kind, counts, reps, args.search_budget_s, args.mlflow_workers)
        rows = rows_for(res, peers, counts, args.mlflow_workers)
        res["rows"] = [
            asdict(r) | {"ratio": r.ratio, "ratio_fastest": r.ratio_fastest} for r in rows
        ]
        results["databases"][kind] = res
        load = res["load_average"]
        title = (
            f"Tracking, {kind} — MLflow {versions['mlflow']}"
            + (f", {title_peers}" if title_peers else "")
            + f" vs Shipyard (ratio > 1: Shipyard better); {os.cpu_count()} CPUs, 1-min load "
            f"average {load['before'][0]:.1f} before, {load['after'][0]:.1f} after"
        )
        print(format_table(title, rows, names) + "\n", flush=True)

    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"tracking-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
