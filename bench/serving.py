"""Real-time serving, side by side: a Shipyard endpoint against the model servers a user would
otherwise pick, in one run on one machine.

    .venv/bin/python bench/serving.py [--quick] [--skip-install] [--peers a,b] [--duration S]

The same two scikit-learn models (a LogisticRegression and a 100-tree RandomForest on 20
features, fitted once here with a fixed seed) are served, one server at a time, by:

- ``shipyard``: registered with the SDK (``sy.log_model(..., registered_model_name=...)``)
  through a ``shipyard server``, then deployed with ``client.create_endpoint`` as a user does;
  the endpoint's own process (the runtime the platform started) is what is measured.
  ``shipyard-2w`` is the same endpoint with two worker processes (``scaling``).
- ``fastapi``: the reference, a bare FastAPI app holding the model on ``uvicorn[standard]``;
- ``mlflow``: ``mlflow models serve --env-manager local`` (MLflow 3.17.2);
- ``bentoml``: a BentoML service with adaptive batching;
- ``pytriton``: NVIDIA PyTriton (Triton's server, on CPU) with its dynamic batcher;
- ``litserve``: LitServe with batching;
- ``mlserver``: MLServer with adaptive batching (``mlserver-sklearn``).

Every peer lives in its own virtual environment under ``bench/.envs/serve-*`` (built with uv,
the same scikit-learn as Shipyard's, so the same pickled model loads everywhere). ``wrk`` posts
single-row JSON requests in each server's own format at concurrency 1 and 32. Per server and
model: p50, p99, requests per second, the cold start (process start to the first successful
prediction; the median of three starts) and the RSS of the server's whole process tree after
the load. After every server's turn, the reference's and Shipyard's cold starts are taken again
in turns (reference, Shipyard, Shipyard, reference, ...), so that the machine's drifting load
weighs on both alike. Then each server's
ratio to the reference, Shipyard's ratio to the fastest peer per column, and the goals of the
serving issues, met or not. ``log_model`` plus registration is timed for Shipyard and MLflow,
each through its own server. Every number goes to ``bench/results/serving-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from _common import BENCH_DIR, Server, free_port, run_json, wait_quiet
from _serving import (
    BenchModel,
    Request,
    cold_starts,
    install_wrk,
    interleaved_cold_starts,
    oip_request,
    run_wrk,
    split_request,
    train_models,
    tree_cpu_s,
    tree_memory,
    write_lua,
    wrk_path,
)

ENVS = BENCH_DIR / ".envs"
PEERS_DIR = BENCH_DIR / "peers"
SHIPYARD_BIN = Path(sys.executable).parent / "shipyard"
SKLEARN = "scikit-learn==" + __import__("sklearn").__version__

# name -> (environment folder, packages). MLServer's workers crash on uvloop 0.23.
PEER_ENVS: dict[str, tuple[str, list[str]]] = {
    "fastapi": ("serve-fastapi", ["fastapi", "uvicorn[standard]"]),
    "mlflow": ("serve-mlflow", ["mlflow==3.17.2"]),
    "bentoml": ("serve-bentoml", ["bentoml==1.4.39"]),
    "pytriton": ("serve-pytriton", ["nvidia-pytriton"]),
    "litserve": ("serve-litserve", ["litserve==0.2.19"]),
    "mlserver": ("serve-mlserver", ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]),
}
ALL = [
    "fastapi",
    "fastapi-sy",
    "shipyard",
    "shipyard-2w",
    "mlflow",
    "bentoml",
    "pytriton",
    "litserve",
    "mlserver",
]
SHIPYARDS = {"shipyard": None, "shipyard-2w": {"min_workers": 2, "max_workers": 2}}
REFERENCE = "fastapi"
LABELS = {
    "shipyard": "Shipyard endpoint",
    "shipyard-2w": "Shipyard, 2 workers",
    "fastapi": "bare FastAPI (reference)",
    "fastapi-sy": "bare FastAPI, Shipyard's env",
    "mlflow": "mlflow models serve",
    "bentoml": "BentoML, adaptive batching",
    "pytriton": "PyTriton, dynamic batching",
    "litserve": "LitServe, batching",
    "mlserver": "MLServer, adaptive batching",
}
# Peers' models are fitted on a DataFrame and predicted on arrays: no warning per request.
PEER_ENV = {"PYTHONWARNINGS": "ignore::UserWarning", "BENTOML_DO_NOT_TRACK": "True"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_dir(peer: str) -> Path:
    return ENVS / PEER_ENVS[peer][0]


def env_bin(peer: str, exe: str = "python") -> str:
    if peer == "fastapi-sy":
        return str(Path(sys.executable).parent / exe)
    return str(env_dir(peer) / "bin" / exe)


def path_env(peer: str) -> dict[str, str]:
    return {**PEER_ENV, "PATH": f"{env_dir(peer) / 'bin'}:{os.environ['PATH']}"}


# -- environments -------------------------------------------------------------------------------


def install(peers: list[str]) -> dict[str, str]:
    """Build each peer's environment with uv; return the problems (peer -> why)."""
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is needed to build the peers' environments (pip install uv)")
    install_wrk()
    failed: dict[str, str] = {}
    for peer in peers:
        if peer not in PEER_ENVS:
            continue
        folder, pkgs = PEER_ENVS[peer]
        target = ENVS / folder
        if not (target / "bin" / "python").exists():
            subprocess.run([uv, "venv", "-q", "-p", "3.11", str(target)], check=True)
        log(f"installing {' '.join(pkgs)} into bench/.envs/{folder}")
        cmd = [uv, "pip", "install", "-q", "--compile-bytecode", "-p", str(target)]
        out = subprocess.run([*cmd, *pkgs, SKLEARN, "psutil"], capture_output=True, text=True)
        if out.returncode != 0:
            failed[peer] = out.stderr.strip()[-800:]
            log(f"{peer}: install failed: {failed[peer]}")
    return failed


