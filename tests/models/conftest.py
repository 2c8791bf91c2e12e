"""Fixtures for the model registry tests: a small fitted model and a run that logged it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# The server tests' fixtures: a server with custom settings, a REST client, auth and roles.
from tests.server.conftest import api, make_server, proj  # noqa: F401
from tests.server.test_auth import auth, team  # noqa: F401

RNG = np.random.default_rng(3)
FEATURES = pd.DataFrame(RNG.normal(size=(60, 3)), columns=["a", "b", "c"])
LABELS = (FEATURES["a"] + FEATURES["b"] > 0).astype(int)


@pytest.fixture(scope="session")
def small_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(FEATURES, LABELS)


@dataclass
class Logged:
    run_id: str
    uri: str


@pytest.fixture
def log_model_in_run(
    services: Any, project: str, small_model: Any, tmp_path: Path
) -> Callable[..., Logged]:
    """Log ``small_model`` (or another) as a model folder in a new run, through the services."""
    from shipyard.models.format import save_model
    from shipyard.tracking.schemas import ExperimentCreate, RunCreate

    services.projects.ensure_project(project)
    exp = services.tracking.create_experiment(project, ExperimentCreate(name="registry"))
    counter = iter(range(10_000))

    def log(model: Any = None, path: str = "model", run_id: str | None = None) -> Logged:
        if run_id is None:
            run_id = services.tracking.create_run(project, RunCreate(experiment_id=exp.id)).id
        folder = tmp_path / f"m{next(counter)}"
        save_model(model if model is not None else small_model, folder, input_example=FEATURES[:3])
        services.tracking.log_artifact(project, run_id, folder, path)
        return Logged(run_id=run_id, uri=f"runs:/{run_id}/{path}")

    return log
