"""A multi-model endpoint: models load on their first request and are evicted least recently
used when their memory estimates pass the budget."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.serving.runtime.conftest import ModelDirs, Runtime, StartRuntime


@pytest.fixture
def models_dir(tmp_path: Path, model_dirs: ModelDirs) -> Path:
    root = tmp_path / "models"
    for name in ("m1", "m2", "m3"):
        shutil.copytree(model_dirs.rf, root / name)
    shutil.copytree(model_dirs.lr, root / "churn" / "1")
    shutil.copytree(model_dirs.rf, root / "churn" / "2")
    (root / "empty").mkdir()
    return root


def _infer(rt: Runtime, name: str, model_dirs: ModelDirs, version: str | None = None) -> Any:
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {
        "inputs": [
            {"name": "x", "shape": [1, 20], "datatype": "FP64", "data": model_dirs.rows(1)[0]}
        ]
    }
    return rt.http.post(path, json=body)


def _loaded(rt: Runtime) -> list[str]:
    return [m["name"] for m in rt.stats()["multi_model"]["loaded"]]


def _wait(pred: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"not met after {timeout_s} s: {pred()!r}")


def test_loaded_on_first_request_and_evicted_least_recently_used(
    start_runtime: StartRuntime, models_dir: Path, model_dirs: ModelDirs
) -> None:
    config = {"multi_model": {"models_dir": str(models_dir), "memory_budget_mb": 4096}}
    rt = start_runtime(config)
    assert _loaded(rt) == []
    # Known but not loaded: metadata from the manifest, not ready yet.
    assert rt.http.get("/v2/models/m1").json()["platform"] == "sklearn_skops"
    assert rt.http.get("/v2/models/m1/ready").status_code == 503
    for name in ("m1", "m2", "m3"):
        r = _infer(rt, name, model_dirs)
        assert r.status_code == 200, r.text
        assert (
            r.json()["outputs"][0]["data"]
            == model_dirs.rf_model.predict(model_dirs.X.head(1)).tolist()
        )
    assert rt.http.get("/v2/models/m1/ready").json() == {"name": "m1", "ready": True}
    mm = rt.stats()["multi_model"]
    assert [m["name"] for m in mm["loaded"]] == ["m1", "m2", "m3"]  # least recently used first
    assert mm["loads"] == 3 and mm["evictions"] == 0
    est = {m["name"]: m["estimate_mb"] for m in mm["loaded"]}
    assert all(v > 0 for v in est.values()), est

    # A budget that holds any two of the three, not all three: the oldest (m1) goes.
    budget = sum(est.values()) - min(est.values()) / 2
    r = rt.reload(
        {**config, "multi_model": {"models_dir": str(models_dir), "memory_budget_mb": budget}}
    )
    assert r.status_code == 200, r.text
    _wait(lambda: _loaded(rt) == ["m2", "m3"])
    # Touch m2, then bring m1 back: now m3 is the least recently used.
    assert _infer(rt, "m2", model_dirs).status_code == 200
    assert _infer(rt, "m1", model_dirs).status_code == 200
    _wait(lambda: _loaded(rt) == ["m2", "m1"])
    mm = rt.stats()["multi_model"]
    assert mm["evictions"] == 2 and mm["loads"] == 4
    assert mm["memory_used_mb"] <= budget
    # SageMaker's multi-model header on /invocations.
    r = rt.invoke(model_dirs.split(1), headers={"X-Amzn-SageMaker-Target-Model": "m3"})
    assert r.status_code == 200 and r.json() == {
        "predictions": model_dirs.rf_model.predict(model_dirs.X.head(1)).tolist()
    }
    r = rt.invoke(model_dirs.split(1))
    assert r.status_code == 400 and "X-Amzn-SageMaker-Target-Model" in r.json()["error"]


def test_versions_and_names(
    start_runtime: StartRuntime, models_dir: Path, model_dirs: ModelDirs
) -> None:
    rt = start_runtime({"multi_model": {"models_dir": str(models_dir), "memory_budget_mb": 4096}})
    r = _infer(rt, "churn", model_dirs)  # the highest version
    assert r.status_code == 200 and r.json()["model_version"] == "2"
    r = _infer(rt, "churn", model_dirs, version="1")
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    assert (
        r.json()["outputs"][0]["data"] == model_dirs.lr_model.predict(model_dirs.X.head(1)).tolist()
    )
    for name, status in [("nope", 404), ("empty", 404), ("a..b", 400)]:
        r = _infer(rt, name, model_dirs)
        assert r.status_code == status, (name, r.text)
    r = _infer(rt, "churn", model_dirs, version="7")
    assert r.status_code == 404 and "version '7' was not found" in r.json()["error"]