def version_of(peer: str, dist: str) -> str:
    out = subprocess.run(
        [env_bin(peer), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


# -- the peers: how each starts, and the request it takes -----------------------------------------


@dataclass
class Setup:
    server: Server
    request: Request


def peer_setup(peer: str, m: BenchModel, work: Path) -> Setup:
    port = free_port()
    logf = work / "logs" / f"{peer}-{m.key}.log"
    py = env_bin(peer)
    env = dict(PEER_ENV)
    cwd: Path | None = work
    one = {"x": [m.row]}
    if peer in ("fastapi", "fastapi-sy"):
        # fastapi-sy: the same app in Shipyard's environment (the libraries Shipyard has).
        argv = [
            py,
            str(PEERS_DIR / "serve_fastapi.py"),
            "--model",
            str(m.path),
            "--port",
            str(port),
        ]
        req = Request("/predict", json.dumps(one).encode(), lambda d: d["predictions"][0])
    elif peer == "litserve":
        argv = [py, str(PEERS_DIR / "serve_litserve.py"), "--model", str(m.path)]
        argv += ["--port", str(port)]
        body = json.dumps({"x": m.row}).encode()
        req = Request("/predict", body, lambda d: d["prediction"])
    elif peer == "bentoml":
        argv = [env_bin(peer, "bentoml"), "serve", "serve_bentoml:SklearnService"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        env |= path_env(peer) | {
            "BENCH_MODEL": str(m.path),
            "BENTOML_HOME": str(work / "bentoml-home"),
        }
        cwd = PEERS_DIR
        req = Request("/predict", json.dumps(one).encode(), lambda d: d[0])
    elif peer == "pytriton":
        argv = [py, str(PEERS_DIR / "serve_pytriton.py"), "--model", str(m.path)]
        argv += ["--port", str(port), "--grpc-port", str(free_port())]
        argv += ["--metrics-port", str(free_port())]
        # Triton's Python stub loads a libpython: the interpreter's own must come first.
        lib = Path(sys.base_prefix) / "lib"
        env["LD_LIBRARY_PATH"] = f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":")
        req = oip_request("/v2/models/model/infer", "x", m.row)
    elif peer == "mlserver":
        root = work / f"mlserver-{m.key}"
        (root / "model").mkdir(parents=True, exist_ok=True)
        shutil.copy(m.path, root / "model" / "model.joblib")
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
        }
        (root / "settings.json").write_text(json.dumps(settings))
        model_settings = {
            "name": "model",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib"},
            "max_batch_size": 64,
            "max_batch_time": 0.001,
        }
        (root / "model" / "model-settings.json").write_text(json.dumps(model_settings))
        argv = [env_bin(peer, "mlserver"), "start", str(root)]
        env |= path_env(peer)
        req = oip_request("/v2/models/model/infer", "predict", m.row)
    elif peer == "mlflow":
        folder = work / f"mlflow-model-{m.key}"
        if not folder.exists():
            run_json(
                [py, str(PEERS_DIR / "mlflow_serving.py"), "save", "--model", str(m.path)]
                + ["--example", str(m.example_path), "--out", str(folder)],
                env=PEER_ENV,
            )
        argv = [env_bin(peer, "mlflow"), "models", "serve", "-m", str(folder)]
        argv += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
        env |= path_env(peer)
        req = split_request(m.row)
    else:
        raise ValueError(peer)
    server = Server(peer, argv, port, "/", env=env, cwd=cwd, log_path=logf)
    return Setup(server, req)


# -- one server under load ----------------------------------------------------------------------


@dataclass
class Durations:
    warmup_s: float
    measure_s: float


def under_load(
    name: str, port: int, request: Request, lua: Path, d: Durations, root_pid: int
) -> dict[str, Any]:
    """Warm up, then concurrency 1 and 32; the tree's memory after the load."""
    out: dict[str, Any] = {}
    run_wrk(port, request.path, lua, 32, d.warmup_s)
    for c in (1, 32):
        cpu0 = tree_cpu_s(root_pid)
        load = run_wrk(port, request.path, lua, c, d.measure_s)
        out[f"c{c}"] = asdict(load)
        # What a request costs the server's whole tree in CPU: robust to a busy machine.
        cpu = (tree_cpu_s(root_pid) - cpu0) * 1000 / max(load.requests, 1)
        out[f"c{c}"]["server_cpu_ms_per_req"] = cpu
        log(
            f"  {name} c={c}: p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
            f"{load.rps:,.0f} req/s, {cpu:.2f} CPU ms/req, {load.errors} errors, "
            f"load {load.loadavg}"
        )
    out["memory"] = tree_memory(root_pid)
    return out


def bench_peer(
    peer: str, models: dict[str, BenchModel], work: Path, d: Durations
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, m in models.items():
        setup = peer_setup(peer, m, work)
        lua = write_lua(work / f"{peer}-{key}.lua", setup.request.body)
        try:
            with setup.server as s:
                cold, cold_cpu, colds = cold_starts(s, setup.request, m.expected)
                log(f"{peer} {key}: first prediction {cold:.2f} s after start (median of {colds})")
                assert s.proc is not None
                res = under_load(f"{peer} {key}", s.port, setup.request, lua, d, s.proc.pid)
                res["cold_start_s"] = cold
                res["cold_start_cpu_s"] = cold_cpu
                res["cold_start_samples_s"] = colds
                setup.request.check(s.port, m.expected)
                out[key] = res
        except Exception as e:  # one peer failing must not lose the others' numbers
            log(f"{peer} {key}: FAILED: {e}")
            out[key] = {"error": str(e)[-1500:]}
    return out


# -- Shipyard: registered and deployed through the platform ---------------------------------------


def bench_shipyard(
    models: dict[str, BenchModel], work: Path, d: Durations, rows: list[str], reps: int
) -> dict[str, Any]:
    import shipyard as sy

    home = work / "shipyard-home"
    port = free_port()
    server = Server(
        "shipyard server",
        [str(SHIPYARD_BIN), "server", "--port", str(port)],
        port,
        "/healthz",
        env={"SHIPYARD_HOME": str(home)},
        log_path=work / "logs" / "shipyard-server.log",
    )
    out: dict[str, Any] = {"log_model": {}, "zero": {}}
    with server:
        server.start()
        sy.init(project="serving-bench", tracking_uri=server.url)
        client = sy.get_client()
        versions: dict[str, str] = {}
        for key, m in models.items():
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                with sy.start_run(experiment="serving-bench"):
                    logged = sy.log_model(
                        m.model, "model", input_example=m.example, registered_model_name=f"b-{key}"
                    )
                times.append(time.perf_counter() - t0)
            assert logged.registered_version is not None
            versions[key] = str(logged.registered_version.version)
            out["log_model"][key] = {"times_s": times}
            log(f"shipyard log_model+register {key}: {[round(t, 3) for t in times]} s")
        for row in rows:
            out[row] = {}
            for key, m in models.items():
                try:
                    out[row][key] = _shipyard_endpoint(
                        client, row, m, versions[key], work, d, SHIPYARDS[row]
                    )
                except Exception as e:
                    log(f"{row} {key}: FAILED: {e}")
                    out[row][key] = {"error": str(e)[-1500:]}
        for key, m in models.items():
            try:
                out["zero"][key] = _scale_from_zero(client, m, versions[key])
                log(f"shipyard {key}: scale from zero {out['zero'][key]}")
            except Exception as e:
                log(f"shipyard {key} scale from zero: FAILED: {e}")
                out["zero"][key] = {"error": str(e)[-1500:]}
        out["control_plane_rss_mb"] = tree_memory(server.proc.pid)["rss_mb"] if server.proc else 0
    return out


def _shipyard_endpoint(
    client: Any,
    row: str,
    m: BenchModel,
    version: str,
    work: Path,
    d: Durations,
    scaling: dict[str, Any] | None,
) -> dict[str, Any]:
    name = f"{row}-{m.key}"
    request = split_request(m.row)
    t0 = time.perf_counter()
    ep = client.create_endpoint(name, f"b-{m.key}/{version}", scaling=scaling)
    assert ep.url is not None and ep.pid is not None
    port = urlparse(ep.url).port
    assert port is not None
    request.check(port, m.expected)
    created = time.perf_counter() - t0
    log(f"{row} {m.key}: create_endpoint to first prediction {created:.2f} s (pid {ep.pid})")
    lua = write_lua(work / f"{row}-{m.key}.lua", request.body)
    try:
        res = under_load(f"{row} {m.key}", port, request, lua, d, ep.pid)
        request.check(port, m.expected)
        res["create_to_first_prediction_s"] = created
        # The cold start, measured as for the peers: the runtime process the platform runs,
        # started on the config file the platform wrote, until its first prediction.
        cfg = next(work.rglob(f"{ep.id}/config.json"))
        # Kept for the interleaved cold starts after every server's turn (see main).
        kept = work / "cold" / f"{row}-{m.key}" / "config.json"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cfg, kept)
        res["cold_config"] = str(kept)
        direct_port = free_port()
        direct = Server(
            f"{row} runtime",
            [sys.executable, "-m", "shipyard.serving.runtime", "--config", str(cfg)]
            + ["--port", str(direct_port)],
            direct_port,
            "/ping",
            cwd=cfg.parent,
            log_path=work / "logs" / f"{row}-{m.key}-direct.log",
        )
        with direct:
            cold, cold_cpu, colds = cold_starts(direct, request, m.expected)
            res["cold_start_s"], res["cold_start_cpu_s"] = cold, cold_cpu
            res["cold_start_samples_s"] = colds
            res["direct_idle_memory"] = tree_memory(direct.proc.pid) if direct.proc else {}
        log(f"{row} {m.key}: runtime process start to first prediction {res['cold_start_s']:.2f} s")
    finally:
        client.delete_endpoint(name)
    return res


def cold_starts_in_turns(
    models: dict[str, BenchModel], work: Path, results: dict[str, dict[str, Any]]
) -> None:
    """The reference and each Shipyard row started in turns, per model (``interleaved_cold_starts``),
    into ``results[server][model]["cold_interleaved"]``. The Shipyard server is gone by now:
    its endpoints' runtime is started on the config the platform wrote (the models it names
    stay in the registry's cache of the working folder)."""
    for key, m in models.items():
        ref = results.get(REFERENCE, {}).get(key, {})
        rows = [
            (row, Path(cfg))
            for row in SHIPYARDS
            if (cfg := results.get(row, {}).get(key, {}).get("cold_config")) and Path(cfg).exists()
        ]
        if "error" in ref or REFERENCE not in results or not rows:
            continue
        setup = peer_setup(REFERENCE, m, work)
        servers = [(setup.server, setup.request)]
        for row, cfg in rows:
            port = free_port()
            argv = [sys.executable, "-m", "shipyard.serving.runtime", "--config", str(cfg)]
            server = Server(
                f"{row} runtime",
                [*argv, "--port", str(port)],
                port,
                "/ping",
                cwd=cfg.parent,
                log_path=work / "logs" / f"{row}-{key}-turns.log",
            )
            servers.append((server, split_request(m.row)))
        try:
            got = interleaved_cold_starts(servers, m.expected)
        except Exception as e:  # the other numbers stand without this one
            log(f"cold starts in turns {key}: FAILED: {e}")
            continue
        names = [REFERENCE, *(row for row, _ in rows)]
        for name, g in zip(names, got, strict=True):
            results[name][key]["cold_interleaved"] = g
        log(
            f"cold starts in turns {key}: "
            + ", ".join(
                f"{n} {g['median_s']:.2f} s (CPU {g['cpu_median_s']:.2f}; "
                f"{[round(x, 2) for x in g['samples_s']]})"
                for n, g in zip(names, got, strict=True)
            )
        )


def _scale_from_zero(client: Any, m: BenchModel, version: str) -> dict[str, Any]:
    """An endpoint that scales to zero workers after 1 s idle: the next request's wall time."""
    name = f"zero-{m.key}"
    request = split_request(m.row)
    scaling = {"min_workers": 0, "max_workers": 1, "idle_to_zero_s": 1.0}
    ep = client.create_endpoint(name, f"b-{m.key}/{version}", scaling=scaling)
    try:
        port = urlparse(ep.url).port
        request.check(port, m.expected)
        deadline = time.monotonic() + 20
        workers = None
        while time.monotonic() < deadline:
            time.sleep(0.5)
            workers = client.get_endpoint(name).workers
            if workers == 0:
                break
        t0 = time.perf_counter()
        request.check(port, m.expected)
        took = time.perf_counter() - t0
        return {"workers_before": workers, "first_request_s": took}
    finally:
        client.delete_endpoint(name)


# -- MLflow's log_model + registration ------------------------------------------------------------


def bench_mlflow_log_model(models: dict[str, BenchModel], work: Path, reps: int) -> dict[str, Any]:
    port = free_port()
    argv = [env_bin("mlflow", "mlflow"), "server", "--backend-store-uri"]
    argv += [f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination", str(work / "mlart")]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = Server(
        "mlflow server",
        argv,
        port,
        "/health",
        env=path_env("mlflow"),
        cwd=work,
        log_path=work / "logs" / "mlflow-server.log",
    )
    out: dict[str, Any] = {}
    with server:
        server.start()
        wait_quiet(server, min_s=1.0, max_s=30.0)
        for key, m in models.items():
            out[key] = run_json(
                [env_bin("mlflow"), str(PEERS_DIR / "mlflow_serving.py"), "log"]
                + ["--tracking-uri", server.url, "--model", str(m.path)]
                + ["--example", str(m.example_path), "--name", f"b-{key}", "--reps", str(reps)],
                env=PEER_ENV,
            )
            log(f"mlflow log_model+register {key}: {[round(t, 2) for t in out[key]['times_s']]}")
    return out


# -- the tables ---------------------------------------------------------------------------------

COLUMNS: list[tuple[str, str, Callable[[dict[str, Any]], float | None], str]] = [
    ("c=1 p50 ms", "c1_p50", lambda r: r["c1"]["p50_ms"], "lower"),
    ("c=1 p99 ms", "c1_p99", lambda r: r["c1"]["p99_ms"], "lower"),
    ("c=1 req/s", "c1_rps", lambda r: r["c1"]["rps"], "higher"),
    ("c=32 p50 ms", "c32_p50", lambda r: r["c32"]["p50_ms"], "lower"),
    ("c=32 p99 ms", "c32_p99", lambda r: r["c32"]["p99_ms"], "lower"),
    ("c=32 req/s", "c32_rps", lambda r: r["c32"]["rps"], "higher"),
    ("c=32 CPU ms/req", "c32_cpu", lambda r: r["c32"].get("server_cpu_ms_per_req"), "lower"),
    ("cold start s", "cold", lambda r: r.get("cold_start_s"), "lower"),
    ("cold start CPU s", "cold_cpu", lambda r: r.get("cold_start_cpu_s"), "lower"),
    ("RSS MB", "rss", lambda r: r["memory"]["rss_mb"], "lower"),
]


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 10_000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def grid(head: list[str], body: list[list[str]], left: int = 1) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i < left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(head), sep, *(line(b) for b in body)]


