"""The job worker as a process of its own (``shipyard worker``), killed under its jobs, and the
embedded worker shutting down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shipyard.core.schemas import validate
from shipyard.jobs.schemas import JobCreate, JobStatus
from shipyard.jobs.service import LOST_WORKER
from shipyard.jobs.worker import JobWorker
from tests.jobs.conftest import FIX, TARGET
from tests.jobs.test_service import log_text, wait_for

ROOT = Path(__file__).resolve().parents[2]
# `shipyard worker`, pointed at the launcher these tests use.
WORKER = (
    "import sys, shipyard.jobs.worker as w; w.LAUNCHER = sys.argv.pop(1); "
    "from shipyard.cli.main import main; main()"
)


def start_worker(settings, home: Path, lease_s: float) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        SHIPYARD_HOME=str(home),
        SHIPYARD_DATABASE_URL=settings.database_url,
        SHIPYARD_ARTIFACT_ROOT=settings.artifact_root,  # the same store as the test's
        SHIPYARD_JOB_LEASE_S=str(lease_s),
        # Only what the jobs need: the batch libraries would take seconds to import.
        SHIPYARD_EXECUTOR_PRELOAD=f'["{TARGET.split(":")[0]}"]',
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, TARGET, "worker", "--slots", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_killed_worker_leaves_no_job_running(jobs, services, settings, project, tmp_path):
    jobs.on_submit = None  # this process runs no worker until the other one is dead
    retried = jobs.submit(
        project, validate(JobCreate, function=f"{FIX}:slow_first_attempt", retries=1)
    )
    failed = jobs.submit(
        project, validate(JobCreate, function=f"{FIX}:sleep", hyperparameters={"seconds": 120})
    )
    proc = start_worker(settings, tmp_path / "worker-home", lease_s=2.0)
    try:
        for job, line in ((retried, "attempt 1 running"), (failed, "sleeping")):
            wait_for(lambda j=job, ln=line: ln in log_text(jobs, project, j.id), timeout_s=60)
            got = jobs.get(project, job.id)
            assert got.status == JobStatus.running and got.worker is not None
            assert got.worker.split(":")[1] == str(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in err, err
    killed_at = time.monotonic()
    # Still "running" on paper, until the lease runs out; then any worker settles them.
    assert jobs.get(project, failed.id).status == JobStatus.running
    services.start_job_worker()
    done_failed = jobs.wait(project, failed.id, timeout_s=30)
    assert done_failed.status == JobStatus.failed
    assert done_failed.failure_reason == LOST_WORKER
    assert time.monotonic() - killed_at >= 1.0  # not before its lease (2 s) could expire
    assert services.tracking.get_run(project, done_failed.run_id).status.value == "FAILED"

    done = jobs.wait(project, retried.id, timeout_s=30)
    assert done.status == JobStatus.completed, done.failure_reason
    assert done.attempt == 2
    text = log_text(jobs, project, retried.id)
    assert "attempt 1 lost: the worker running it stopped heartbeating; retrying" in text
    assert "attempt 2 running" in text and text.rstrip().endswith("attempt 2 completed")
    assert services.tracking.get_run(project, done.run_id).status.value == "FINISHED"


def test_a_worker_shutting_down_gives_its_jobs_back(jobs, services, project):
    job = jobs.submit(
        project, validate(JobCreate, function=f"{FIX}:sleep", hyperparameters={"seconds": 1.5})
    )
    wait_for(lambda: "sleeping" in log_text(jobs, project, job.id))
    services.job_worker.stop()
    back = jobs.get(project, job.id)
    assert back.status == JobStatus.queued
    assert back.attempt == 0 and back.worker is None  # the attempt is not counted
    assert "shut down; job re-queued" in log_text(jobs, project, job.id)

    again = JobWorker(jobs, services.executor, services.settings)
    again.start()
    try:
        done = jobs.wait(project, job.id, timeout_s=30)
    finally:
        again.stop()
    assert done.status == JobStatus.completed and done.attempt == 1


def test_the_server_runs_queued_jobs_on_start_and_gives_them_back_on_shutdown(
    jobs, services, project
):
    import asyncio

    from shipyard.server.app import create_app

    jobs.on_submit = None  # queued before the server starts: nothing runs them yet
    early = jobs.submit(project, validate(JobCreate, function=f"{FIX}:train"))
    app = create_app(services)

    async def serve() -> str:
        async with app.router.lifespan_context(app):  # the app's start-up, then its shutdown
            assert jobs.wait(project, early.id, timeout_s=30).status == JobStatus.completed
            late = jobs.submit(
                project,
                validate(JobCreate, function=f"{FIX}:sleep", hyperparameters={"seconds": 60}),
            )
            services.start_job_worker()  # what a submit through the server does
            wait_for(lambda: "sleeping" in log_text(jobs, project, late.id))
            return late.id

    late_id = asyncio.run(serve())
    back = jobs.get(project, late_id)
    assert back.status == JobStatus.queued and back.attempt == 0
