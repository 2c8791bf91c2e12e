"""The launcher: what a job's code sees and what becomes of what it leaves.

Each test makes a run as the jobs service does, then runs ``shipyard.jobs.launcher:run_job`` as
the worker does: a ``LocalExecutor`` task (a process forked from the executor's fork server)
with the tracking environment, against a real SQLite store. What a user relies on: the contract's
folders and variables (and SageMaker's names), hyperparameters as CLI arguments and a file,
``sy.log_metric`` with no set-up, the checkpoint folder surviving a failed attempt, ``model/``
becoming a registrable model, ``report.json`` written even when the code fails or is stopped,
and the memory limit enforced with a clear reason.
"""

from __future__ import annotations

import base64
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.core.executors import LocalExecutor, TaskState
from shipyard.jobs.launcher import PRELOAD
from tests.core import test_artifacts
from tests.jobs.runtime_helpers import JobHarness, make_job

# A real S3 API (moto_server), for the s3:// channel.
s3_server = test_artifacts.moto


@pytest.fixture
def db_url(sqlite_home: Path) -> str:
    return f"sqlite:///{sqlite_home / 'shipyard.db'}"  # SQLite only: the runtime is the same


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalExecutor]:
    # The fork server preloads what the worker's does, plus scikit-learn for the model test.
    ex = LocalExecutor(
        tmp_path_factory.mktemp("tasks"),
        2,
        kill_grace_s=5.0,
        preload=[*PRELOAD, "sklearn.linear_model", "skops.io"],
    )
    yield ex
    ex.shutdown()


@pytest.fixture
def job(services, executor: LocalExecutor, project: str) -> JobHarness:  # type: ignore[no-untyped-def]
    return make_job(services, executor, project)


def write(folder: Path, name: str, code: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(code))
    return path


CONTRACT_SCRIPT = """
    import json, os, sys
    import shipyard as sy

    KEYS = [
        "SHIPYARD_JOB_ID", "SHIPYARD_RUN_ID", "SHIPYARD_PROJECT", "SHIPYARD_ATTEMPT",
        "SHIPYARD_RANK", "SHIPYARD_WORLD_SIZE", "SHIPYARD_MASTER_ADDR", "SHIPYARD_MASTER_PORT",
        "SHIPYARD_CHANNELS", "SHIPYARD_CHANNEL_TRAIN", "SHIPYARD_CHANNEL_EXTRA",
        "SHIPYARD_MODEL_DIR", "SHIPYARD_OUTPUT_DIR", "SHIPYARD_CHECKPOINT_DIR",
        "SHIPYARD_HYPERPARAMETERS", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "SM_MODEL_DIR", "SM_CHANNEL_TRAIN", "SM_OUTPUT_DATA_DIR", "SM_HPS", "SM_CHANNELS",
    ]
    train = os.environ["SHIPYARD_CHANNEL_TRAIN"]
    seen = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in KEYS},
        "train_files": sorted(os.listdir(train)),
        "train_rows": open(os.path.join(train, "rows.csv")).read(),
        "extra_files": sorted(os.listdir(os.environ["SHIPYARD_CHANNEL_EXTRA"])),
        "hyperparameters": json.load(open(os.environ["SHIPYARD_HYPERPARAMETERS"])),
    }
    # No sy.init, no start_run: the job's run is the active one.
    for step in range(5):
        sy.log_metric("loss", 1.0 / (step + 1), step=step)
    sy.log_param("optimizer", "sgd")
    with sy.start_run(experiment="ignored") as run:
        seen["run_in_script"] = run.id
        with sy.start_run(nested=True, name="fold-1") as child:
            seen["child"] = child.id
            sy.log_metric("fold_score", 0.5)
    sy.end_run()
    sy.log_metric("after_end_run", 1.0)
    json.dump(seen, open(os.path.join(os.environ["SHIPYARD_OUTPUT_DIR"], "seen.json"), "w"))
"""