def values(res: dict[str, Any]) -> dict[str, float | None]:
    if "error" in res or "c1" not in res:
        return {}
    out: dict[str, float | None] = {"c1_cpu": res["c1"].get("server_cpu_ms_per_req")}
    turns = res.get("cold_interleaved") or {}
    out["cold_turns"] = turns.get("median_s")
    out["cold_turns_cpu"] = turns.get("cpu_median_s")
    for _, key, get, _ in COLUMNS:
        try:
            out[key] = get(res)
        except (KeyError, TypeError):
            out[key] = None
    return out


def model_table(key: str, m: BenchModel, results: dict[str, dict[str, Any]]) -> str:
    names = [p for p in ALL if p in results]
    vals = {p: values(results[p].get(key, {})) for p in names}
    head = ["server", *(c[0] for c in COLUMNS)]
    body = []
    for p in names:
        if not vals[p]:
            body.append([LABELS[p], *(["failed"] + ["-"] * (len(COLUMNS) - 1))])
            continue
        body.append([LABELS[p], *(fmt(vals[p].get(c[1])) for c in COLUMNS)])
    lines = [
        f"{m.label}: in-process predict {m.predict_ms:.3f} ms on a (1, 20) array, "
        f"{m.predict_df_ms:.3f} ms on a one-row DataFrame",
        "",
        *grid(head, body),
    ]
    # Ratios to the reference: value / reference (below 1 is better for latency, cold start
    # and memory; above 1 is better for requests per second).
    ref = vals.get(REFERENCE) or {}
    if ref:
        lines += ["", f"ratio to {LABELS[REFERENCE]} (x; req/s: higher is better, others lower)"]
        rbody = []
        for p in names:
            if p == REFERENCE or not vals[p]:
                continue
            cells = []
            for c in COLUMNS:
                a, b = vals[p].get(c[1]), ref.get(c[1])
                cells.append(f"{a / b:.2f}x" if a and b else "-")
            rbody.append([LABELS[p], *cells])
        lines += grid(head, rbody)
    # Shipyard against the fastest peer of each column.
    peers = [p for p in names if p in PEER_ENVS and vals[p]]
    for row in [p for p in names if p.startswith("shipyard") and vals[p]]:
        cells, who = [], []
        for _, ck, _, better in COLUMNS:
            cand: list[tuple[float, str]] = [
                (v, p) for p in peers if (v := vals[p].get(ck)) is not None
            ]
            mine = vals[row].get(ck)
            if not cand or mine is None:
                cells.append("-")
                who.append("-")
                continue
            best, bp = (max if better == "higher" else min)(cand)
            # Above 1: Shipyard is better than the best peer in this column.
            ratio = mine / best if better == "higher" else best / mine
            cells.append(f"{ratio:.2f}x")
            who.append(bp)
        lines += ["", f"{LABELS[row]} against the best peer per column (above 1x: Shipyard ahead)"]
        lines += grid(["", *(c[0] for c in COLUMNS)], [["ratio", *cells], ["best peer", *who]])
    loads = [
        la[0]
        for p in names
        for c in ("c1", "c32")
        for la in [results[p].get(key, {}).get(c, {}).get("loadavg") or [None]]
        if la and la[0] is not None
    ]
    if loads:
        lines += ["", f"1-min load average after each run: {min(loads):.2f} to {max(loads):.2f}"]
    # Cores each tree got at c=32 (req/s x CPU per request): on a busy machine the scheduler
    # shares CPU per thread, so a server of many processes and threads gets more of it.
    cores = []
    for p in names:
        c32 = results[p].get(key, {}).get("c32") or {}
        if c32.get("server_cpu_ms_per_req") is not None:
            cores.append(f"{p} {c32['rps'] * c32['server_cpu_ms_per_req'] / 1000:.2f}")
    if cores:
        lines += ["cores used at c=32 (req/s x CPU ms/req): " + ", ".join(cores)]
    c1 = []
    cpu_pred = getattr(m, "predict_cpu_ms", None)
    for p in names:
        cpu1 = (results[p].get(key, {}).get("c1") or {}).get("server_cpu_ms_per_req")
        if cpu1 is not None:
            c1.append(f"{p} {cpu1:.2f}")
    if c1:
        extra = f" (in-process predict: {cpu_pred:.3f} ms CPU)" if cpu_pred else ""
        lines += [f"CPU ms per request at c=1{extra}: " + ", ".join(c1)]
    turns = [
        f"{p} {vp['cold_turns']:.2f} s (CPU {vp['cold_turns_cpu']:.2f} s)"
        for p in names
        if (vp := vals[p]).get("cold_turns") is not None and vp.get("cold_turns_cpu") is not None
    ]
    if turns:
        lines += ["cold start, servers started in turns (median of 3 each): " + ", ".join(turns)]
    return "\n".join(lines)


