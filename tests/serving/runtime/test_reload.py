"""``POST /shipyard/reload``: a new model version goes live with no failed request, and back."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.serving.runtime.conftest import ModelDirs, Runtime, StartRuntime, variant


class Hammer:
    """Clients sending requests back to back until stopped; every answer is kept."""

    def __init__(self, rt: Runtime, payload: Any, clients: int = 6) -> None:
        self.rt = rt
        self.payload = payload
        self.stop = threading.Event()
        self.results: list[tuple[float, int, str | None]] = []
        self.lock = threading.Lock()
        self.ex = ThreadPoolExecutor(clients)
        self.futures = [self.ex.submit(self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.rt.url, timeout=30) as c:
            while not self.stop.is_set():
                # Stamped when sent: a request sent before a reload answered may be answered
                # by the old variant after it (it was in flight); one sent after may not.
                sent = time.monotonic()
                try:
                    r = c.post("/invocations", json=self.payload)
                    item = (sent, r.status_code, r.headers.get("x-shipyard-variant"))
                except httpx.HTTPError as e:
                    item = (sent, -1, repr(e))
                with self.lock:
                    self.results.append(item)

    def wait_for(self, n: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.results) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.results) >= n, self.results

    def finish(self) -> list[tuple[float, int, str | None]]:
        self.stop.set()
        for f in self.futures:
            f.result()
        self.ex.shutdown()
        return self.results


def test_reload_swaps_variants_with_no_failed_request(
    start_runtime: StartRuntime, model_dirs: ModelDirs
) -> None:
    base = {"scaling": {"min_workers": 2, "max_workers": 2, "worker_mode": "process"}}
    blue = {**base, "variants": [variant("blue", model_dirs.lr, version="1")]}
    green = {**base, "variants": [variant("green", model_dirs.rf, version="2")]}
    rt = start_runtime(blue)
    hammer = Hammer(rt, model_dirs.split(1))
    try:
        hammer.wait_for(20)
        r = rt.reload(green)
        assert r.status_code == 200, r.text
        t_green = time.monotonic()
        body = r.json()
        assert (
            body["loaded"] == ["green"]
            and body["retired"]
            and body["variants"][0]["name"] == "green"
        )
        time.sleep(0.5)
        blue_asked = time.monotonic()
        r = rt.reload(blue)  # the rollback, the same way
        assert r.status_code == 200, r.text
        t_blue = time.monotonic()
        time.sleep(0.5)
    finally:
        results = hammer.finish()
    failed = [x for x in results if x[1] != 200]
    assert not failed, failed[:5]
    counts = Counter(v for _, _, v in results)
    assert counts["blue"] > 0 and counts["green"] > 0
    # Once a reload has answered, only the new variant answers (until the next reload is
    # asked for: it routes to its variants before it answers, once it has drained the old).
    after_green = [v for t, _, v in results if t_green + 0.05 < t < blue_asked]
    after_blue = [v for t, _, v in results if t > t_blue + 0.05]
    assert after_green and set(after_green) == {"green"}
    assert after_blue and set(after_blue) == {"blue"}
    stats = rt.stats()
    assert stats["reloads"] == 2 and stats["status"] == "InService"
    assert [v["name"] for v in stats["variants"]] == ["blue"]
    for item in stats["workers"]["items"]:
        assert len(item["models"]) == 1  # the old models were unloaded


def test_a_reload_that_cannot_load_changes_nothing(
    start_runtime: StartRuntime, model_dirs: ModelDirs, tmp_path: Path
) -> None:
    blue = {"variants": [variant("blue", model_dirs.lr, weight=1)]}
    rt = start_runtime(blue)
    tampered = tmp_path / "tampered"
    shutil.copytree(model_dirs.rf, tampered)
    with open(tampered / "model.npz", "ab") as f:
        f.write(b"\0")
    hammer = Hammer(rt, model_dirs.split(1), clients=2)
    try:
        hammer.wait_for(10)
        r = rt.reload({"variants": [variant("blue", model_dirs.lr), variant("green", tampered)]})
        assert r.status_code == 500
        assert "reload failed, still serving the previous models" in r.json()["error"]
        assert "sha256 of model.npz does not match" in r.json()["error"]
        r = rt.reload({"variants": [variant("blue", tmp_path / "missing")]})
        assert r.status_code == 400 and "variant blue: model_path" in r.json()["error"]
        r = rt.reload({"variants": [{"name": "blue", "model_path": "relative/path"}]})
        assert r.status_code == 400 and "variants[0].model_path" in r.json()["error"]
        # Weights change at once, without loading anything.
        r = rt.reload({"variants": [variant("blue", model_dirs.lr, weight=5)]})
        assert r.status_code == 200 and r.json()["loaded"] == []
    finally:
        results = hammer.finish()
    assert results and all(s == 200 and v == "blue" for _, s, v in results)
    stats = rt.stats()
    assert stats["variants"][0]["weight"] == 5
    assert stats["reloads"] == 1
