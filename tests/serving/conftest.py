"""Fixtures for the endpoint tests: real models in the registry, and no endpoint left running.

- ``models``: two tiny scikit-learn models on four features that answer opposite things for
  the same row (``pos`` says 1 where ``f0 > 0``, ``neg`` says 0), so a test can tell which
  model version answered; ``register`` logs one in a run and registers it as a version.
- ``reap``: at the end of a test, every endpoint of its project is deleted (its process
  stopped); at the end of the session any runtime process started under the test home is
  killed, whatever a failed test left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

COLUMNS = ["f0", "f1", "f2", "f3"]


@dataclass
class Models:
    X: Any  # a DataFrame of training rows
    pos: Any
    neg: Any

    def row(self, f0: float = 3.0) -> Any:
        import pandas as pd

        return pd.DataFrame([[f0, 0.1, -0.2, 0.3]], columns=COLUMNS)


@pytest.fixture(scope="session")
def models() -> Models:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=COLUMNS)
    pos = LogisticRegression().fit(X, (X.f0 > 0).astype(int))
    neg = LogisticRegression().fit(X, (X.f0 < 0).astype(int))
    return Models(X, pos, neg)


Register = Callable[..., int]


def register_model(
    services: Any,
    project: str,
    name: str,
    model: Any,
    example: Any,
    folder: Path,
    alias: str | None = None,
) -> int:
    """Log ``model`` in a run of ``project`` and register it as the next version of ``name``."""
    from shipyard.models.format import save_model
    from shipyard.models.schemas import ModelVersionCreate
    from shipyard.tracking.schemas import ExperimentCreate, RunCreate

    services.projects.ensure_project(project)
    try:
        exp = services.tracking.get_experiment_by_name(project, "models")
    except Exception:
        exp = services.tracking.create_experiment(project, ExperimentCreate(name="models"))
    run = services.tracking.create_run(project, RunCreate(experiment_id=exp.id))
    save_model(model, folder, input_example=example)
    services.tracking.log_artifact(project, run.id, folder, "model")
    v = services.models.register_model(
        project, name, ModelVersionCreate(source=f"runs:/{run.id}/model")
    )
    if alias:
        services.models.set_alias(project, name, alias, v.version)
    return int(v.version)


@pytest.fixture
def register(services: Any, models: Models, tmp_path: Path) -> Register:
    """``register(project, "fraud", models.pos, alias="champion") -> version``."""

    def reg(project: str, name: str, model: Any, alias: str | None = None) -> int:
        folder = tmp_path / f"model-{uuid.uuid4().hex[:8]}"
        return register_model(services, project, name, model, models.X.head(5), folder, alias=alias)

    return reg


@pytest.fixture
def reap(services: Any, project: str) -> Iterator[None]:
    yield
    from shipyard.core.errors import ShipyardError

    try:
        page = services.endpoints.list(project, with_stats=False)
    except ShipyardError:
        return
    for ep in page.data:
        with contextlib.suppress(ShipyardError):
            services.endpoints.delete(project, ep.name)


@pytest.fixture(scope="session", autouse=True)
def _kill_leftover_runtimes(sqlite_home: Path) -> Iterator[None]:
    yield
    import psutil

    marker = str(sqlite_home)
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "shipyard.serving.runtime" in cmd and any(marker in c for c in cmd):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)


def wait_for(
    predicate: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.05
) -> Any:
    """Poll until ``predicate()`` is truthy; return it, or fail the test with the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met after {timeout_s} s (last: {last!r})")


def wait_in_service(svc: Any, project: str, name: str, timeout_s: float = 60.0) -> Any:
    def settled() -> Any:
        ep = svc.get(project, name, with_stats=False)
        return ep if ep.status.value not in ("Creating", "Updating") else None

    ep = wait_for(settled, timeout_s)
    assert ep.status.value == "InService", ep
    return ep


def pid_alive(pid: int | None) -> bool:
    import psutil

    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