@dataclass
class Goal:
    issue: str
    text: str
    model: str
    target: float | None
    unit: str
    better: str
    fact: Callable[[dict[str, float | None]], float | None]


def goals(
    models: dict[str, BenchModel], results: dict[str, dict[str, Any]], log_times: dict[str, Any]
) -> str:
    def v(p: str, key: str) -> dict[str, float | None]:
        return values(results.get(p, {}).get(key, {}))

    rows: list[Goal] = []
    for key, m in models.items():
        mf, bt, tr, ref = v("mlflow", key), v("bentoml", key), v("pytriton", key), v(REFERENCE, key)
        peer_rps = [x for x in (mf.get("c32_rps"), bt.get("c32_rps")) if x]
        rows += [
            Goal("5", "c=32 req/s >= 2x the faster of MLflow/BentoML", key,
                 2 * max(peer_rps) if peer_rps else None, "req/s", "higher",
                 lambda s: s.get("c32_rps")),
            Goal("5", "c=1 p50 <= in-process predict + 1 ms", key, m.predict_ms + 1.0, "ms",
                 "lower", lambda s: s.get("c1_p50")),
            Goal("5", "cold start (process start) < 2 s", key, 2.0, "s", "lower",
                 lambda s: s.get("cold")),
            Goal("5", "memory <= bare uvicorn with the model", key, ref.get("rss"), "MB",
                 "lower", lambda s: s.get("rss")),
            Goal("8", "c=32 req/s >= 1.5x PyTriton", key,
                 1.5 * x if (x := tr.get("c32_rps")) else None, "req/s", "higher",
                 lambda s: s.get("c32_rps")),
            Goal("8", "c=32 p99 <= PyTriton's", key, tr.get("c32_p99"), "ms", "lower",
                 lambda s: s.get("c32_p99")),
            Goal("8", "c=1 p50 <= FastAPI reference", key, ref.get("c1_p50"), "ms", "lower",
                 lambda s: s.get("c1_p50")),
            Goal("8", "cold start <= FastAPI reference", key, ref.get("cold"), "s", "lower",
                 lambda s: s.get("cold")),
            Goal("8", "the same, servers started in turns", key, ref.get("cold_turns"), "s",
                 "lower", lambda s: s.get("cold_turns")),
            Goal("8", "memory <= FastAPI reference", key, ref.get("rss"), "MB", "lower",
                 lambda s: s.get("rss")),
            # Proxies that a busy machine hardly moves: CPU per request instead of time.
            Goal("5*", "c=1 server CPU/req <= predict CPU + 1 ms", key,
                 (m.predict_cpu_ms + 1.0) if getattr(m, "predict_cpu_ms", None) else None,
                 "ms", "lower", lambda s: s.get("c1_cpu")),
            Goal("8*", "c=32 CPU/req <= PyTriton's / 1.5", key,
                 y / 1.5 if (y := tr.get("c32_cpu")) else None, "ms", "lower",
                 lambda s: s.get("c32_cpu")),
        ]  # fmt: skip
    rows_sy = [p for p in ("shipyard", "shipyard-2w") if p in results]
    head = ["issue", "goal", "model", "target"]
    for p in rows_sy:
        head += [p, "met?"]
    body = []
    for g in rows:
        cells = [g.issue, g.text, g.model, fmt(g.target)]
        for p in rows_sy:
            got = g.fact(v(p, g.model))
            cells.append(fmt(got))
            if got is None or g.target is None:
                cells.append("-")
            else:
                ok = got >= g.target if g.better == "higher" else got <= g.target
                cells.append("yes" if ok else "NO")
        body.append(cells)
    sy_log = log_times.get("shipyard", {})
    zero = log_times.get("shipyard_zero", {})
    for key in models:
        z = zero.get(key, {}).get("first_request_s")
        cells = ["5", "cold start (scale from zero) < 2 s", key, "2.00"]
        for i, _ in enumerate(rows_sy):
            if i == 0:
                cells += [fmt(z), "-" if z is None else ("yes" if z < 2.0 else "NO")]
            else:
                cells += ["", ""]
        body.append(cells)
    for key in models:
        s = sy_log.get(key, {}).get("times_s")
        sm = statistics.median(s) if s else None
        cells = ["5", "log_model + registration < 0.5 s (median)", key, "0.50"]
        for i, _ in enumerate(rows_sy):
            if i == 0:
                cells += [fmt(sm), "-" if sm is None else ("yes" if sm < 0.5 else "NO")]
            else:
                cells += ["", ""]
        body.append(cells)
    return "\n".join(grid(head, body, left=3))


