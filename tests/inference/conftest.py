"""Fixtures for batch and asynchronous inference: a fitted model registered as ``churn`` with
the alias ``champion``, and input files written by the test (CSV and Parquet)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

FEATURES = ["f0", "f1", "f2", "f3"]


def make_frame(n: int, seed: int = 7) -> pd.DataFrame:
    """``id``, a ``region`` with commas, quotes and newlines (the hard cases of CSV), then the
    model's four features."""
    rng = np.random.default_rng(seed)
    regions = np.array(["north", 'south, "coast"', "east\nwest", "ünïcode"])
    df = pd.DataFrame(rng.normal(size=(n, 4)), columns=FEATURES)
    df.insert(0, "id", np.arange(n, dtype=np.int64) + 1000)
    df.insert(1, "region", regions[np.arange(n) % len(regions)])
    return df


@pytest.fixture(scope="session")
def fitted() -> Any:
    from sklearn.linear_model import LogisticRegression

    train = make_frame(400, seed=1)
    y = (train.f0 + 0.5 * train.f1 - train.f3 > 0).astype(np.int64)
    return LogisticRegression().fit(train[FEATURES], y)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, fitted: Any) -> Path:
    from shipyard.models.format import save_model

    folder = tmp_path_factory.mktemp("inference-model") / "model"
    save_model(fitted, folder, input_example=make_frame(5)[FEATURES])
    return folder


@pytest.fixture(scope="session")
def loaded(model_dir: Path) -> Any:
    from shipyard.models.format import load_model

    return load_model(model_dir)


class SlowModel:
    """A ``python_function`` model that takes its time on every call: a stop or a kill must land
    while shards are still running, however fast the machine."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def predict(self, X: Any) -> Any:
        time.sleep(self.delay_s)
        return (np.asarray(X["f0"]) + np.asarray(X["f1"]) > 0).astype(np.int64)


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shipyard.models.format import save_model

    folder = tmp_path_factory.mktemp("slow-model") / "model"
    save_model(SlowModel(0.4), folder, input_example=make_frame(5)[FEATURES])
    return folder


def slow_predictions(df: pd.DataFrame) -> Any:
    return SlowModel(0).predict(df)


@dataclass
class Registered:
    name: str
    version: int
    ref: str  # "churn@champion"


def register(services: Any, project: str, model_dir: Path, name: str = "churn") -> Registered:
    """Log the model folder in a run and register it with the alias ``champion``, through the
    services (the registry is not what these tests are about)."""
    from shipyard.models.schemas import ModelVersionCreate
    from shipyard.tracking.schemas import ExperimentCreate, RunCreate

    services.projects.ensure_project(project)
    exp = services.tracking.create_experiment(project, ExperimentCreate(name=f"{name}-training"))
    run = services.tracking.create_run(project, RunCreate(experiment_id=exp.id))
    services.tracking.log_artifact(project, run.id, model_dir, "model")
    v = services.models.register_model(
        project, name, ModelVersionCreate(source=f"runs:/{run.id}/model")
    )
    services.models.set_alias(project, name, "champion", v.version)
    return Registered(name=name, version=v.version, ref=f"{name}@champion")


@pytest.fixture
def churn(services: Any, project: str, model_dir: Path) -> Registered:
    return register(services, project, model_dir)


def read_output(folder: Path, fmt: str = "parquet") -> pd.DataFrame:
    """Every shard's file, in shard order (as the manifest lists them)."""
    import json

    manifest = json.loads((folder / "_manifest.json").read_text())
    parts = []
    for f in manifest["files"]:
        path = folder / f["file"]
        parts.append(pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path))
    return pd.concat(parts, ignore_index=True)
