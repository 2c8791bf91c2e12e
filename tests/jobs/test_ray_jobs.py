"""Training jobs on a real local Ray, through the jobs service with ``executor="ray"``.

The team set-up: PostgreSQL for the metadata store, a Ray cluster for compute. One Ray is
started for the module; each test's services join it (``RayExecutor`` shares the process's Ray
connection) and the module stops it at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipyard.core.schemas import validate
from shipyard.jobs.schemas import JobCreate, JobStatus
from tests.conftest import make_settings
from tests.jobs.conftest import FIX, end_jobs

TRAIN = """\
import json, os, sys
import shipyard as sy

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
lr = float(args["--lr"])
for epoch in range(3):
    loss = lr / (epoch + 1)
    print(f"epoch={epoch} loss={loss:.4f}", flush=True)
    sy.log_metric("sdk_loss", loss, step=epoch)
with open(os.path.join(os.environ["SHIPYARD_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"lr": lr, "task": os.environ["SHIPYARD_TASK_ID"]}, f)
print("done training", flush=True)
"""


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local Ray for the module, held by an executor of its own (each service's executor
    joins it in-process)."""
    from shipyard.core.ray_executor import RayExecutor

    holder = RayExecutor(tmp_path_factory.mktemp("ray-holder"), num_cpus=2)
    yield
    holder.shutdown()


@pytest.fixture
def db_url(pg_url: str) -> str:
    return pg_url


@pytest.fixture
def services(ray_cluster: None, tmp_path: Path, db_url: str) -> Iterator[Any]:
    from shipyard.core.ray_executor import RayExecutor
    from shipyard.server.context import Services

    settings = make_settings(tmp_path / "home", db_url, job_lease_s=5.0, executor="ray")
    s = Services.from_settings(settings)
    assert isinstance(s.executor.get(), RayExecutor)  # made on first use
    yield s
    s.close()


@pytest.fixture
def jobs(services: Any, project: str) -> Iterator[Any]:
    services.projects.ensure_project(project)
    yield services.jobs
    end_jobs(services.jobs, project)


def spec(**kw: Any) -> JobCreate:
    return validate(JobCreate, **kw)


def log_text(jobs: Any, project: str, job_id: str) -> str:
    return "".join(c.data for c in jobs.logs(project, job_id).data)


def test_a_script_job_trains_on_ray_with_logs_metrics_and_a_model(
    jobs: Any, services: Any, project: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    job = jobs.submit(
        project,
        spec(
            entry_point="train.py",
            source_dir=str(src),
            hyperparameters={"lr": 0.5},
            metric_definitions=[{"name": "loss", "regex": r"loss=([0-9.]+)"}],
        ),
    )
    done = jobs.wait(project, job.id, timeout_s=90)
    text = log_text(jobs, project, job.id)
    assert done.status == JobStatus.completed, (done.failure_reason, text)
    assert "shipyard: starting train.py (attempt 1, rank 0/1)" in text
    assert "epoch=2 loss=0.1667" in text and "done training" in text

    run = services.tracking.get_run(project, done.run_id)
    assert run.status.value == "FINISHED"
    assert run.params == {"lr": "0.5"}
    # Parsed from the log by the worker, and logged by the script through the SDK.
    parsed = services.tracking.get_metric_history(project, done.run_id, "loss")
    assert parsed.values == pytest.approx([0.5, 0.25, 0.1667])
    logged = services.tracking.get_metric_history(project, done.run_id, "sdk_loss")
    assert logged.steps == [0, 1, 2]

    listing = services.tracking.list_artifacts(project, done.run_id, None, True)
    files = {a.path: a for a in listing.files if not a.is_dir}
    assert "model/model.json" in files and "report.json" in files
    model = orjson.loads(services.store.read_bytes(files["model/model.json"].digest))
    assert model["lr"] == 0.5
    assert done.report is not None and "findings" in done.report


def test_two_instances_on_ray_see_distinct_ranks_and_one_rendezvous(
    jobs: Any, project: str
) -> None:
    job = jobs.submit(project, spec(function=f"{FIX}:show_rank", instance_count=2))
    done = jobs.wait(project, job.id, timeout_s=90)
    assert done.status == JobStatus.completed, done.failure_reason
    lines: dict[int, dict[str, str]] = {}
    for chunk in jobs.logs(project, job.id).data:
        for ln in chunk.data.splitlines():
            if ln.startswith("contract") and chunk.rank is not None:
                lines[chunk.rank] = dict(kv.split("=", 1) for kv in ln.split()[1:])
    assert set(lines) == {0, 1}
    assert [lines[r]["SHIPYARD_RANK"] for r in (0, 1)] == ["0", "1"]
    assert {lines[r]["SHIPYARD_WORLD_SIZE"] for r in (0, 1)} == {"2"}
    assert (
        len({(v["SHIPYARD_MASTER_ADDR"], v["SHIPYARD_MASTER_PORT"]) for v in lines.values()}) == 1
    )


def test_stopping_a_job_on_ray_ends_its_task(jobs: Any, services: Any, project: str) -> None:
    job = jobs.submit(project, spec(function=f"{FIX}:sleep", hyperparameters={"seconds": 60}))
    deadline = time.monotonic() + 60
    while "sleeping" not in log_text(jobs, project, job.id):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    t0 = time.monotonic()
    jobs.stop(project, job.id, reason="enough")
    done = jobs.wait(project, job.id, timeout_s=30)
    assert done.status == JobStatus.stopped
    assert time.monotonic() - t0 < 20
    assert services.tracking.get_run(project, done.run_id).status.value == "KILLED"