def log_model_table(log_times: dict[str, Any]) -> str:
    head = ["log_model + registration (s)", "model", "MLflow", "Shipyard", "ratio"]
    body = []
    for key in log_times.get("shipyard", {}):
        s = log_times["shipyard"][key].get("times_s") or []
        ml = log_times.get("mlflow", {}).get(key, {}).get("times_s") or []
        for label, pick in (("median", statistics.median), ("first call", lambda xs: xs[0])):
            a = pick(ml) if ml else None
            b = pick(s) if s else None
            body.append([label, key, fmt(a), fmt(b), f"{a / b:.1f}x" if a and b else "-"])
    return "\n".join(grid(head, body, left=2))


def report(saved: dict[str, Any]) -> None:
    """Print the tables from a results file (this run's, or an earlier one's: ``--report``)."""
    from types import SimpleNamespace

    models: dict[str, Any] = {k: SimpleNamespace(key=k, **v) for k, v in saved["models"].items()}
    results = saved["results"]
    log_times = saved["log_model"]
    versions = saved["versions"]
    d = Durations(**saved["durations"])
    la = saved["machine"].get("loadavg_start")
    start = f"; load average at the start {la[0]:.2f}" if la else ""
    print()
    print(
        f"Serving, side by side ({saved['machine']['cpus']} cores, wrk -t1 on the same machine, "
        f"{d.measure_s:g} s per load after {d.warmup_s:g} s warm-up{start}; versions {versions})"
    )
    for key, m in models.items():
        print()
        print(model_table(key, m, results))
    print()
    print(log_model_table(log_times))
    zero = log_times.get("shipyard_zero") or {}
    if zero:
        bits = [
            f"{k} {z['first_request_s']:.2f} s" if "first_request_s" in z else f"{k} failed"
            for k, z in zero.items()
        ]
        print()
        print(
            "Shipyard scale from zero (first request to an endpoint idled to 0 workers): "
            + ", ".join(bits)
        )
    print()
    print("Goals")
    print()
    print(goals(models, results, log_times))
    errors = {
        f"{p} {k}": r["error"] for p, rs in results.items() for k, r in rs.items() if "error" in r
    }
    if errors:
        print()
        print("failed:")
        for who, why in errors.items():
            print(f"  {who}: {why.splitlines()[-1] if why else why}")


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per load (1 s warm-up), 1 rep")
    ap.add_argument("--duration", type=float, help="seconds per load (default 10; quick 3)")
    ap.add_argument("--skip-install", action="store_true", help="use bench/.envs as they are")
    ap.add_argument("--peers", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    ap.add_argument("--models", default="lr,rf", help="lr, rf or both")
    ap.add_argument("--reps", type=int, help="log_model repetitions per tool (default 3)")
    ap.add_argument("--keep-work", action="store_true", help="keep the working folder's files")
    ap.add_argument("--report", metavar="JSON", help="print the tables of an earlier run's file")
    args = ap.parse_args()
    if args.report:
        report(json.loads(Path(args.report).read_text()))
        return
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in ALL]
    if unknown:
        raise SystemExit(f"--peers: unknown {unknown}; expected some of {', '.join(ALL)}")
    measure = args.duration or (3.0 if args.quick else 10.0)
    d = Durations(warmup_s=min(2.0, max(1.0, measure / 3)), measure_s=measure)
    reps = args.reps or (1 if args.quick else 3)

    failed_install: dict[str, str] = {}
    if not args.skip_install:
        failed_install = install(peers)
    wrk_path()
    work = Path(tempfile.mkdtemp(prefix="shipyard-serving-bench-"))
    (work / "logs").mkdir()
    loadavg_start = os.getloadavg()
    log(f"working in {work}; load average {loadavg_start}")
    models = {k: v for k, v in train_models(work).items() if k in args.models.split(",")}
    for m in models.values():
        log(f"{m.key}: predict {m.predict_ms:.3f} ms (array), {m.predict_df_ms:.3f} ms (DataFrame)")

    results: dict[str, dict[str, Any]] = {}
    log_times: dict[str, Any] = {}
    for peer in peers:
        if peer.startswith("shipyard"):
            continue
        if peer in failed_install:
            results[peer] = {
                k: {"error": "install failed: " + failed_install[peer]} for k in models
            }
            continue
        log(f"== {peer}")
        results[peer] = bench_peer(peer, models, work, d)
    sy_rows = [p for p in peers if p.startswith("shipyard")]
    if sy_rows:
        log("== shipyard")
        sy_out = bench_shipyard(models, work, d, sy_rows, reps)
        for row in sy_rows:
            results[row] = sy_out[row]
        log_times["shipyard"] = sy_out["log_model"]
        log_times["shipyard_zero"] = sy_out["zero"]
    if REFERENCE in results and sy_rows:
        log("== cold starts in turns")
        cold_starts_in_turns(models, work, results)
    if "mlflow" in peers and "mlflow" not in failed_install:
        log("== mlflow log_model")
        try:
            log_times["mlflow"] = bench_mlflow_log_model(models, work, reps)
        except Exception as e:
            log(f"mlflow log_model: FAILED: {e}")

    versions = {p: version_of(p, d) for p, d in [
        ("mlflow", "mlflow"), ("bentoml", "bentoml"), ("pytriton", "nvidia-pytriton"),
        ("litserve", "litserve"), ("mlserver", "mlserver"), ("fastapi", "fastapi"),
    ] if p in peers and env_dir(p).exists()}  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    meta = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_start": loadavg_start,
            "loadavg_end": os.getloadavg(),
        },
        "durations": asdict(d),
        "versions": versions,
        "models": {
            k: {
                "label": m.label,
                "predict_ms": m.predict_ms,
                "predict_df_ms": m.predict_df_ms,
                "predict_cpu_ms": m.predict_cpu_ms,
            }
            for k, m in models.items()
        },
    }
    path = out_dir / f"serving-{stamp}.json"
    path.write_text(json.dumps({**meta, "results": results, "log_model": log_times}, indent=2))

    report(json.loads(path.read_text()))
    if not args.keep_work:  # models, stores and environments' caches: keep only the logs
        for child in work.iterdir():
            if child.name != "logs":
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
    print()
    print(f"results: {path.relative_to(BENCH_DIR.parent)}; logs: {work / 'logs'}")


if __name__ == "__main__":
    main()