def test_a_script_gets_the_contract_and_logs_with_no_set_up(
    job: JobHarness, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write(src, "contract.py", CONTRACT_SCRIPT)
    data = tmp_path / "data"
    write(data / "train", "rows.csv", "x,y\n1,2\n")
    write(data, "extra.txt", "extra")
    hps = {"lr": 0.1, "epochs": 3, "name": "x y", "flag": True}
    spec = {
        "entry_point": "contract.py",
        "source_dir": str(src),
        "hyperparameters": hps,
        "inputs": {"train": str(data / "train"), "extra": str(data / "extra.txt")},
    }
    a = job.run(spec)

    assert a.status.state == TaskState.SUCCEEDED, a.log
    # The only line before the user's code: the one a benchmark times.
    assert a.log.splitlines()[0] == "shipyard: starting contract.py (attempt 1, rank 0/1)"
    seen = json.loads((a.rank_dir / "output" / "seen.json").read_text())
    assert seen["argv"] == ["--lr", "0.1", "--epochs", "3", "--name", "x y", "--flag", "true"]
    assert seen["cwd"] == str(src)
    assert seen["hyperparameters"] == hps
    assert seen["train_files"] == ["rows.csv"] and seen["train_rows"] == "x,y\n1,2\n"
    assert seen["extra_files"] == ["extra.txt"]
    env = seen["env"]
    rank_dir = job.job_dir / "attempt-1" / "rank-0"
    assert env["SHIPYARD_JOB_ID"] == job.job_id
    assert env["SHIPYARD_RUN_ID"] == job.run_id
    assert env["SHIPYARD_PROJECT"] == job.project
    assert (env["SHIPYARD_ATTEMPT"], env["SHIPYARD_RANK"], env["SHIPYARD_WORLD_SIZE"]) == (
        "1",
        "0",
        "1",
    )
    assert (env["RANK"], env["WORLD_SIZE"]) == ("0", "1")
    assert env["SHIPYARD_MASTER_ADDR"] == env["MASTER_ADDR"] == "127.0.0.1"
    assert env["SHIPYARD_MASTER_PORT"] == env["MASTER_PORT"] == "29511"
    assert env["SHIPYARD_MODEL_DIR"] == env["SM_MODEL_DIR"] == str(rank_dir / "model")
    assert env["SHIPYARD_OUTPUT_DIR"] == env["SM_OUTPUT_DATA_DIR"] == str(rank_dir / "output")
    assert env["SHIPYARD_CHANNEL_TRAIN"] == env["SM_CHANNEL_TRAIN"] == str(rank_dir / "input/train")
    assert (
        json.loads(env["SHIPYARD_CHANNELS"])
        == json.loads(env["SM_CHANNELS"])
        == [
            "extra",
            "train",
        ]
    )
    assert env["SHIPYARD_CHECKPOINT_DIR"] == str(job.job_dir / "checkpoints" / "rank-0")
    assert env["SHIPYARD_HYPERPARAMETERS"] == str(rank_dir / "hyperparameters.json")
    assert json.loads(env["SM_HPS"]) == hps

    # Logged into the job's run; the script's start_run/end_run never ended it.
    assert seen["run_in_script"] == job.run_id
    run = job.get_run()
    assert run.status == "RUNNING"
    assert job.history("loss") == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert "after_end_run" in run.metrics and run.params["optimizer"] == "sgd"
    child = job.services.tracking.get_run(job.project, seen["child"])
    assert child.parent_run_id == job.run_id and child.status == "FINISHED"
    assert any(k.startswith("profile/") for k in run.metrics)

    # output/ and the report became run artifacts; nothing in model/, so no model.
    assert job.artifacts() == ["output/seen.json", "report.json"]
    result = a.status.result
    assert result["model_artifact_path"] is None
    assert job.artifact_json("report.json") == result["report"] == a.report
    summary = result["report"]["summary"]
    assert summary["status"] == "completed" and summary["error"] is None
    assert summary["profile"]["samples"] >= 1 and summary["profile"]["memory_peak_bytes"] > 0


RESUME_SCRIPT = """
    import json, os
    ckpt = os.path.join(os.environ["SHIPYARD_CHECKPOINT_DIR"], "state.json")
    if not os.path.exists(ckpt):
        json.dump({"epoch": 3, "attempt": os.environ["SHIPYARD_ATTEMPT"]}, open(ckpt, "w"))
        open(os.path.join(os.environ["SHIPYARD_MODEL_DIR"], "partial.bin"), "w").write("x")
        raise ValueError("simulated crash after epoch 3")
    state = json.load(open(ckpt))
    print("resumed from epoch", state["epoch"], "of attempt", state["attempt"], flush=True)

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from shipyard.models.format import save_model

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(X, np.array([0, 0, 1, 1]))
    save_model(model, os.environ["SHIPYARD_MODEL_DIR"])
"""


def test_a_retry_resumes_from_the_checkpoint_and_its_model_registers(
    job: JobHarness, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write(src, "resume.py", RESUME_SCRIPT)
    spec = {"entry_point": "resume.py", "source_dir": str(src)}

    first = job.run(spec, attempt=1)
    assert first.status.state == TaskState.FAILED
    # The user's error, as theirs: its type, message and traceback.
    assert first.status.error["type"] == "ValueError"
    assert first.status.error["message"] == "simulated crash after epoch 3"
    assert 'resume.py", line' in first.log and "ValueError" in first.log
    # The report is written even so, on disk and as the run's artifact.
    report = job.artifact_json("report.json")
    assert report == first.report
    assert report["summary"]["status"] == "failed"
    assert report["summary"]["error"]["message"] == "simulated crash after epoch 3"
    # What the failed attempt left in model/ is not logged as the run's model.
    assert report["summary"]["model"] == {
        "files": 1,
        "bytes": 1,
        "artifact_path": None,
        "flavor": None,
    }
    assert not [p for p in job.artifacts() if p.startswith("model/")]

    second = job.run(spec, attempt=2)
    assert second.status.state == TaskState.SUCCEEDED, second.log
    assert "resumed from epoch 3 of attempt 1" in second.log
    assert second.status.result["model_artifact_path"] == "model"
    assert second.report["summary"]["model"]["flavor"] == "sklearn"
    assert [p for p in job.artifacts() if p.startswith("model/")] == [
        "model/model.npz",
        "model/shipyard-model.json",
    ]

    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    client = Client(job.project, backend=LocalBackend(job.services))
    version = client.register_model(f"runs:/{job.run_id}/model", "resumed")
    assert version.version == 1 and version.flavor == "sklearn"
    loaded = client.load_model("models:/resumed/1")
    assert loaded.predict([[0.0], [3.0]]).tolist() == [0, 1]


def test_a_command_gets_hyperparameters_and_its_exit_status_fails_the_job(
    job: JobHarness,
) -> None:
    code = "import sys; print('args', sys.argv[1:], flush=True); sys.exit(3)"
    a = job.run({"entry_point": ["python", "-c", code], "hyperparameters": {"lr": 0.5}})
    assert a.status.state == TaskState.FAILED
    assert a.status.error["type"] == "UserCodeFailed"
    assert a.status.error["message"] == "command 'python' exited with status 3"
    assert "args ['--lr', '0.5']" in a.log
    assert a.log.splitlines()[0].startswith("shipyard: starting python -c ")
    assert job.artifact_json("report.json")["summary"]["status"] == "failed"


def test_a_function_and_a_pickled_function_are_called_with_hyperparameters(
    job: JobHarness,
) -> None:
    a = job.run({"function": "tests.jobs.runtime_helpers:add", "hyperparameters": {"a": 2, "b": 3}})
    assert a.status.state == TaskState.SUCCEEDED, a.log
    assert a.log.splitlines()[0] == (
        "shipyard: starting tests.jobs.runtime_helpers:add (attempt 1, rank 0/1)"
    )
    # No source_dir: the function runs in the attempt's own folder.
    value = a.status.result["value"]
    assert value == {"sum": 5, "rank": "0", "cwd": str(a.rank_dir)}
    assert a.report["summary"]["return_value"] == value

    import cloudpickle

    pickled = base64.b64encode(cloudpickle.dumps(lambda x, y: x * y)).decode()
    b = job.run({"function_pickle": pickled, "hyperparameters": {"x": 6, "y": 7}}, attempt=2)
    assert b.status.state == TaskState.SUCCEEDED, b.log
    assert b.status.result["value"] == 42


HOG = """
    import time
    hog = []
    for _ in range(100):  # at most about 3 GB, should the limit not be enforced
        hog.append(b"x" * (32 * 2**20))
        time.sleep(0.03)
    time.sleep(30)
"""


@pytest.mark.parametrize("how", ["script", "command"])
def test_the_memory_limit_stops_the_job_with_a_clear_reason(
    job: JobHarness, tmp_path: Path, how: str
) -> None:
    src = tmp_path / "src"
    write(src, "hog.py", HOG)
    entry = "hog.py" if how == "script" else ["python", "hog.py"]
    spec = {"entry_point": entry, "source_dir": str(src), "resources": {"memory_gb": 0.5}}
    t0 = time.monotonic()
    a = job.run(spec)
    assert time.monotonic() - t0 < 30
    assert a.status.state == TaskState.FAILED
    assert a.status.error["type"] == "MemoryLimitExceeded"
    message = a.status.error["message"]
    assert message.startswith("memory limit exceeded: the job's processes used")
    assert "above its limit of 0.50 GB (resources.memory_gb)" in message
    assert f"shipyard: {message}" in a.log
    report = job.artifact_json("report.json")
    rules = {f["rule"]: f for f in report["findings"]}
    assert rules["memory_limit_exceeded"]["severity"] == "error"
    assert rules["memory_limit_exceeded"]["details"]["limit_bytes"] == 2**29
    assert report["summary"]["profile"]["memory_peak_bytes"] > 2**29


RANKED = """
    import os
    rank = os.environ["RANK"]
    print("rank", rank, "of", os.environ["WORLD_SIZE"], "at", os.environ["MASTER_ADDR"], flush=True)
    open(os.path.join(os.environ["SHIPYARD_MODEL_DIR"], f"from-rank-{rank}.txt"), "w").write(rank)
"""


def test_each_rank_gets_its_rank_and_only_rank_0_logs_the_model(
    job: JobHarness, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write(src, "ranked.py", RANKED)
    spec = {"entry_point": "ranked.py", "source_dir": str(src), "instance_count": 2}
    tasks = [job.submit(spec, rank=r, world_size=2) for r in (0, 1)]
    ranks = [job.attempt_of(t, rank=r) for r, t in enumerate(tasks)]
    for r, a in enumerate(ranks):
        assert a.status.state == TaskState.SUCCEEDED, a.log
        assert f"rank {r} of 2 at 127.0.0.1" in a.log
        assert a.log.splitlines()[0].endswith(f"(attempt 1, rank {r}/2)")
    assert ranks[0].status.result["model_artifact_path"] == "model"
    assert ranks[1].status.result["model_artifact_path"] is None
    # Each rank has its own folders; the run's model is rank 0's; each rank's report is kept.
    assert (job.job_dir / "checkpoints" / "rank-1").is_dir()
    assert job.artifacts() == ["model/from-rank-0.txt", "report.json", "reports/rank-1.json"]
    assert job.artifact_json("reports/rank-1.json")["summary"]["rank"] == 1
    assert any(k.startswith("profile/rank-1/") for k in job.get_run().metrics)


def test_a_stopped_job_still_writes_its_report(job: JobHarness, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "wait.py", "import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    task = job.submit({"entry_point": "wait.py", "source_dir": str(src)})
    deadline = time.monotonic() + 30
    while "ready" not in job.executor.logs(task):
        assert time.monotonic() < deadline, job.executor.logs(task)
        time.sleep(0.05)
    st = job.executor.cancel(task)
    assert st.state == TaskState.CANCELLED
    report = job.artifact_json("report.json")
    assert report["summary"]["status"] == "stopped"


def test_an_input_channel_on_s3_is_downloaded(job: JobHarness, s3_server: dict) -> None:
    fs = test_artifacts.s3fs(s3_server)
    prefix = f"{test_artifacts.BUCKET}/inputs/{job.job_id}"
    fs.pipe({f"{prefix}/train/a.csv": b"x\n1\n", f"{prefix}/train/part/b.csv": b"x\n2\n"})
    job.extra_env = {
        "SHIPYARD_INPUT_STORAGE_OPTIONS": json.dumps(s3_server),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    code = (
        "import os; d = os.environ['SHIPYARD_CHANNEL_TRAIN']; "
        "print(sorted(os.path.relpath(os.path.join(r, f), d) "
        "for r, _, fs in os.walk(d) for f in fs)); "
        "print(open(os.path.join(d, 'part', 'b.csv')).read().split()[1])"
    )
    a = job.run(
        {"entry_point": ["python", "-c", code], "inputs": {"train": f"s3://{prefix}/train"}}
    )
    assert a.status.state == TaskState.SUCCEEDED, a.log
    assert "['a.csv', 'part/b.csv']" in a.log and "\n2\n" in a.log


def test_a_missing_input_fails_before_the_code_runs_naming_the_channel(
    job: JobHarness, tmp_path: Path
) -> None:
    a = job.run(
        {"function": "tests.jobs.runtime_helpers:add", "inputs": {"train": str(tmp_path / "no")}}
    )
    assert a.status.state == TaskState.FAILED
    assert a.status.error["code"] == "INVALID_ARGUMENT"
    assert a.status.error["details"]["field"] == "inputs.train"
    assert "does not exist" in a.status.error["message"]
    assert "shipyard: starting" not in a.log
    assert job.artifact_json("report.json")["summary"]["status"] == "failed"


# -- the fluent API inside a job's process ------------------------------------------------------


@pytest.fixture
def in_job(job: JobHarness, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobHarness]:
    """This process as a job's: SHIPYARD_RUN_ID set, the SDK on the test's store."""
    import shipyard as sy
    from shipyard.sdk import fluent
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    monkeypatch.setenv("SHIPYARD_RUN_ID", job.run_id)
    monkeypatch.setenv("SHIPYARD_PROJECT", job.project)
    sy.init(client=Client(job.project, backend=LocalBackend(job.services)))
    yield job
    fluent._at_exit()
    fluent._client = None
    fluent._buffer = None


def test_the_sdk_attaches_to_the_jobs_run_and_never_ends_it(in_job: JobHarness) -> None:
    import shipyard as sy

    sy.log_metric("acc", 0.9)
    with sy.start_run(tags={"phase": "train"}) as run:
        assert run.id == in_job.run_id
        sy.log_metric("acc", 0.95, step=1)
        child = sy.start_run(nested=True, name="cv")
        sy.log_metric("fold", 1.0)
        child.end()
    sy.end_run()
    sy.flush()
    run_now = in_job.get_run()
    assert run_now.status == "RUNNING"  # the job sets its status, not the script
    assert run_now.tags["phase"] == "train"
    assert in_job.history("acc") == [0.9, 0.95]
    got = in_job.services.tracking.get_run(in_job.project, child.id)
    assert got.parent_run_id == in_job.run_id and got.status == "FINISHED"
    assert "fold" in got.metrics and "fold" not in run_now.metrics
    # nested=True with nothing active: a child of the job's run.
    with sy.start_run(nested=True) as other:
        assert other.id != in_job.run_id
    assert in_job.services.tracking.get_run(in_job.project, other.id).parent_run_id == in_job.run_id


def test_a_model_file_of_a_known_format_gets_a_manifest(tmp_path: Path) -> None:
    import lightgbm as lgb
    import numpy as np
    import xgboost as xgb

    from shipyard.jobs.model_dir import ensure_manifest
    from shipyard.models.format import load_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2))
    y = (X[:, 0] > 0).astype(int)
    (tmp_path / "lgb").mkdir()
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, y), 5)
    booster.save_model(str(tmp_path / "lgb" / "model.txt"))
    (tmp_path / "xgb").mkdir()
    xgb.XGBClassifier(n_estimators=5).fit(X, y).save_model(str(tmp_path / "xgb" / "model.json"))

    assert ensure_manifest(tmp_path / "lgb") == "lightgbm"
    assert load_model(tmp_path / "lgb").predict(X[:3]).shape == (3,)
    assert ensure_manifest(tmp_path / "xgb") == "xgboost"
    # Saved from XGBClassifier: it loads as one and predicts classes, not probabilities.
    assert set(load_model(tmp_path / "xgb").predict(X[:10]).tolist()) <= {0, 1}

    # A file that only shares the name is left alone (and no library is asked to read it).
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.json").write_text('{"lr": 0.1}')
    assert ensure_manifest(tmp_path / "other") is None
    assert not (tmp_path / "other" / "shipyard-model.json").exists()


FLAT_LOSS = """
    import shipyard as sy
    {init}
    for step in range(8):
        sy.log_metric("train/loss", 0.7, step=step)
    sy.log_metric("accuracy", 0.5)
"""


@pytest.mark.parametrize("how", ["script", "script with its own client", "command"])
def test_the_rule_checks_see_what_the_job_logged_however_it_logged_it(
    job: JobHarness, tmp_path: Path, how: str
) -> None:
    # The launcher checks the rules on the metrics that went through its own client (a
    # script's sy.log_metric), without reading the run back; metrics logged by another client
    # or another process (a command) are read back from the store. Either way the report
    # names the loss that did not decrease, and the store holds the script's metrics and the
    # profile's.
    src = tmp_path / "src"
    init = "sy.init()" if how == "script with its own client" else ""
    write(src, "flat.py", FLAT_LOSS.format(init=init))
    entry = ["python", "flat.py"] if how == "command" else "flat.py"
    a = job.run({"entry_point": entry, "source_dir": str(src)})

    assert a.status.state == TaskState.SUCCEEDED, a.log
    flat = [f for f in a.report["findings"] if f["rule"] == "loss_not_decreasing"]
    assert [f["details"]["metric"] for f in flat] == ["train/loss"]
    assert flat[0]["details"]["points"] == 8
    assert "shipyard: warning: loss not decreasing: 'train/loss'" in a.log
    assert job.history("train/loss") == [0.7] * 8
    run = job.get_run()
    assert run.metrics["accuracy"].value == 0.5
    assert any(k.startswith("profile/") for k in run.metrics)
    assert "notes" not in a.report["summary"]


def test_a_jobs_first_log_call_waits_for_no_store(
    job: JobHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's script logging before the launcher's client exists only buffers: the client is
    made (the store opened) when the buffer sends, and the rows land on the job's run."""
    import shipyard as sy
    from shipyard.sdk import fluent
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    made: list[Client] = []

    def job_client() -> Client:
        made.append(Client(job.project, backend=LocalBackend(job.services), known_project=True))
        return made[-1]

    monkeypatch.setenv("SHIPYARD_RUN_ID", job.run_id)
    monkeypatch.setenv("SHIPYARD_PROJECT", job.project)
    monkeypatch.setattr(fluent, "_client", None)
    monkeypatch.setattr(fluent, "_buffer", None)
    monkeypatch.setattr(fluent, "_default_client", job_client)
    try:
        sy.log_metric("loss", 0.5)
        sy.log_metric("loss", 0.25, step=1)
        assert made == [] and sy.active_run() is not None  # buffered; nothing read yet
        assert sy.active_run().id == job.run_id
        sy.flush()
        assert len(made) == 1 and fluent.get_client() is made[0]
        assert job.history("loss") == [0.5, 0.25]
        assert sy.active_run().experiment_id == job.get_run().experiment_id  # read when asked
    finally:
        fluent._at_exit()
        fluent._client = None
        fluent._buffer = None
