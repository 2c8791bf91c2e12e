"""Fixtures for the model server: real model folders and real runtime processes.

- ``model_dirs``: model folders written by ``shipyard.models.format.save_model`` once per
  session: a LogisticRegression and a 100-tree RandomForest on 20 features (named columns), a
  LightGBM classifier, a LogisticRegression fitted on a bare array (a tensor signature), a model
  over integer (``long``) columns, and ``SleepyModel`` (a python_function model that sleeps as
  long as its ``delay`` column says: slow requests on demand).
- ``start_runtime(config)``: ``python -m shipyard.serving.runtime --config FILE`` as a real
  subprocess on a free port, in its own process group, ready when it returns; stopped (SIGTERM,
  then SIGKILL of the whole group) at the end of the test or module that asked for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

FEATURES = [f"f{i}" for i in range(20)]


@dataclass
class ModelDirs:
    root: Path
    X: Any  # 200 rows of the 20 features (a DataFrame)
    lr: Path
    rf: Path
    lgbm: Path
    lr_array: Path
    ints: Path
    sleepy: Path
    lr_model: Any
    rf_model: Any

    def rows(self, n: int = 1, start: int = 0) -> list[list[float]]:
        return self.X.iloc[start : start + n].to_numpy().tolist()

    def split(self, n: int = 1, start: int = 0) -> dict[str, Any]:
        return {"dataframe_split": {"columns": FEATURES, "data": self.rows(n, start)}}


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> ModelDirs:
    import cloudpickle
    import lightgbm as lgb
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from shipyard.models.format import save_model
    from tests.serving.runtime import _models

    root = tmp_path_factory.mktemp("runtime-models")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 20)), columns=FEATURES)
    y = ((X.f0 + X.f1 - X.f2) > 0).astype(int)
    lr = LogisticRegression().fit(X, y)
    rf = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)
    save_model(lr, root / "lr", input_example=X.head(5))
    save_model(rf, root / "rf", input_example=X.head(5))
    booster = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
    save_model(booster, root / "lgbm", input_example=X.head(5))
    save_model(
        LogisticRegression().fit(X.to_numpy(), y), root / "lr_array", input_example=X.to_numpy()[:5]
    )
    Xi = pd.DataFrame(rng.integers(0, 100, size=(200, 3)), columns=["a", "b", "c"])
    save_model(
        LogisticRegression(max_iter=500).fit(Xi, (Xi.a > 50).astype(int)),
        root / "ints",
        input_example=Xi.head(5),
    )
    cloudpickle.register_pickle_by_value(_models)
    try:
        save_model(
            _models.SleepyModel(),
            root / "sleepy",
            flavor="python_function",
            input_example=pd.DataFrame({"delay": [0.0], "x": [1.0]}),
        )
    finally:
        cloudpickle.unregister_pickle_by_value(_models)
    return ModelDirs(
        root,
        X.head(200),
        root / "lr",
        root / "rf",
        root / "lgbm",
        root / "lr_array",
        root / "ints",
        root / "sleepy",
        lr,
        rf,
    )


class Runtime:
    """One model server process."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config_path = folder / "config.json"
        self.log_path = folder / "runtime.log"
        self.write_config(config)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shipyard.serving.runtime",
                    "--config",
                    str(self.config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = {"endpoint": "fraud", "host": "127.0.0.1", **config, "port": self.port}
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.config))
        os.replace(tmp, self.config_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http.get("/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"runtime not ready after {timeout_s} s:\n{self.log()}")

    def stats(self) -> dict[str, Any]:
        r = self.http.get("/shipyard/stats")
        assert r.status_code == 200, r.text
        return r.json()

    def reload(self, config: dict[str, Any]) -> httpx.Response:
        self.write_config(config)
        return self.http.post("/shipyard/reload", timeout=120)

    def invoke(self, payload: Any, **kw: Any) -> httpx.Response:
        return self.http.post("/invocations", json=payload, **kw)

    def stop(self) -> int | None:
        self.http.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        return self.proc.returncode


StartRuntime = Callable[..., Runtime]


def _starter(folder: Path) -> tuple[StartRuntime, list[Runtime]]:
    started: list[Runtime] = []

    def start(config: dict[str, Any], ready: bool = True, name: str | None = None) -> Runtime:
        rt = Runtime(folder / (name or f"rt{len(started)}"), config)
        started.append(rt)
        if ready:
            rt.wait_ready()
        return rt

    return start, started


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[StartRuntime]:
    start, started = _starter(tmp_path)
    yield start
    for rt in started:
        rt.stop()
        print(f"--- runtime log {rt.config_path.parent.name}:\n{rt.log()[-4000:]}")  # on failure


@pytest.fixture(scope="module")
def start_module_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartRuntime]:
    start, started = _starter(tmp_path_factory.mktemp("runtime"))
    yield start
    for rt in started:
        rt.stop()
        print(f"--- runtime log {rt.config_path.parent.name}:\n{rt.log()[-4000:]}")  # on failure


def variant(
    name: str, path: Path, version: str = "1", weight: float = 1.0, model: str = "fraud"
) -> dict[str, Any]:
    return {
        "name": name,
        "model_path": str(path),
        "model_name": model,
        "model_version": version,
        "weight": weight,
    }
