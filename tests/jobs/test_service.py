"""``JobService`` with its embedded worker, for real: SQLite and PostgreSQL, jobs run as
subprocesses of a ``LocalExecutor``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shipyard.core.errors import Conflict, InvalidArgument, NotFound
from shipyard.core.schemas import validate
from shipyard.jobs.schemas import JobCreate, JobStatus
from shipyard.jobs.service import LOST_WORKER
from tests.jobs.conftest import FIX


def spec(**kw: Any) -> JobCreate:
    return validate(JobCreate, **kw)


def log_text(jobs: Any, project: str, job_id: str) -> str:
    return "".join(c.data for c in jobs.logs(project, job_id).data)


def wait_for(predicate: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_job_runs_to_completed_with_run_logs_and_parsed_metrics(jobs, services, project):
    job = jobs.submit(
        project,
        spec(
            function=f"{FIX}:train",
            hyperparameters={"epochs": 4, "lr": 1.0},
            metric_definitions=[
                {"name": "loss", "regex": r"loss=([0-9.]+)"},
                {"name": "acc", "regex": r"acc=([0-9.]+)"},
            ],
            tags={"team": "vision"},
        ),
    )
    # The embedded worker may have claimed it already.
    assert job.status in (JobStatus.queued, JobStatus.starting, JobStatus.running)
    assert job.attempts == 1
    assert job.name.startswith("train-")
    done = jobs.wait(project, job.id, timeout_s=30)
    assert done.status == JobStatus.completed, done.failure_reason
    assert done.attempt == 1 and done.failure_reason is None
    assert done.started_at is not None and done.ended_at is not None
    assert done.ended_at >= done.started_at >= done.created_at
    assert done.report is not None and "findings" in done.report
    assert done.worker is None  # the lease is released

    run = services.tracking.get_run(project, done.run_id)
    assert run.status.value == "FINISHED"
    assert run.name == done.name
    assert run.tags["shipyard.job_id"] == job.id and run.tags["team"] == "vision"
    assert run.params == {"epochs": "4", "lr": "1.0"}
    exp = services.tracking.get_experiment(project, run.experiment_id)
    assert exp.name == "jobs"

    text = log_text(jobs, project, job.id)
    assert "epoch=3 loss=0.2500" in text
    assert "attempt 1 completed" in text
    loss = services.tracking.get_metric_history(project, done.run_id, "loss")
    assert loss.steps == [0, 1, 2, 3]
    assert loss.values == pytest.approx([1.0, 0.5, 0.3333, 0.25])
    acc = services.tracking.get_metric_history(project, done.run_id, "acc")
    assert acc.values == pytest.approx([0.5, 0.6, 0.7, 0.8])


def test_logs_are_followed_in_order_while_the_job_runs(jobs, project):
    job = jobs.submit(
        project,
        spec(
            entry_point=[
                "python",
                "-u",
                "-c",
                "import time\nfor i in range(5):\n"
                "    print(f'line {i}', flush=True); time.sleep(0.2)",
            ],
            source_dir="/tmp",
        ),
    )
    seen: list[str] = []
    after = 0
    saw_running_partial = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = jobs.logs(project, job.id, after_seq=after)
        seen.extend(c.data for c in page.data)
        assert all(c.seq > after for c in page.data)
        after = page.next_seq
        if page.status == JobStatus.running and "line 0" in "".join(seen):
            saw_running_partial = saw_running_partial or "line 4" not in "".join(seen)
        if page.done:
            break
        time.sleep(0.05)
    text = "".join(seen)
    assert page.done and page.status == JobStatus.completed
    assert saw_running_partial, "the log was readable while the job ran"
    assert [f"line {i}" in text for i in range(5)] == [True] * 5
    assert text.index("line 0") < text.index("line 4")
    # Nothing after the end.
    assert jobs.logs(project, job.id, after_seq=after).data == []


def test_stop_on_request_ends_a_running_job(jobs, services, project):
    job = jobs.submit(project, spec(function=f"{FIX}:sleep", hyperparameters={"seconds": 60}))
    wait_for(lambda: jobs.get(project, job.id).status == JobStatus.running)
    wait_for(lambda: "sleeping" in log_text(jobs, project, job.id))
    t0 = time.monotonic()
    asked = jobs.stop(project, job.id, reason="not needed any more")
    assert asked.stop_requested
    done = jobs.wait(project, job.id, timeout_s=20)
    assert done.status == JobStatus.stopped
    assert time.monotonic() - t0 < 10
    assert "stopped: not needed any more" in log_text(jobs, project, job.id)
    assert services.tracking.get_run(project, done.run_id).status.value == "KILLED"
    # Stopping a final job changes nothing.
    assert jobs.stop(project, job.id).status == JobStatus.stopped


def test_max_runtime_is_enforced(jobs, services, project):
    t0 = time.monotonic()
    job = jobs.submit(
        project,
        spec(function=f"{FIX}:sleep", hyperparameters={"seconds": 60}, max_runtime_s=1, retries=2),
    )
    done = jobs.wait(project, job.id, timeout_s=30)
    assert done.status == JobStatus.failed
    assert "max_runtime_s (1 s)" in (done.failure_reason or "")
    assert done.attempt == 1  # the time budget is spent: no retry
    assert time.monotonic() - t0 < 15
    assert services.tracking.get_run(project, done.run_id).status.value == "FAILED"


def test_a_failed_attempt_is_retried_and_the_checkpoint_folder_survives(jobs, services, project):
    job = jobs.submit(project, spec(function=f"{FIX}:fail_once", retries=1))
    assert job.attempts == 2
    done = jobs.wait(project, job.id, timeout_s=30)
    assert done.status == JobStatus.completed, done.failure_reason
    assert done.attempt == 2
    text = log_text(jobs, project, job.id)
    assert "attempt 1 failed: RuntimeError: simulated crash; retrying (attempt 2 of 2)" in text
    assert "resumed from checkpoint-of-attempt-1 in attempt 2" in text
    ckpt = Path(services.settings.home) / "jobs" / job.id / "checkpoints" / "rank-0" / "state.txt"
    assert ckpt.read_text() == "checkpoint-of-attempt-1"
    chunks = jobs.logs(project, job.id).data
    assert {c.attempt for c in chunks} == {1, 2}
    assert services.tracking.get_run(project, done.run_id).status.value == "FINISHED"


def test_retries_exhausted_fail_with_the_users_error(jobs, services, project):
    job = jobs.submit(
        project, spec(function=f"{FIX}:fail", hyperparameters={"message": "bad data"}, retries=1)
    )
    done = jobs.wait(project, job.id, timeout_s=30)
    assert done.status == JobStatus.failed
    assert done.attempt == 2
    assert done.failure_reason == "ValueError: bad data"
    assert done.report is not None and "findings" in done.report  # written despite the error
    assert "Traceback" in log_text(jobs, project, job.id)  # the user's traceback, in their log
    assert services.tracking.get_run(project, done.run_id).status.value == "FAILED"


def test_instance_count_runs_one_task_per_rank(jobs, project):
    job = jobs.submit(project, spec(function=f"{FIX}:show_rank", instance_count=2))
    done = jobs.wait(project, job.id, timeout_s=30)
    assert done.status == JobStatus.completed, done.failure_reason
    chunks = jobs.logs(project, job.id).data
    by_rank = {c.rank: "" for c in chunks if c.rank is not None}
    for c in chunks:
        if c.rank is not None:
            by_rank[c.rank] += c.data
    assert set(by_rank) == {0, 1}
    for rank in (0, 1):
        line = next(ln for ln in by_rank[rank].splitlines() if ln.startswith("contract"))
        fields = dict(kv.split("=", 1) for kv in line.split()[1:])
        assert fields["SHIPYARD_RANK"] == str(rank)
        assert fields["SHIPYARD_WORLD_SIZE"] == "2"
        assert fields["SHIPYARD_MASTER_ADDR"] == "127.0.0.1"
        assert 0 < int(fields["SHIPYARD_MASTER_PORT"]) < 65536
    ports = {
        dict(kv.split("=", 1) for kv in ln.split()[1:])["SHIPYARD_MASTER_PORT"]
        for r in (0, 1)
        for ln in by_rank[r].splitlines()
        if ln.startswith("contract")
    }
    assert len(ports) == 1  # every rank meets at the same rendezvous


def test_a_job_larger_than_the_executor_fails_with_a_clear_reason(jobs, project):
    job = jobs.submit(
        project, spec(function=f"{FIX}:train", resources={"cpus": 2}, instance_count=2)
    )
    done = jobs.wait(project, job.id, timeout_s=20)
    assert done.status == JobStatus.failed
    assert "needs 4 CPUs" in (done.failure_reason or "")


# -- the queue, without a worker -------------------------------------------------------------


@pytest.fixture
def queue(jobs):  # type: ignore[no-untyped-def]
    """The job service with no worker of this process running (jobs stay queued)."""
    jobs.on_submit = None
    return jobs


def test_idempotency_key_gives_one_job(queue, services, project):
    a = queue.submit(project, spec(function=f"{FIX}:train", idempotency_key="nightly-42"))
    b = queue.submit(
        project,
        spec(function=f"{FIX}:sleep", idempotency_key="nightly-42", hyperparameters={"x": 1}),
    )
    assert a.id == b.id and b.spec.function == f"{FIX}:train"
    assert queue.list(project).count == 1
    runs = services.tracking.search_runs(project, validate_search(experiment_ids=[a.experiment_id]))
    assert [r.id for r in runs.data] == [a.run_id]


def validate_search(**kw: Any) -> Any:
    from shipyard.tracking.schemas import SearchRuns

    return validate(SearchRuns, **kw)


def test_stop_a_queued_job_is_immediate(queue, services, project):
    job = queue.submit(project, spec(function=f"{FIX}:train"))
    stopped = queue.stop(project, job.id, reason="changed my mind")
    assert stopped.status == JobStatus.stopped and stopped.ended_at is not None
    assert "stopped before it started: changed my mind" in log_text(queue, project, job.id)
    assert services.tracking.get_run(project, job.run_id).status.value == "KILLED"
    claimed = queue.claim("w", 100)
    assert claimed is None or claimed.id != job.id


def test_list_is_filtered_and_paginated(queue, project):
    ids = [queue.submit(project, spec(function=f"{FIX}:train")).id for _ in range(3)]
    tuned = queue.submit(project, spec(function=f"{FIX}:train", tuning_job_id="tj1")).id
    queue.stop(project, ids[0])
    page = queue.list(project, max_results=2)
    assert page.count == 4 and len(page.data) == 2 and page.next_page_token
    rest = queue.list(project, max_results=2, page_token=page.next_page_token)
    assert rest.next_page_token is None
    assert [j.id for j in page.data + rest.data] == [tuned, *reversed(ids)]  # newest first
    queued = queue.list(project, status=JobStatus.queued)
    assert {j.id for j in queued.data} == {ids[1], ids[2], tuned} and queued.count == 3
    both = queue.list(project, status=[JobStatus.stopped, JobStatus.completed])
    assert [j.id for j in both.data] == [ids[0]]
    assert [j.id for j in queue.list(project, tuning_job_id="tj1").data] == [tuned]
    with pytest.raises(InvalidArgument) as err:
        queue.list(project, page_token="not-a-token")
    assert err.value.details["field"] == "page_token"


def test_get_and_delete(queue, project):
    job = queue.submit(project, spec(function=f"{FIX}:train"))
    with pytest.raises(Conflict):
        queue.delete(project, job.id)
    queue.stop(project, job.id)
    queue.delete(project, job.id)
    with pytest.raises(NotFound) as err:
        queue.get(project, job.id)
    assert err.value.details["field"] == "job_id"


def test_a_lost_lease_is_retried_then_failed_never_left_running(queue, services, project):
    job = queue.submit(project, spec(function=f"{FIX}:train", retries=1))
    claimed = queue.claim("ghost-worker", 4, lease_ms=1)
    assert claimed is not None and claimed.id == job.id and claimed.attempt == 1
    assert queue.get(project, job.id).status == JobStatus.starting
    time.sleep(0.01)
    assert job.id in queue.reap()
    again = queue.get(project, job.id)
    assert again.status == JobStatus.queued and again.attempt == 1
    assert LOST_WORKER in (again.failure_reason or "")
    assert queue.claim("ghost-worker", 4, lease_ms=1).attempt == 2  # type: ignore[union-attr]
    time.sleep(0.01)
    assert job.id in queue.reap()
    final = queue.get(project, job.id)
    assert final.status == JobStatus.failed and final.failure_reason == LOST_WORKER
    assert services.tracking.get_run(project, job.run_id).status.value == "FAILED"
    assert "stopped heartbeating" in log_text(queue, project, job.id)


def test_claims_skip_jobs_that_do_not_fit_and_never_double_claim(queue, project):
    big = queue.submit(project, spec(function=f"{FIX}:train", resources={"cpus": 4})).id
    small = queue.submit(project, spec(function=f"{FIX}:train")).id
    first = queue.claim("a", 1)
    assert first is not None and first.id == small
    assert queue.claim("b", 1) is None
    second = queue.claim("b", 4)
    assert second is not None and second.id == big
    assert queue.claim("c", 100) is None


def test_bad_specs_name_the_field():
    cases = {
        "metric_definitions.0.regex": {
            "function": "m:f",
            "metric_definitions": [{"name": "loss", "regex": "loss=[0-9]+"}],
        },
        "resources.cpus": {"function": "m:f", "resources": {"cpus": 0}},
        "function": {"function": "not a target"},
        "inputs": {"function": "m:f", "inputs": {"bad name": "/tmp"}},
        "entry_point": {"entry_point": "train.sh", "source_dir": "/tmp"},
        "max_runtime_s": {"function": "m:f", "max_runtime_s": 0},
    }
    for field, body in cases.items():
        with pytest.raises(InvalidArgument) as err:
            spec(**body)
        assert err.value.details["field"] == field, (field, err.value.message)
    with pytest.raises(InvalidArgument) as err:
        spec(function="m:f", algorithm="xgboost")
    assert "exactly one of entry_point" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        spec(entry_point="train.py")
    assert "source_dir" in err.value.message


def test_workers_claiming_at_once_never_take_the_same_job(queue, project):
    from concurrent.futures import ThreadPoolExecutor

    ids = {queue.submit(project, spec(function=f"{FIX}:train")).id for _ in range(8)}

    def claim_all(owner: str) -> list[str]:
        got = []
        while (job := queue.claim(owner, 1)) is not None:
            got.append(job.id)
        return got

    with ThreadPoolExecutor(4) as pool:
        claimed = list(pool.map(claim_all, ["w1", "w2", "w3", "w4"]))
    mine = [jid for got in claimed for jid in got if jid in ids]
    assert sorted(mine) == sorted(ids)  # every job once, none twice


def test_a_job_that_ends_here_is_settled_and_seen_at_once(jobs, services, project):
    """A worker that ticks only every 30 s still records a job as soon as its task ends (the
    executor tells it), and a caller waiting in this process (a tuning job's coordinator)
    wakes then, with the job's whole log written: its start, its output, its end."""
    import threading

    from shipyard.jobs.worker import JobWorker

    jobs.on_submit = None  # no embedded worker: the slow one below runs the job
    job = jobs.submit(project, spec(function=f"{FIX}:train", hyperparameters={"epochs": 2}))
    other = jobs.submit(project, spec(function=f"{FIX}:sleep", hyperparameters={"seconds": 60}))
    stop = threading.Event()
    # Nothing ended yet: a wait times out, or returns when its stop event is set.
    t0 = time.monotonic()
    assert jobs.wait_for_end([job.id], 0.2) is False
    assert time.monotonic() - t0 >= 0.2
    stop.set()
    t0 = time.monotonic()
    assert jobs.wait_for_end([job.id], 30, stop) is False
    assert time.monotonic() - t0 < 5

    worker = JobWorker(jobs, services.executor, services.settings, tick_s=30, idle_poll_s=30)
    t0 = time.monotonic()
    worker.start()
    try:
        assert jobs.wait_for_end([job.id, None], 20) is True
        elapsed = time.monotonic() - t0
        done = jobs.get(project, job.id)
        assert done.status == JobStatus.completed, done.failure_reason
        assert elapsed < 15  # not at the worker's next tick, 30 s on
        assert jobs.wait(project, job.id, timeout_s=1).status == JobStatus.completed
        # The other job still runs: waiting on it alone times out.
        assert jobs.wait_for_end([other.id], 0.1) is False
    finally:
        worker.stop()
    lines = [ln for ln in log_text(jobs, project, job.id).splitlines() if ln]
    assert lines[0].startswith("shipyard: attempt 1 of 1 starting on ")
    assert "epoch=1 loss=0.0500 acc=0.60" in lines
    assert lines[-1] == "shipyard: attempt 1 completed"
    assert services.tracking.get_run(project, done.run_id).status.value == "FINISHED"


def test_a_purged_jobs_experiment_is_made_again_at_the_next_submit(queue, services, project):
    """The service remembers the experiment a job's run goes in; one deleted and purged since
    is looked up (and made) again, not refused."""
    first = queue.submit(project, spec(function=f"{FIX}:train", experiment="nightly"))
    tracking = services.tracking
    exp = tracking.get_experiment_by_name(project, "nightly")
    assert exp.id == first.experiment_id
    tracking.delete_experiment(project, exp.id)
    tracking.purge(project, experiment_ids=[exp.id])
    second = queue.submit(project, spec(function=f"{FIX}:train", experiment="nightly"))
    again = tracking.get_experiment_by_name(project, "nightly")
    assert again.id != exp.id and second.experiment_id == again.id
    assert tracking.get_run(project, second.run_id).experiment_id == again.id
