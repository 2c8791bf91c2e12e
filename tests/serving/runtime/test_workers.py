"""Model worker processes: scaling on load, to zero and back, and surviving a crash.

The model is ``SleepyModel``: a request's ``delay`` column is how long predict sleeps, so a test
can hold requests in flight on a worker for as long as it needs; ``x == -1`` makes the model
answer with its process id.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.serving.runtime.conftest import ModelDirs, StartRuntime, variant


def _req(delay: float = 0.0, x: float = 1.0) -> dict[str, Any]:
    return {"dataframe_records": [{"delay": delay, "x": x}]}


def _wait(pred: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"not met after {timeout_s} s: {pred()!r}")


def test_scales_up_under_load_down_when_idle_to_zero_and_cold_starts(
    start_runtime: StartRuntime, model_dirs: ModelDirs
) -> None:
    rt = start_runtime(
        {
            "variants": [variant("blue", model_dirs.sleepy)],
            "trust_code": True,
            "batching": {"max_batch_size": 1, "max_wait_ms": 5},
            "scaling": {
                "min_workers": 1,
                "max_workers": 3,
                "target_inflight_per_worker": 2,
                "scale_down_after_s": 0.5,
                "idle_to_zero_s": 3,
                "worker_mode": "process",
            },
        }
    )
    assert rt.stats()["workers"]["count"] == 1
    stop = threading.Event()
    pids: set[float] = set()
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=rt.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/invocations", json=_req(0.1, -1.0))
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    pids.add(r.json()["predictions"][0])

    with ThreadPoolExecutor(10) as ex:
        for _ in range(10):
            ex.submit(client)
        try:
            peak = _wait(lambda: (w := rt.stats()["workers"])["ready"] == 3 and w, 60)
        finally:
            time.sleep(0.5)
            stop.set()
    assert not errors, errors[:3]
    assert peak["count"] == 3
    assert len(pids) >= 2  # requests were served by more than one process
    # Idle: back to min_workers (two idle workers stopped), then to zero after idle_to_zero_s.
    w = _wait(lambda: (w := rt.stats()["workers"])["scaled_to_zero"] and w, 30)
    assert w["scale_ups"] >= 2 and w["scale_downs"] == w["scale_ups"]
    assert w["scaled_to_zero_times"] == 1
    assert w["count"] == 0 and w["pids"] == []
    assert rt.http.get("/v2/health/ready").status_code == 200  # ready: it will cold start
    # The next request starts a worker and is answered.
    t0 = time.perf_counter()
    r = rt.invoke(_req(0.0, 2.0))
    cold = time.perf_counter() - t0
    assert r.status_code == 200 and r.json() == {"predictions": [4.0]}
    w = rt.stats()["workers"]
    assert w["cold_starts"] == 1 and w["count"] == 1
    assert 0 < w["last_cold_start_s"] <= cold
    print(f"cold start: {w['last_cold_start_s']:.3f} s in the server, {cold:.3f} s for the client")


def test_a_killed_worker_fails_only_its_requests_and_is_restarted(
    start_runtime: StartRuntime, model_dirs: ModelDirs
) -> None:
    rt = start_runtime(
        {
            "variants": [variant("blue", model_dirs.sleepy)],
            "trust_code": True,
            "batching": {"max_batch_size": 8, "max_wait_ms": 5},
            "scaling": {"min_workers": 2, "max_workers": 2, "worker_mode": "process"},
        }
    )
    before = rt.stats()["workers"]
    assert before["count"] == 2 and before["restarts"] == 0

    def call(delay: float, x: float) -> tuple[int, Any, float]:
        with httpx.Client(base_url=rt.url, timeout=60) as c:
            t0 = time.perf_counter()
            r = c.post("/invocations", json=_req(delay, x))
            return r.status_code, r.json(), time.perf_counter() - t0

    with ThreadPoolExecutor(4) as ex:
        # Two slow requests occupy both workers; a third waits in the queue.
        slow = [ex.submit(call, 3.0, 1.0), ex.submit(call, 3.0, 2.0)]
        _wait(lambda: sum(i["inflight_requests"] for i in rt.stats()["workers"]["items"]) == 2)
        queued = ex.submit(call, 0.0, 5.0)
        _wait(lambda: rt.stats()["workers"]["inflight"] == 3)
        victim = rt.stats()["workers"]["items"][0]["pid"]
        t_kill = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        results = [f.result() for f in slow]
        waited = queued.result()
    failed = [r for r in results if r[0] == 503]
    ok = [r for r in results if r[0] == 200]
    assert len(failed) == 1 and len(ok) == 1, results
    status, body, _ = failed[0]
    assert "crashed" in body["error"] and str(victim) in body["error"]
    assert time.perf_counter() - t_kill < 10  # answered, not left hanging
    assert waited[0] == 200 and waited[1] == {"predictions": [10.0]}  # queued: not failed
    stats = _wait(
        lambda: (
            (s := rt.stats())["workers"]["ready"] == 2
            and s["workers"]["last_crash"]["exit_code"] is not None
            and s
        )
    )
    w = stats["workers"]
    assert w["restarts"] == 1
    assert w["last_crash"]["pid"] == victim and w["last_crash"]["exit_code"] == -signal.SIGKILL
    assert victim not in w["pids"]
    assert stats["status"] == "InService"
    assert rt.http.get("/v2/health/ready").status_code == 200
    assert rt.invoke(_req(0.0, 3.0)).json() == {"predictions": [6.0]}


def test_the_only_worker_crashing_or_stuck_is_reported_and_recovered(
    start_runtime: StartRuntime, model_dirs: ModelDirs
) -> None:
    rt = start_runtime(
        {
            "variants": [variant("blue", model_dirs.sleepy)],
            "trust_code": True,
            "request_timeout_s": 3,
            "scaling": {"min_workers": 1, "max_workers": 1, "worker_mode": "process"},
        }
    )
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(rt.invoke, _req(5.0))
        _wait(lambda: rt.stats()["workers"]["inflight"] == 1)
        os.kill(rt.stats()["workers"]["pids"][0], signal.SIGKILL)
        r = fut.result()
    assert r.status_code == 503 and "retry" in r.json()["error"]
    _wait(lambda: rt.http.get("/v2/health/ready").status_code == 200)
    assert rt.invoke(_req(0.0, 1.0)).json() == {"predictions": [2.0]}
    assert rt.stats()["workers"]["restarts"] == 1
    # A model stuck past request_timeout_s: its worker is replaced, the caller hears why.
    t0 = time.perf_counter()
    r = rt.invoke(_req(30.0))
    assert r.status_code == 503 and "ran past request_timeout_s (3 s)" in r.json()["error"]
    assert time.perf_counter() - t0 < 15
    _wait(lambda: rt.stats()["workers"]["ready"] == 1)
    assert rt.stats()["workers"]["restarts"] == 2
    assert rt.invoke(_req(0.0, 4.0)).json() == {"predictions": [8.0]}
