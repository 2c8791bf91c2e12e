"""Helpers of ``bench/serving.py``: the two models, the load generator (``wrk``), starting a
server until its first prediction, and the measurements taken on its process tree.

Runs in Shipyard's environment (scikit-learn, pandas, psutil); the servers run in their own.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import Server

N_FEATURES = 20
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
SEED = 42


# -- the models ---------------------------------------------------------------------------------


@dataclass
class BenchModel:
    """A fitted model, saved with joblib for the peers, and the one row every request sends."""

    key: str  # "lr" or "rf"
    label: str
    model: Any
    path: Path  # model.joblib
    example_path: Path  # {"columns", "data"}: five rows, the input example of log_model
    example: Any  # the same five rows as a DataFrame
    row: list[float]  # the row every request sends
    expected: int  # its prediction in this process
    predict_ms: float = 0.0  # in-process median: model.predict on the row as a (1, 20) array
    predict_df_ms: float = 0.0  # the same on a one-row DataFrame
    predict_cpu_ms: float = 0.0  # CPU time of the array predict (a busy machine inflates wall)


def train_models(work: Path) -> dict[str, BenchModel]:
    """A LogisticRegression and a 100-tree RandomForest on 20 features, seeded, fitted once."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(
        n_samples=10_000, n_features=N_FEATURES, n_informative=10, random_state=SEED
    )
    df = pd.DataFrame(x, columns=FEATURES)
    fitted = {
        "lr": ("LogisticRegression", LogisticRegression(max_iter=1000).fit(df, y)),
        "rf": (
            "RandomForest (100 trees)",
            RandomForestClassifier(n_estimators=100, random_state=SEED).fit(df, y),
        ),
    }
    out: dict[str, BenchModel] = {}
    row = [round(float(v), 6) for v in x[7]]
    example = df.iloc[:5]
    for key, (label, model) in fitted.items():
        folder = work / "models" / key
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.joblib"
        joblib.dump(model, path)
        example_path = folder / "example.json"
        example_path.write_text(
            json.dumps({"columns": FEATURES, "data": example.to_numpy().tolist()})
        )
        arr = np.asarray([row])
        expected = int(model.predict(pd.DataFrame(arr, columns=FEATURES))[0])
        out[key] = BenchModel(key, label, model, path, example_path, example, row, expected)
        out[key].predict_ms = _time_ms(functools.partial(model.predict, arr))
        out[key].predict_cpu_ms = _time_ms(functools.partial(model.predict, arr), cpu=True)
        one = pd.DataFrame(arr, columns=FEATURES)
        out[key].predict_df_ms = _time_ms(functools.partial(model.predict, one))
    return out


