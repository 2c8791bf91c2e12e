"""``sy.jobs`` on both backends (in-process and a real server), on SQLite and PostgreSQL."""

from __future__ import annotations

import textwrap
import time

import pytest

from shipyard.core.errors import InvalidArgument, NotFound
from tests.jobs.conftest import FIX


def test_submit_a_function_wait_read_logs_metrics_and_list(sy, client):
    job = sy.jobs.submit(
        function=f"{FIX}:train",
        hyperparameters={"epochs": 3, "lr": 0.5},
        metric_definitions={"loss": r"loss=([0-9.]+)"},
        idempotency_key="sdk-once",
        wait=True,
        timeout_s=60,
    )
    assert job.status.value == "completed", job.failure_reason
    assert job.project == client.project
    text = sy.jobs.logs(job.id)
    assert "epoch=2 loss=0.1667" in text
    history = client.backend.get_metric_history(client.project, job.run_id, "loss")
    assert history.values == pytest.approx([0.5, 0.25, 0.1667])
    assert client.get_run(job.run_id).params == {"epochs": "3", "lr": "0.5"}
    # The same key again: the same job, not a second one.
    assert sy.jobs.submit(function=f"{FIX}:sleep", idempotency_key="sdk-once").id == job.id
    listed = sy.jobs.list(status="completed")
    assert [j.id for j in listed.data] == [job.id]
    assert sy.jobs.get(job.id).run_id == job.run_id
    sy.jobs.delete(job.id)
    with pytest.raises(NotFound):
        sy.jobs.get(job.id)


def test_a_script_and_a_python_function_with_sdk_logging(sy, client, tmp_path):
    (tmp_path / "train.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            import shipyard as sy
            print("argv", sys.argv[1:], flush=True)
            sy.log_metric("score", 0.75)
            with open(os.path.join(os.environ["SHIPYARD_MODEL_DIR"], "weights.txt"), "w") as f:
                f.write("w")
            """
        )
    )
    script = sy.jobs.submit("train.py", source_dir=tmp_path, hyperparameters={"alpha": 0.5})

    def objective(x: float) -> None:  # a closure: sent by value (cloudpickle)
        import shipyard

        shipyard.log_metric("y", (x - 2) ** 2)
        print("objective done", flush=True)

    fn = sy.jobs.submit(function=objective, hyperparameters={"x": 5})
    chunks = list(sy.jobs.follow_logs(script.id))
    assert [c.seq for c in chunks] == sorted(c.seq for c in chunks)
    text = "".join(c.data for c in chunks)
    assert "argv ['--alpha', '0.5']" in text
    done = sy.jobs.wait(script.id, timeout_s=60)
    assert done.status.value == "completed", done.failure_reason
    assert done.model_artifact_path == "model"
    assert client.backend.get_metric_history(client.project, done.run_id, "score").values == [0.75]

    done_fn = sy.jobs.wait(fn.id, timeout_s=60)
    assert done_fn.status.value == "completed", done_fn.failure_reason
    assert "objective done" in sy.jobs.logs(fn.id)
    assert client.backend.get_metric_history(client.project, done_fn.run_id, "y").values == [9.0]


def test_stop_a_running_job(sy):
    job = sy.jobs.submit(function=f"{FIX}:sleep", hyperparameters={"seconds": 60})
    deadline = time.monotonic() + 30
    while "sleeping" not in sy.jobs.logs(job.id):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    sy.jobs.stop(job.id, reason="enough")
    done = sy.jobs.wait(job.id, timeout_s=30)
    assert done.status.value == "stopped"


def test_bad_input_names_the_field(sy, tmp_path):
    with pytest.raises(InvalidArgument) as err:
        sy.jobs.submit("missing.py", source_dir=tmp_path)
    assert err.value.details["field"] == "entry_point"
    with pytest.raises(InvalidArgument) as err:
        sy.jobs.submit(function=f"{FIX}:train", inputs={"train": tmp_path / "nope.csv"})
    assert err.value.details["field"] == "inputs.train"
    with pytest.raises(InvalidArgument) as err:
        sy.jobs.submit(function=f"{FIX}:train", resources={"cpus": 0})
    assert err.value.details["field"] == "resources.cpus"
    with pytest.raises(InvalidArgument) as err:
        sy.jobs.list(status="done")
    assert err.value.details["field"] == "status"
    assert sy.jobs.list().data == []  # nothing was queued by the refusals
