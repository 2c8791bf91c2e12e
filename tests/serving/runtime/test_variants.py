"""Production variants (A/B by weight), a shadow variant, and data capture, in one endpoint.

``blue`` (the LogisticRegression) takes 75% of the traffic and ``green`` (the RandomForest) 25%;
``canary`` (the LightGBM model) shadows both. Each request's row is known, so the test can say
which model must have answered and whether the shadow must have agreed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serving.runtime.conftest import FEATURES, ModelDirs, Runtime, StartRuntime, variant

N = 400


@pytest.fixture(scope="module")
def setup(
    start_module_runtime: StartRuntime,
    model_dirs: ModelDirs,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Runtime, Path]:
    capture_dir = tmp_path_factory.mktemp("capture")
    rt = start_module_runtime(
        {
            "variants": [
                variant("blue", model_dirs.lr, version="1", weight=3),
                variant("green", model_dirs.rf, version="2", weight=1),
            ],
            "shadow": variant("canary", model_dirs.lgbm, version="3"),
            "capture": {"sample_rate": 0.3, "dir": str(capture_dir), "rotate_s": 0.2},
            "scaling": {"min_workers": 1, "max_workers": 1, "worker_mode": "process"},
        }
    )
    return rt, capture_dir


@pytest.fixture(scope="module")
def traffic(setup: tuple[Runtime, Path], model_dirs: ModelDirs) -> list[dict[str, Any]]:
    """N requests, one row each (row i % 200), from 8 concurrent clients."""
    rt, _ = setup
    local = threading.local()

    def call(i: int) -> dict[str, Any]:
        payload = model_dirs.split(1, start=i % 200)
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=rt.url, timeout=30)
        r = local.c.post("/invocations", json=payload)
        return {
            "i": i,
            "status": r.status_code,
            "variant": r.headers.get("x-shipyard-variant"),
            "id": r.headers.get("x-request-id"),
            "body": r.json(),
            "payload": payload,
        }

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        out = list(ex.map(call, range(N)))
    print(f"{N} requests in {time.perf_counter() - t0:.2f} s")
    return out


def _local(model_dirs: ModelDirs) -> dict[str, list[int]]:
    import lightgbm as lgb

    X = model_dirs.X
    booster = lgb.Booster(model_file=str(model_dirs.lgbm / "model.txt"))
    return {
        "blue": model_dirs.lr_model.predict(X).tolist(),
        "green": model_dirs.rf_model.predict(X).tolist(),
        "canary": (booster.predict(X.to_numpy()) > 0.5).astype(int).tolist(),
    }


def test_traffic_is_split_by_weight_and_answered_by_that_variant(
    traffic: list[dict[str, Any]], model_dirs: ModelDirs
) -> None:
    local = _local(model_dirs)
    assert all(t["status"] == 200 for t in traffic)
    counts = Counter(t["variant"] for t in traffic)
    assert set(counts) == {"blue", "green"}  # the shadow never answers
    share = counts["green"] / N
    # 25% expected; 4 standard deviations of a binomial over N requests.
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / N), counts
    for t in traffic:
        assert t["body"] == {"predictions": [local[t["variant"]][t["i"] % 200]]}


def test_a_caller_can_pin_a_variant(setup: tuple[Runtime, Path], model_dirs: ModelDirs) -> None:
    rt, _ = setup
    for _ in range(5):
        r = rt.invoke(model_dirs.split(1), headers={"x-shipyard-variant": "green"})
        assert r.headers["x-shipyard-variant"] == "green"
    r = rt.http.post(
        "/v2/models/green/infer",
        json={
            "inputs": [
                {"name": "x", "shape": [1, 20], "datatype": "FP64", "data": model_dirs.rows(1)[0]}
            ]
        },
    )
    assert r.status_code == 200 and r.headers["x-shipyard-variant"] == "green"
    assert r.json()["model_version"] == "2"
    r = rt.invoke(model_dirs.split(1), headers={"x-shipyard-variant": "purple"})
    assert r.status_code == 400 and "unknown variant 'purple'" in r.json()["error"]


def _wait(pred: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"not met after {timeout_s} s: {pred()!r}")


def test_shadow_answers_are_recorded_and_compared(
    setup: tuple[Runtime, Path], traffic: list[dict[str, Any]], model_dirs: ModelDirs
) -> None:
    rt, _ = setup
    local = _local(model_dirs)
    stats = _wait(lambda: (s := rt.stats())["shadow"]["requests"] >= N and s)
    shadow = stats["shadow"]
    assert shadow["name"] == "canary" and shadow["model_version"] == "3"
    assert shadow["errors"] == 0
    # Requests sent before this test (pinning) were shadowed too: compare over all of them
    # through the traffic we know, and check the totals add up.
    assert shadow["agree"] + shadow["disagree"] == shadow["requests"]
    expected_disagree = sum(
        1 for t in traffic if local["canary"][t["i"] % 200] != t["body"]["predictions"][0]
    )
    assert expected_disagree > 0  # the models do differ on some rows
    assert shadow["disagree"] >= expected_disagree
    by_name = {v["name"]: v for v in stats["variants"]}
    assert by_name["blue"]["requests"] + by_name["green"]["requests"] >= N
    assert by_name["blue"]["latency_ms"]["p50"] is not None


def test_capture_writes_the_sampled_fraction_as_jsonl(
    setup: tuple[Runtime, Path], traffic: list[dict[str, Any]]
) -> None:
    rt, capture_dir = setup

    def lines() -> list[dict[str, Any]]:
        out = []
        for f in sorted(capture_dir.rglob("*.jsonl")):
            out += [json.loads(ln) for ln in f.read_text().splitlines()]
        return out

    # Every record the server counted ends up in a finished (renamed) file.
    _wait(lambda: rt.stats()["capture"]["captured"] == len(lines()) > 0)
    records = lines()
    assert not list(capture_dir.rglob("*.part")) or rt.stats()["capture"]["files"] >= 1
    primary = [r for r in records if not r["shadow"]]
    shadow = [r for r in records if r["shadow"]]
    by_id = {t["id"]: t for t in traffic}
    ours = [r for r in primary if r["id"] in by_id]
    # 30% sampled; 4 standard deviations of a binomial over N requests.
    assert abs(len(ours) / N - 0.3) < 4 * np.sqrt(0.3 * 0.7 / N), len(ours)
    for r in ours:
        t = by_id[r["id"]]
        assert r["request"] == t["payload"]
        assert r["response"] == t["body"]
        assert r["variant"] == t["variant"] and r["status"] == 200
        assert r["endpoint"] == "fraud" and r["path"] == "/invocations"
        assert r["request_time"].endswith("Z") and r["response_time"] >= r["request_time"]
    # The shadow's answer for a sampled request is captured beside it, never returned.
    primary_ids = {r["id"] for r in primary}
    assert shadow and all(s["id"] in primary_ids for s in shadow)
    assert all(s["variant"] == "canary" and "agree" in s for s in shadow)
    assert {f.parent.relative_to(capture_dir).parts[0] for f in capture_dir.rglob("*.jsonl")} == {
        time.strftime("%Y", time.gmtime())
    }
    assert FEATURES[0] in json.dumps(ours[0]["request"])