def _time_ms(fn: Callable[[], Any], n: int = 300, max_s: float = 3.0, cpu: bool = False) -> float:
    """The median wall time of ``fn`` in ms; with ``cpu``, its mean CPU time instead."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            fn()
        if cpu:
            c0 = time.process_time()
            for _ in range(n):
                fn()
            return (time.process_time() - c0) / n * 1000
        times: list[float] = []
        t_end = time.perf_counter() + max_s
        while len(times) < n and (len(times) < 30 or time.perf_counter() < t_end):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


# -- requests -----------------------------------------------------------------------------------


@dataclass
class Request:
    """The single-row request a server takes, and how to read its prediction back."""

    path: str
    body: bytes
    read: Callable[[Any], int]  # the parsed JSON answer -> the predicted class

    def check(self, port: int, expected: int, timeout: float = 10.0) -> None:
        status, data = post(port, self.path, self.body, timeout)
        if status != 200:
            raise RuntimeError(f"POST {self.path} answered {status}: {data[:300]!r}")
        got = self.read(json.loads(data))
        if int(got) != expected:
            raise RuntimeError(f"POST {self.path} predicted {got}, expected {expected}")


def post(port: int, path: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def oip_request(path: str, input_name: str, row: list[float]) -> Request:
    """An Open Inference Protocol v2 request: one FP64 tensor of shape [1, 20]."""
    body = {
        "inputs": [{"name": input_name, "shape": [1, len(row)], "datatype": "FP64", "data": row}]
    }
    return Request(path, json.dumps(body).encode(), lambda d: d["outputs"][0]["data"][0])


def split_request(row: list[float]) -> Request:
    """MLflow's and SageMaker's ``/invocations`` with a ``dataframe_split`` body."""
    body = {"dataframe_split": {"columns": FEATURES, "data": [row]}}
    return Request("/invocations", json.dumps(body).encode(), lambda d: d["predictions"][0])


# -- starting a server until it predicts ---------------------------------------------------------


def start_until_predicts(
    server: Server, request: Request, expected: int, timeout_s: float = 300.0
) -> tuple[float, float]:
    """Start ``server``; return the seconds from ``Popen`` until its first successful
    prediction (the cold start, checked against the in-process answer) and the CPU seconds
    its process tree had used by then."""
    log = open(server.log_path or os.devnull, "wb")  # noqa: SIM115 - kept open for the child
    t0 = time.perf_counter()
    server.proc = subprocess.Popen(
        server.argv,
        env={**os.environ, **server.env},
        cwd=server.cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = t0 + timeout_s
    last = ""
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode} while starting; "
                f"see {server.log_path}"
            )
        try:
            status, data = post(server.port, request.path, request.body, timeout=10)
            if status == 200:
                elapsed = time.perf_counter() - t0
                cpu = tree_cpu_s(server.proc.pid)
                got = int(request.read(json.loads(data)))
                if got != expected:
                    raise RuntimeError(f"{server.name} predicted {got}, expected {expected}")
                server.start_s = elapsed
                return elapsed, cpu
            last = f"{status} {data[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        if time.perf_counter() > deadline:
            server.stop()
            raise RuntimeError(f"{server.name} gave no prediction in {timeout_s}s: {last}")
        time.sleep(0.01)


COLD_STARTS = 3  # samples per server: one start moves with the machine by tenths of a second


def cold_starts(
    server: Server, request: Request, expected: int, n: int = COLD_STARTS
) -> tuple[float, float, list[float]]:
    """``start_until_predicts`` ``n`` times (stopping the server between starts, leaving the
    last one running); the median seconds, the median CPU seconds, and every sample."""
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(n):
        if i:
            server.stop()
        wall, cpu = start_until_predicts(server, request, expected)
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus), walls


def interleaved_cold_starts(
    servers: list[tuple[Server, Request]], expected: int, n: int = COLD_STARTS
) -> list[dict[str, Any]]:
    """Cold starts of several servers taken in turns (A B, B A, A B, ...), each stopped before
    the next starts: the machine's load, which drifts over minutes here, then weighs on every
    server alike, where one server's three starts and another's minutes later may not. Per
    server: the median seconds and CPU seconds, and every sample."""
    walls: list[list[float]] = [[] for _ in servers]
    cpus: list[list[float]] = [[] for _ in servers]
    for i in range(n):
        order = list(range(len(servers)))
        if i % 2:
            order.reverse()
        for j in order:
            server, request = servers[j]
            try:
                wall, cpu = start_until_predicts(server, request, expected)
            finally:
                server.stop()
            walls[j].append(wall)
            cpus[j].append(cpu)
    return [
        {
            "median_s": statistics.median(w),
            "cpu_median_s": statistics.median(c),
            "samples_s": w,
            "cpu_samples_s": c,
        }
        for w, c in zip(walls, cpus, strict=True)
    ]


def tree_memory(root_pid: int) -> dict[str, float]:
    """RSS and PSS (MiB) summed over a process and all its descendants, and their count."""
    rss = pss = 0
    count = 0
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"rss_mb": 0.0, "pss_mb": 0.0, "processes": 0}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            count += 1
    return {"rss_mb": rss / 2**20, "pss_mb": pss / 2**20, "processes": count}


def tree_cpu_s(root_pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants."""
    total = 0.0
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


# -- the load generator -------------------------------------------------------------------------

_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH {{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"mean_us": %.1f, "max_us": %d, "err_connect": %d, "err_read": %d, "err_write": %d, '
    .. '"err_status": %d, "err_timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.connect, e.read, e.write, e.status,
    e.timeout))
end
"""


@dataclass
class Load:
    """One ``wrk`` run: latency percentiles (ms), requests per second, errors."""

    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    loadavg: list[float] = field(default_factory=list)


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk (or run without --skip-install)")
    return path


def install_wrk() -> None:
    if shutil.which("wrk"):
        return
    apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "apt-get"]
    subprocess.run([*apt, "install", "-y", "-q", "wrk"], check=False, capture_output=True)
    if not shutil.which("wrk"):
        subprocess.run([*apt, "update", "-q"], check=False, capture_output=True)
        subprocess.run([*apt, "install", "-y", "-q", "wrk"], check=True)


def write_lua(path: Path, body: bytes) -> Path:
    text = body.decode()
    if "]==]" in text:
        raise ValueError("the body cannot be quoted in Lua")
    path.write_text(_LUA.format(body=text))
    return path


def run_wrk(
    port: int, path: str, lua: Path, connections: int, duration_s: float, threads: int = 1
) -> Load:
    """``wrk`` with one thread (a second core for the server), ``connections`` kept-alive
    connections, each sending the next request as soon as the answer arrives."""
    argv = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s"]
    argv += ["--timeout", "10s", "-s", str(lua), f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr}")
    d = json.loads(line[6:])
    errors = sum(d[k] for k in d if k.startswith("err_"))
    secs = d["duration_us"] / 1e6
    return Load(
        connections=connections,
        duration_s=secs,
        requests=d["requests"],
        rps=(d["requests"] - d["err_status"]) / secs,
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        mean_ms=d["mean_us"] / 1000,
        max_ms=d["max_us"] / 1000,
        errors=errors,
        loadavg=[round(x, 2) for x in os.getloadavg()],
    )
