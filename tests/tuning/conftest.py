"""Fixtures for tuning jobs with real trial jobs: each test its own Shipyard home, and an
executor of two slots whose fork server preloads only the job launcher (so a trial starts in a
fraction of a second, not the seconds the batch-inference preload takes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings

SCRIPTS = Path(__file__).parent / "scripts"


def fast_services(settings):  # type: ignore[no-untyped-def]
    from shipyard.core.executors import LocalExecutor
    from shipyard.server.context import Services

    s = Services.from_settings(settings)
    s.executor.shutdown()
    s.executor = LocalExecutor(
        settings.home / "tasks", 2, kill_grace_s=2.0, preload=["shipyard.jobs.launcher"]
    )
    return s


@pytest.fixture
def settings(tmp_path, db_url):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    if db_url.startswith("sqlite"):
        db_url = f"sqlite:///{home / 'shipyard.db'}"
    return make_settings(home, db_url, job_lease_s=3.0)


@pytest.fixture
def services(settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    s = fast_services(settings)
    yield s
    s.close()


LOSS = [{"name": "loss", "regex": r"loss=([0-9.eE+-]+)"}]


@pytest.fixture
def trial_spec() -> dict[str, object]:
    return {"entry_point": "train.py", "source_dir": str(SCRIPTS)}


@pytest.fixture
def printing_trial() -> dict[str, object]:
    """The script printing its loss, read by a metric definition (no tracking set-up in the
    trial's process: the fastest trial there is)."""
    return {
        "entry_point": "train.py",
        "source_dir": str(SCRIPTS),
        "metric_definitions": LOSS,
        "hyperparameters": {"report": "print"},
    }
