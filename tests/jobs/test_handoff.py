"""A completed attempt's last metrics and report travel back with its result and are stored by
the worker with how the attempt ended (``run_job(handoff=True)``), on SQLite and PostgreSQL: what
the job's code logged is all there when the job is seen completed, however much it logged, and a
failure to store it fails the attempt with the reason."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from shipyard.core.schemas import validate
from shipyard.jobs.handoff import MAX_ROWS as HANDOFF_MAX_ROWS
from shipyard.jobs.schemas import JobCreate, JobStatus


def spec(**kw: Any) -> JobCreate:
    return validate(JobCreate, **kw)


def script(tmp_path: Path, body: str) -> Path:
    (tmp_path / "train.py").write_text(textwrap.dedent(body), encoding="utf-8")
    return tmp_path


def test_a_short_jobs_metrics_profile_and_report_are_there_when_it_completes(
    jobs, services, project, tmp_path
):
    src = script(
        tmp_path,
        """
        import shipyard as sy
        for step in range(5):
            sy.log_metric("loss", 1.0 / (step + 1), step=step)
        sy.log_metrics({"acc": 0.5, "f1": 0.25})
        sy.log_metric("loss_nan", float("nan"))
        """,
    )
    job = jobs.submit(project, spec(entry_point="train.py", source_dir=str(src)))
    done = jobs.wait(project, job.id, timeout_s=60)
    assert done.status == JobStatus.completed, done.failure_reason
    tracking = services.tracking
    loss = tracking.get_metric_history(project, done.run_id, "loss")
    assert loss.steps == [0, 1, 2, 3, 4]
    assert loss.values == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    run = tracking.get_run(project, done.run_id)
    assert run.metrics["acc"].value == 0.5 and run.metrics["f1"].value == 0.25
    assert run.metrics["loss_nan"].value is None
    # The profile's one sample (the job is shorter than the sampling interval).
    assert any(k.startswith("profile/") for k in run.metrics)
    assert run.status.value == "FINISHED"
    # The report: on the job and as the run's artifact, the same document.
    arts = [a.path for a in tracking.list_artifacts(project, done.run_id).files]
    assert "report.json" in arts
    path = tracking.download_artifacts(project, done.run_id, "report.json", str(tmp_path / "dl"))
    assert json.loads(Path(path).read_text()) == done.report
    # A job forked from the fork server shares the server's image: what it holds alone, for a
    # job this short, is its resident memory beyond that, far below the image itself.
    profile = done.report["summary"]["profile"]
    assert 0 < profile["memory_peak_bytes"] < profile["memory_rss_peak_bytes"] / 2


def test_more_rows_than_the_handoff_takes_are_all_stored(jobs, services, project, tmp_path):
    n = HANDOFF_MAX_ROWS + 5_000
    src = script(
        tmp_path,
        f"""
        import shipyard as sy
        for step in range({n}):
            sy.log_metric("x", float(step), step=step)
        """,
    )
    job = jobs.submit(project, spec(entry_point="train.py", source_dir=str(src)))
    done = jobs.wait(project, job.id, timeout_s=120)
    assert done.status == JobStatus.completed, done.failure_reason
    history = services.tracking.get_metric_history(project, done.run_id, "x")
    assert history.steps == list(range(n))
    assert history.values[-1] == float(n - 1)


def test_a_run_deleted_before_the_end_fails_the_attempt_with_the_reason(
    jobs, services, project, tmp_path
):
    go = tmp_path / "go"
    src = script(
        tmp_path,
        f"""
        import os, time
        import shipyard as sy
        sy.log_metric("loss", 0.5)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.02)
        """,
    )
    job = jobs.submit(project, spec(entry_point="train.py", source_dir=str(src), retries=0))
    deadline = time.monotonic() + 30
    while jobs.get(project, job.id).status != JobStatus.running:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    services.tracking.delete_run(project, job.run_id)
    go.write_text("now")
    done = jobs.wait(project, job.id, timeout_s=60)
    assert done.status == JobStatus.failed
    assert "storing the attempt's last metrics and report failed" in (done.failure_reason or "")
    assert "deleted" in (done.failure_reason or "")
