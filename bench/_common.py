"""Helpers shared by the side-by-side benchmarks: servers as subprocesses, their process trees,
fresh PostgreSQL databases, the keep-alive probe, statistics and the printed table.

Only the standard library, psutil and psycopg (both in Shipyard's environment) are used here, so
the same probe measures every server the same way.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")


# -- statistics ---------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def p95(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers ------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server started as a subprocess in its own session (so its whole tree can be stopped)."""

    name: str
    argv: list[str]
    port: int
    health_path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    start_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> float:
        """Start it and return the seconds until ``health_path`` first answers 200."""
        log = open(self.log_path or os.devnull, "wb")  # noqa: SIM115 - kept open for the child
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = t0 + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} while starting; "
                    f"see {self.log_path}"
                )
            if _get_ok(self.port, self.health_path):
                self.start_s = time.perf_counter() - t0
                return self.start_s
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer {self.health_path} in {timeout_s}s")
            time.sleep(0.02)

    def tree(self) -> list[psutil.Process]:
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def footprint(self) -> tuple[int, int]:
        """(RSS in bytes summed over the process tree, number of processes)."""
        total, count = 0, 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
                count += 1
        return total, count

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the whole tree."""
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        """Stop the server's own process group: TERM, then KILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the child's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        # Workers left in the group after the parent exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _get_ok(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status == 200
    except OSError:
        return False


def wait_quiet(
    server: Server, min_s: float = 2.0, max_s: float = 120.0, busy_cpu: float = 0.05
) -> float:
    """Wait until the whole tree uses under ``busy_cpu`` of a core over one second (background
    workers done starting), at least ``min_s`` and at most ``max_s``; return the wait."""
    t0 = time.perf_counter()
    time.sleep(min_s)
    last = server.cpu_s()
    while time.perf_counter() - t0 < max_s:
        time.sleep(1.0)
        now = server.cpu_s()
        if now - last < busy_cpu:
            break
        last = now
    return time.perf_counter() - t0


def idle_footprint(server: Server) -> dict[str, Any]:
    """The tree's RSS and process count once it has gone quiet after starting."""
    waited = wait_quiet(server)
    rss, count = server.footprint()
    return {"rss_mb": rss / 2**20, "processes": count, "quiet_after_s": waited}


def keepalive_probe(
    server: Server, path: str, n: int = 2000, max_s: float = 6.0, min_n: int = 30
) -> dict[str, Any]:
    """One kept-alive connection, one small GET at a time: wall time per request, and the
    server's CPU time per request (what the request itself costs the server)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for _ in range(20):  # warm up: connection, route caches
        conn.request("GET", path)
        conn.getresponse().read()
    cpu0 = server.cpu_s()
    times: list[float] = []
    t_end = time.perf_counter() + max_s
    while len(times) < n and (len(times) < min_n or time.perf_counter() < t_end):
        t = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - t)
        if resp.status != 200:
            raise RuntimeError(f"{server.name} {path} answered {resp.status}")
    cpu = (server.cpu_s() - cpu0) / len(times)
    conn.close()
    med = median(times)
    return {
        "requests": len(times),
        "median_ms": med * 1000,
        "p95_ms": p95(times) * 1000,
        "server_cpu_ms": cpu * 1000,
        "beyond_work_ms": max(0.0, med - cpu) * 1000,
    }


# -- PostgreSQL ---------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one tool and one run; dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_analyze(url: str) -> None:
    """ANALYZE after a bulk load, as autovacuum would do shortly; done for every tool alike."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


# -- subprocess workers -------------------------------------------------------------------------


def run_json(argv: list[str], env: dict[str, str] | None = None, timeout_s: float = 3600) -> Any:
    """Run a worker that prints its result as the last JSON line of stdout."""
    out = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} ... failed ({out.returncode}):\n{out.stderr[-4000:]}"
        )
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result from {argv}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


# -- the printed table --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. ``better`` says which way is good: "higher" or "lower".

    ``peers`` holds each peer's number by name (None where the peer has no such call or was
    not measured); ``mlflow`` is MLflow's, kept apart because the tracking issue's goals are
    stated against it.
    """

    label: str
    mlflow: float | None
    shipyard: float | None
    unit: str
    better: str
    goal: str = ""
    met: bool | None = None
    note: str = ""
    peers: dict[str, float | None] = field(default_factory=dict)

    def _vs(self, other: float | None) -> float | None:
        if not other or not self.shipyard:
            return None
        return self.shipyard / other if self.better == "higher" else other / self.shipyard

    @property
    def ratio(self) -> float | None:
        """How many times better Shipyard is than MLflow (>1 means Shipyard wins)."""
        return self._vs(self.mlflow)

    @property
    def fastest_peer(self) -> tuple[str, float] | None:
        """The best peer on this row (MLflow included) and its number."""
        found = [(n, v) for n, v in {"MLflow": self.mlflow, **self.peers}.items() if v]
        if not found:
            return None
        pick = max if self.better == "higher" else min
        return pick(found, key=lambda nv: nv[1])

    @property
    def ratio_fastest(self) -> float | None:
        """How many times better Shipyard is than the best peer of the row."""
        best = self.fastest_peer
        return self._vs(best[1]) if best else None


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100_000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _x(r: float | None) -> str:
    return f"{r:.1f}x" if r is not None else "-"


def format_table(title: str, rows: list[Row], peer_names: Sequence[str] = ()) -> str:
    head = ["", "MLflow", *peer_names, "Shipyard", "vs MLflow", "vs fastest peer", "goal", "met?"]
    body = []
    for r in rows:
        best = r.fastest_peer
        body.append(
            [
                f"{r.label} ({r.unit})",
                _fmt(r.mlflow),
                *(_fmt(r.peers.get(n)) for n in peer_names),
                _fmt(r.shipyard),
                _x(r.ratio),
                f"{_x(r.ratio_fastest)} ({best[0]})" if best and r.ratio_fastest else "-",
                r.goal,
                "" if r.met is None else ("yes" if r.met else "NO"),
            ]
        )
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    left = {0, len(head) - 2}

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i in left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [title, "", line(head), sep, *(line(b) for b in body)]
    notes = [f"  {r.label}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)
