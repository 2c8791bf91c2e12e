"""Fixtures for the jobs tests: services whose executor starts jobs quickly, and the launcher.

The shared ``services`` fixture's executor preloads the batch-inference libraries (pandas,
scikit-learn: seconds per fork server); jobs tests use an executor that preloads only the
launcher, so each test's first job starts in well under a second.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests.conftest import make_settings

# The real launcher when it is there; until then a stand-in with the same contract.
HAVE_LAUNCHER = importlib.util.find_spec("shipyard.jobs.launcher") is not None
TARGET = "shipyard.jobs.launcher:run_job" if HAVE_LAUNCHER else "tests.jobs.fixtures_jobs:run_job"
FIX = "tests.jobs.fixtures_jobs"


@pytest.fixture(autouse=True)
def _launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    import shipyard.jobs.worker as worker

    monkeypatch.setattr(worker, "LAUNCHER", TARGET)


@pytest.fixture(scope="session")
def job_executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One executor for every jobs test: its fork server imports the launcher and the SDK a job
    reaches (``jobs.worker.PRELOAD``) once per session, so each job starts in milliseconds."""
    from shipyard.core.executors import LocalExecutor
    from shipyard.jobs.worker import PRELOAD

    preload = list(PRELOAD) if HAVE_LAUNCHER else [TARGET.split(":")[0]]
    ex = LocalExecutor(tmp_path_factory.mktemp("job-tasks"), 2, kill_grace_s=2.0, preload=preload)
    yield ex
    ex.shutdown()


@pytest.fixture
def settings(tmp_path, db_url):  # type: ignore[no-untyped-def]
    # Each test its own home (job folders); the database is the session's, already migrated,
    # and every test has its own project.
    return make_settings(tmp_path / "home", db_url, job_lease_s=3.0)


@pytest.fixture
def services(settings, job_executor) -> Iterator[object]:  # type: ignore[no-untyped-def]
    from shipyard.server.context import LazyExecutor, Services

    s = Services.from_settings(settings)
    own, s.executor = s.executor, job_executor
    yield s
    if s.job_worker is not None:
        s.job_worker.stop()  # its tasks end; the shared executor stays for the next test
    s.executor = own
    assert isinstance(own, LazyExecutor)  # made on first use: never, in these tests
    assert own._executor is None
    s.close()


@pytest.fixture
def jobs(services, project):  # type: ignore[no-untyped-def]
    """The job service, with ``project`` made; the project's jobs are ended afterwards, so no
    job is left for the next test's worker (the database is shared)."""
    services.projects.ensure_project(project)
    yield services.jobs
    end_jobs(services.jobs, project)


def end_jobs(svc, project: str) -> None:  # type: ignore[no-untyped-def]
    from shipyard.jobs.schemas import ACTIVE_STATUSES

    for job in svc.list(project, status=list(ACTIVE_STATUSES), max_results=1000).data:
        svc.stop(project, job.id, reason="test over")


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """The SDK tests run each backend once, on a different store each: in-process on SQLite,
    over HTTP on PostgreSQL (the service tests cover both stores; this halves the jobs run)."""
    keep, drop = [], []
    for item in items:
        if "tests/jobs/test_sdk.py" in item.nodeid and (
            "[local-postgres]" in item.nodeid or "[http-sqlite]" in item.nodeid
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
