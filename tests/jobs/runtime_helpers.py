"""Running the launcher as the worker does, for the runtime tests: a run made first, then
``shipyard.jobs.launcher:run_job`` submitted as a ``LocalExecutor`` task (a real forked process)
with the tracking environment and the contract's arguments.

Also job code the tests run by import path (``function="tests.jobs.runtime_helpers:..."``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shipyard.core.executors import LocalExecutor, TaskSpec, TaskStatus

ROOT = str(Path(__file__).resolve().parents[2])  # so a task can import ``tests.jobs...``
LAUNCHER = "shipyard.jobs.launcher:run_job"


@dataclass
class Attempt:
    status: TaskStatus
    log: str
    rank_dir: Path

    @property
    def report(self) -> dict[str, Any]:
        """The report the launcher wrote beside the attempt's folders."""
        return dict(orjson.loads((self.rank_dir / "report.json").read_bytes()))


@dataclass
class JobHarness:
    """One job: its run, its folder, and a way to launch its attempts."""

    services: Any
    executor: LocalExecutor
    project: str
    run_id: str
    job_id: str
    job_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        s = self.services.settings
        return {
            "SHIPYARD_HOME": str(s.home),
            "SHIPYARD_DATABASE_URL": s.database_url,
            "SHIPYARD_ARTIFACT_ROOT": s.artifact_root,
            "SHIPYARD_PROJECT": self.project,
            "SHIPYARD_RUN_ID": self.run_id,
            "SHIPYARD_JOB_WORKERS_EMBEDDED": "false",
            "PYTHONPATH": ROOT,
            **self.extra_env,
        }

    def submit(
        self, spec: dict[str, Any], *, attempt: int = 1, rank: int = 0, world_size: int = 1
    ) -> str:
        return self.executor.submit(
            TaskSpec(
                target=LAUNCHER,
                args={
                    "job_id": self.job_id,
                    "run_id": self.run_id,
                    "project": self.project,
                    "attempt": attempt,
                    "rank": rank,
                    "world_size": world_size,
                    "master_addr": "127.0.0.1",
                    "master_port": 29511,
                    "spec": spec,
                    "job_dir": str(self.job_dir),
                },
                name=f"job-{self.job_id}-{rank}",
                env=self.env(),
                cpus=1,
                timeout_s=120,
            )
        )

    def attempt_of(self, task_id: str, attempt: int = 1, rank: int = 0) -> Attempt:
        st = self.executor.wait(task_id, 120)
        return Attempt(
            st,
            self.executor.logs(task_id),
            self.job_dir / f"attempt-{attempt}" / f"rank-{rank}",
        )

    def run(
        self, spec: dict[str, Any], *, attempt: int = 1, rank: int = 0, world_size: int = 1
    ) -> Attempt:
        task = self.submit(spec, attempt=attempt, rank=rank, world_size=world_size)
        return self.attempt_of(task, attempt, rank)

    # -- what the run holds ---------------------------------------------------------------------

    def get_run(self) -> Any:
        return self.services.tracking.get_run(self.project, self.run_id)

    def artifacts(self) -> list[str]:
        listing = self.services.tracking.list_artifacts(self.project, self.run_id, None, True)
        return sorted(a.path for a in listing.files if not a.is_dir)

    def artifact_json(self, path: str) -> Any:
        listing = self.services.tracking.list_artifacts(self.project, self.run_id, None, True)
        digest = next(a.digest for a in listing.files if a.path == path)
        return orjson.loads(self.services.store.read_bytes(digest))

    def history(self, key: str) -> list[float | None]:
        return list(
            self.services.tracking.get_metric_history(self.project, self.run_id, key).values
        )


def make_job(services: Any, executor: LocalExecutor, project: str) -> JobHarness:
    """A run in experiment "jobs", as the jobs service makes one before the first attempt."""
    from shipyard.tracking.schemas import ExperimentCreate, RunCreate

    t = services.tracking
    services.projects.ensure_project(project)
    try:
        exp = t.get_experiment_by_name(project, "jobs")
    except Exception:
        exp = t.create_experiment(project, ExperimentCreate(name="jobs"))
    job_id = uuid.uuid4().hex[:12]
    run = t.create_run(
        project,
        RunCreate(experiment_id=exp.id, name=f"job-{job_id}", tags={"shipyard.job_id": job_id}),
    )
    job_dir = Path(services.settings.home) / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    return JobHarness(services, executor, project, run.id, job_id, job_dir)


# -- job code run by import path ------------------------------------------------------------------


def add(a: int = 0, b: int = 0) -> dict[str, Any]:
    """Returns what it was called with, and the contract's rank, as a function job."""
    return {"sum": a + b, "rank": os.environ.get("SHIPYARD_RANK"), "cwd": os.getcwd()}
