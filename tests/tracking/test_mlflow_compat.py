"""The stock ``mlflow`` client against a real Shipyard server, on SQLite and PostgreSQL.

Every test talks to the server the way an MLflow user's code does: ``MLFLOW_TRACKING_URI``
pointed at it, the fluent API (``mlflow.start_run`` ...) or ``MlflowClient``. What MLflow logs
must then be what Shipyard's own SDK sees.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from shipyard.projects.schemas import Role, UserCreate
from shipyard.sdk.client import Client
from shipyard.sdk.http import HttpBackend
from tests.conftest import ServerThread, make_settings


@pytest.fixture
def settings(sqlite_home: Path, db_url: str, project: str):  # type: ignore[no-untyped-def]
    """This module's settings: MLflow's calls land in this test's own project."""
    return make_settings(sqlite_home, db_url, mlflow_project=project)


@pytest.fixture(autouse=True)
def _forget_mlflow_globals() -> Iterator[None]:
    """The mlflow module keeps its tracking URI in a global: leave none behind for later tests."""
    yield
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the env and defaults


def _point_mlflow_at(monkeypatch: pytest.MonkeyPatch, url: str, token: str | None = None) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # Fail at once instead of retrying a 5xx for minutes: a server error is a test failure.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if token is None:
        monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    mlflow.set_tracking_uri(url)


@pytest.fixture
def ml(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """An ``MlflowClient`` on the test server; the fluent API is pointed there too."""
    _point_mlflow_at(monkeypatch, server.url)
    mlflow.set_experiment(experiment_id="0")  # forget an experiment set by an earlier test
    yield MlflowClient(server.url)
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def shipyard(server: ServerThread, project: str) -> Iterator[Client]:
    """Shipyard's own SDK on the same server and project."""
    backend = HttpBackend(server.url, retry_for_s=5)
    yield Client(project=project, backend=backend)
    backend.close()


def _code(exc: pytest.ExceptionInfo[MlflowException]) -> str:
    return str(exc.value.error_code)


# -- runs, the fluent way ---------------------------------------------------------------------


def test_fluent_run_is_a_shipyard_run(ml: MlflowClient, shipyard: Client) -> None:
    with mlflow.start_run(run_name="first") as active:
        run_id = active.info.run_id
        mlflow.log_param("lr", 0.1)
        mlflow.log_params({"model": "lr", "epochs": 3})
        mlflow.log_metric("acc", 0.5, step=1)
        mlflow.log_metric("acc", 0.75, step=2)
        mlflow.log_metrics({"loss": 0.25, "bad": float("nan"), "big": float("inf")})
        mlflow.set_tag("team", "vision")
        mlflow.set_tags({"stage": "dev"})

    run = ml.get_run(run_id)
    assert run.info.run_name == "first"
    assert run.info.status == "FINISHED"
    assert run.info.lifecycle_stage == "active"
    assert run.info.experiment_id == "0"
    assert run.info.artifact_uri == f"mlflow-artifacts:/0/{run_id}/artifacts"
    assert run.info.end_time >= run.info.start_time > 0
    assert run.data.params == {"lr": "0.1", "model": "lr", "epochs": "3"}
    assert run.data.metrics["acc"] == 0.75  # the latest step
    assert run.data.metrics["loss"] == 0.25
    assert run.data.metrics["big"] == float("inf")
    assert run.data.metrics["bad"] != run.data.metrics["bad"]  # NaN survives the trip
    assert run.data.tags["team"] == "vision" and run.data.tags["stage"] == "dev"
    assert run.data.tags["mlflow.runName"] == "first"
    assert run.data.tags["mlflow.source.type"] == "LOCAL"  # the client's own system tags

    history = ml.get_metric_history(run_id, "acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    assert all(m.timestamp > 0 for m in history)
    assert ml.get_metric_history(run_id, "never-logged") == []
    assert [r.info.run_id for r in ml.search_runs(["0"])] == [run_id]

    # The same run through Shipyard's SDK, in MLflow's Default experiment.
    default = shipyard.get_experiment("Default")
    found = shipyard.search_runs(experiments=["Default"]).data
    assert [r.id for r in found] == [run_id]
    sy_run = found[0]
    assert sy_run.experiment_id == default.id
    assert sy_run.name == "first" and sy_run.status == "FINISHED"
    assert sy_run.params == {"lr": "0.1", "model": "lr", "epochs": "3"}
    assert sy_run.metrics["acc"].value == 0.75 and sy_run.metrics["acc"].step == 2
    assert sy_run.tags["team"] == "vision"
    assert "mlflow.runName" not in sy_run.tags  # the name is the run's name, not a tag
    assert shipyard.get_metric_history(run_id, "acc").values == [0.5, 0.75]


def test_failed_and_nested_runs(ml: MlflowClient, shipyard: Client) -> None:
    mlflow.set_experiment("nested")
    with pytest.raises(RuntimeError), mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("x", 1.0)
        raise RuntimeError("training failed")
    assert ml.get_run(parent.info.run_id).info.status == "FAILED"
    assert ml.get_run(child.info.run_id).info.status == "FINISHED"
    assert ml.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert shipyard.get_run(child.info.run_id).parent_run_id == parent.info.run_id
    found = shipyard.search_runs(experiments=["nested"], filter="parent_run_id = 'nope'").data
    assert found == []
    found = shipyard.search_runs(
        experiments=["nested"], filter=f"parent_run_id = '{parent.info.run_id}'"
    ).data
    assert [r.id for r in found] == [child.info.run_id]


# -- experiments ------------------------------------------------------------------------------


def test_experiments(ml: MlflowClient, shipyard: Client) -> None:
    eid = ml.create_experiment("exp-a", tags={"owner": "ana", "mlflow.note.content": "about a"})
    exp = ml.get_experiment(eid)
    assert exp.name == "exp-a" and exp.lifecycle_stage == "active"
    assert exp.tags == {"owner": "ana", "mlflow.note.content": "about a"}
    assert exp.artifact_location == f"mlflow-artifacts:/{eid}"
    assert exp.creation_time > 0 and exp.last_update_time >= exp.creation_time
    assert ml.get_experiment_by_name("exp-a").experiment_id == eid
    assert ml.get_experiment_by_name("no-such-experiment") is None
    assert ml.get_experiment_by_name("Default").experiment_id == "0"
    assert ml.get_experiment("0").name == "Default"

    sy_exp = shipyard.get_experiment("exp-a")
    assert sy_exp.id == eid and sy_exp.description == "about a"
    assert sy_exp.tags == {"owner": "ana"}

    with pytest.raises(MlflowException) as err:
        ml.create_experiment("exp-a")
    assert _code(err) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as err:
        ml.get_experiment("0000000000000000")
    assert _code(err) == "RESOURCE_DOES_NOT_EXIST"

    ml.set_experiment_tag(eid, "owner", "bo")
    ml.set_experiment_tag(eid, "mlflow.note.content", "new note")
    assert shipyard.get_experiment(eid).tags == {"owner": "bo"}
    assert shipyard.get_experiment(eid).description == "new note"

    ml.rename_experiment(eid, "exp-renamed")
    assert ml.get_experiment(eid).name == "exp-renamed"
    eid_b = ml.create_experiment("exp-b")

    names = [e.name for e in ml.search_experiments()]
    assert names == ["exp-b", "exp-renamed", "Default"]  # newest first, as MLflow orders
    found = ml.search_experiments(filter_string="name LIKE 'exp-%'", order_by=["name ASC"])
    assert [e.name for e in found] == ["exp-b", "exp-renamed"]
    found = ml.search_experiments(filter_string="tags.owner = 'bo'")
    assert [e.experiment_id for e in found] == [eid]
    page = ml.search_experiments(max_results=2)
    assert len(page) == 2 and page.token
    rest = ml.search_experiments(max_results=2, page_token=page.token)
    assert [e.name for e in [*page, *rest]] == names and rest.token is None

    ml.delete_experiment(eid_b)
    assert ml.get_experiment(eid_b).lifecycle_stage == "deleted"
    assert [e.name for e in ml.search_experiments()] == ["exp-renamed", "Default"]
    deleted = ml.search_experiments(view_type=ViewType.DELETED_ONLY)
    assert [e.experiment_id for e in deleted] == [eid_b]
    assert len(ml.search_experiments(view_type=ViewType.ALL)) == 3
    assert shipyard.get_experiment(eid_b).lifecycle == "deleted"
    ml.restore_experiment(eid_b)
    assert ml.get_experiment(eid_b).lifecycle_stage == "active"

    with pytest.raises(MlflowException) as err:
        ml.search_experiments(filter_string="name = 'x' OR name = 'y'")
    assert _code(err) == "INVALID_PARAMETER_VALUE"
    assert "OR" in str(err.value)


# -- runs with MlflowClient -------------------------------------------------------------------


def test_run_updates_tags_batches_delete_restore(ml: MlflowClient, shipyard: Client) -> None:
    eid = ml.create_experiment("runs")
    run = ml.create_run(eid, run_name="r", tags={"a": "1"})
    rid = run.info.run_id
    assert run.info.status == "RUNNING" and run.data.tags["a"] == "1"

    ml.log_batch(
        rid,
        metrics=[Metric("m", 1.0, 1000, 0), Metric("m", 2.0, 2000, 1), Metric("n", 0.5, 1500, 0)],
        params=[Param("p", "x"), Param("q", "")],
        tags=[RunTag("t", "v")],
    )
    got = ml.get_run(rid)
    assert got.data.metrics == {"m": 2.0, "n": 0.5}
    assert got.data.params == {"p": "x", "q": ""}
    assert [(m.timestamp, m.step) for m in ml.get_metric_history(rid, "m")] == [
        (1000, 0),
        (2000, 1),
    ]

    with pytest.raises(MlflowException) as err:
        ml.log_param(rid, "p", "changed")  # a param is logged once, in MLflow as here
    assert _code(err) == "INVALID_PARAMETER_VALUE"

    ml.set_tag(rid, "mlflow.runName", "renamed")  # MLflow's way to rename a run
    assert ml.get_run(rid).info.run_name == "renamed"
    assert shipyard.get_run(rid).name == "renamed"
    ml.update_run(rid, name="renamed-again")
    assert shipyard.get_run(rid).name == "renamed-again"

    ml.delete_tag(rid, "t")
    assert "t" not in ml.get_run(rid).data.tags
    with pytest.raises(MlflowException) as err:
        ml.delete_tag(rid, "t")
    assert _code(err) == "RESOURCE_DOES_NOT_EXIST"

    ml.set_terminated(rid, status="KILLED", end_time=int(time.time() * 1000))
    assert ml.get_run(rid).info.status == "KILLED"
    assert shipyard.get_run(rid).status == "KILLED"

    ml.delete_run(rid)
    assert ml.get_run(rid).info.lifecycle_stage == "deleted"
    assert ml.search_runs([eid]) == []
    assert [r.info.run_id for r in ml.search_runs([eid], run_view_type=ViewType.DELETED_ONLY)] == [
        rid
    ]
    assert shipyard.get_run(rid).lifecycle == "deleted"
    ml.restore_run(rid)
    assert [r.info.run_id for r in ml.search_runs([eid])] == [rid]

    with pytest.raises(MlflowException) as err:
        ml.get_run("0000000000000000")
    assert _code(err) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as err:
        ml.create_run("0000000000000000")
    assert _code(err) == "RESOURCE_DOES_NOT_EXIST"


# -- search -----------------------------------------------------------------------------------


def test_metric_history_pages_across_the_stored_chunks(
    ml: MlflowClient, server: ServerThread
) -> None:
    """Each ``log_batch`` is stored as one chunk per key: ``get-history``'s pages cut through
    chunks, and steps that go back across batches still come in step order, NaN included."""
    rid = ml.create_run("0", run_name="paged").info.run_id
    logged = []
    for b, steps in enumerate((range(10, 17), range(0, 7), range(5, 9))):
        batch = [Metric("m", float(b * 100 + s), 1000 + b, s) for s in steps]
        batch += [Metric("other", 1.0, 1, s) for s in steps]  # interleaved in the batch
        batch[2] = Metric("m", float("nan"), 1000 + b, batch[2].step)
        ml.log_batch(rid, metrics=batch)
        logged += [m for m in batch if m.key == "m"]
    want = sorted(logged, key=lambda m: (m.step, m.timestamp))  # stable: ties keep log order
    url = f"{server.url}/api/2.0/mlflow/metrics/get-history"
    got, token, pages = [], None, 0
    while True:
        params = {"run_id": rid, "metric_key": "m", "max_results": "4"}
        body = httpx.get(url, params=params | ({"page_token": token} if token else {})).json()
        got += body["metrics"]
        pages += 1
        token = body.get("next_page_token")
        if not token:
            break
    assert pages == 5 and len(got) == len(logged) == 18
    assert [(m["step"], m["timestamp"]) for m in got] == [(m.step, m.timestamp) for m in want]
    nan = [m["value"] == "NaN" for m in got]  # MLflow's JSON spells NaN as a string
    assert nan == [math.isnan(m.value) for m in want] and sum(nan) == 3
    assert [m["value"] for m in got if m["value"] != "NaN"] == [
        m.value for m in want if not math.isnan(m.value)
    ]
    assert [(m.step, m.timestamp) for m in ml.get_metric_history(rid, "m")] == [
        (m.step, m.timestamp) for m in want
    ]


def test_search_runs_filters_order_and_pages(ml: MlflowClient) -> None:
    eid = ml.create_experiment("search")
    ids = {}
    for i, (model, acc) in enumerate([("lr", 0.6), ("lr", 0.9), ("rf", 0.7), ("rf", 0.5)]):
        run = ml.create_run(eid, run_name=f"r-{i}", start_time=1_000_000 + i * 1000)
        rid = run.info.run_id
        ids[f"r-{i}"] = rid
        ml.log_batch(
            rid,
            metrics=[Metric("acc", acc, 0, 0)],
            params=[Param("model", model)],
            tags=[RunTag("team", "a" if i % 2 else "b")],
        )
        if i < 3:
            ml.set_terminated(rid)

    def names(filter_string: str = "", order_by: list[str] | None = None) -> list[str]:
        runs = ml.search_runs([eid], filter_string=filter_string, order_by=order_by)
        return [r.info.run_name for r in runs]

    assert names() == ["r-3", "r-2", "r-1", "r-0"]  # start_time DESC by default
    assert names("metrics.acc > 0.65") == ["r-2", "r-1"]
    assert names("metrics.acc >= 0.6 and params.model = 'lr'") == ["r-1", "r-0"]
    assert names("params.model = 'rf' AND tags.team = 'a'") == ["r-3"]
    assert names("attributes.status = 'RUNNING'") == ["r-3"]
    assert names("attributes.status != 'RUNNING'") == ["r-2", "r-1", "r-0"]
    assert names("attributes.run_name = 'r-1'") == ["r-1"]
    assert names("run_name LIKE 'r-%' and metrics.acc < 0.6") == ["r-3"]
    assert names("tags.mlflow.runName = 'r-2'") == ["r-2"]
    assert names("tags.`mlflow.runName` ILIKE 'R-0'") == ["r-0"]
    assert names("attributes.start_time >= 1002000") == ["r-3", "r-2"]
    assert names("attributes.created < 1001000") == ["r-0"]
    assert names(f"attributes.run_id IN ('{ids['r-0']}', '{ids['r-3']}')") == ["r-3", "r-0"]
    assert names("tags.team IS NOT NULL and params.model != 'lr'") == ["r-3", "r-2"]
    assert names('metrics."acc" > 0.85') == ["r-1"]

    assert names(order_by=["metrics.acc DESC"]) == ["r-1", "r-2", "r-0", "r-3"]
    assert names(order_by=["params.model ASC", "metrics.acc"]) == ["r-0", "r-1", "r-3", "r-2"]
    assert names(order_by=["attributes.run_name DESC"]) == ["r-3", "r-2", "r-1", "r-0"]
    assert names(order_by=["start_time"]) == ["r-0", "r-1", "r-2", "r-3"]

    seen, token = [], None
    while True:
        page = ml.search_runs([eid], max_results=3, page_token=token, order_by=["metrics.acc"])
        seen += [r.info.run_name for r in page]
        token = page.token
        if not token:
            break
    assert seen == ["r-3", "r-0", "r-2", "r-1"]

    for bad in (
        "metrics.acc > 'high'",
        "params.model = 'lr' OR params.model = 'rf'",
        "nonsense.key = 'x'",
        "attributes.colour = 'red'",
        "tags.team IS NULL",
        "attributes.user_id = 'me'",
        "metrics.acc >",
    ):
        with pytest.raises(MlflowException) as err:
            ml.search_runs([eid], filter_string=bad)
        assert _code(err) == "INVALID_PARAMETER_VALUE", bad
    with pytest.raises(MlflowException) as err:
        ml.search_runs([eid], order_by=["metrics.acc SIDEWAYS"])
    assert _code(err) == "INVALID_PARAMETER_VALUE"


# -- artifacts --------------------------------------------------------------------------------


def test_artifacts_through_the_proxy(ml: MlflowClient, shipyard: Client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "table.csv").write_text("a,b\n1,2\n")
    (src / "sub" / "conf.json").write_text('{"k": 1}')
    note = tmp_path / "note.txt"
    note.write_text("hello")
    blob = tmp_path / "weights.bin"
    blob.write_bytes(bytes(range(256)) * 4096)  # 1 MiB of every byte value

    with mlflow.start_run() as active:
        rid = active.info.run_id
        mlflow.log_artifact(str(note))
        mlflow.log_artifact(str(blob), artifact_path="model")
        mlflow.log_artifacts(str(src), artifact_path="data")
        mlflow.log_text("inline", "texts/inline.txt")
        mlflow.log_dict({"x": [1, 2]}, "texts/d.json")

    listing = {(f.path, f.is_dir, f.file_size) for f in ml.list_artifacts(rid)}
    assert listing == {
        ("note.txt", False, 5),
        ("model", True, None),
        ("data", True, None),
        ("texts", True, None),
    }
    assert {(f.path, f.is_dir) for f in ml.list_artifacts(rid, "data")} == {
        ("data/table.csv", False),
        ("data/sub", True),
    }
    assert [f.path for f in ml.list_artifacts(rid, "data/sub")] == ["data/sub/conf.json"]
    assert ml.list_artifacts(rid, "no/such/folder") == []

    # Shipyard sees the same files at the same paths.
    sy_paths = {a.path for a in shipyard.list_artifacts(rid, recursive=True).files}
    assert sy_paths == {
        "note.txt",
        "model/weights.bin",
        "data/table.csv",
        "data/sub/conf.json",
        "texts/inline.txt",
        "texts/d.json",
    }

    out = Path(mlflow.artifacts.download_artifacts(run_id=rid, dst_path=str(tmp_path / "dl")))
    assert (out / "note.txt").read_text() == "hello"
    assert (out / "model" / "weights.bin").read_bytes() == blob.read_bytes()
    assert (out / "data" / "sub" / "conf.json").read_text() == '{"k": 1}'
    assert (out / "texts" / "inline.txt").read_text() == "inline"
    assert mlflow.artifacts.load_dict(f"runs:/{rid}/texts/d.json") == {"x": [1, 2]}
    one = ml.download_artifacts(rid, "data/table.csv", str(tmp_path / "one"))
    assert Path(one).read_text() == "a,b\n1,2\n"

    with pytest.raises(MlflowException):
        ml.download_artifacts(rid, "missing.txt", str(tmp_path / "none"))


# -- dataset inputs ---------------------------------------------------------------------------


def test_log_inputs_datasets(ml: MlflowClient, shipyard: Client) -> None:
    schema = json.dumps({"mlflow_colspec": [{"type": "double", "name": "x"}]})
    http = Dataset(
        name="train",
        digest="abc123",
        source_type="http",
        source=json.dumps({"uri": "https://example.com/train.csv"}),
        schema=schema,
    )
    code = Dataset(
        name="eval",
        digest="def456",
        source_type="code",
        source=json.dumps({"tags": {"mlflow.source.name": "train.py"}}),
    )
    run = ml.create_run("0")
    rid = run.info.run_id
    ml.log_inputs(
        rid,
        datasets=[
            DatasetInput(http, tags=[InputTag("mlflow.data.context", "training")]),
            DatasetInput(code, tags=[InputTag("mlflow.data.context", "eval")]),
        ],
    )

    inputs = ml.get_run(rid).inputs.dataset_inputs
    got = {i.dataset.name: i for i in inputs}
    assert set(got) == {"train", "eval"}
    for want in (http, code):
        d = got[want.name].dataset
        assert (d.name, d.digest, d.source_type) == (want.name, want.digest, want.source_type)
        assert json.loads(d.source) == json.loads(want.source)
    assert json.loads(got["train"].dataset.schema) == json.loads(schema)
    assert {t.key: t.value for t in got["train"].tags} == {"mlflow.data.context": "training"}

    sy = {i.name: i for i in shipyard.get_run(rid).inputs}
    assert sy["train"].source == "https://example.com/train.csv"
    assert sy["train"].context == "training" and sy["train"].digest == "abc123"
    assert sy["train"].schema_ == {"mlflow_colspec": [{"type": "double", "name": "x"}]}
    assert sy["eval"].context == "eval"


# -- the wire: MLflow's error shape ------------------------------------------------------------


def test_errors_have_mlflows_shape(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.get("/api/2.0/mlflow/runs/get", params={"run_id": "0000000000000000"})
        assert r.status_code == 404
        assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert "0000000000000000" in r.json()["message"]

        r = http.get("/api/2.0/mlflow/runs/get")
        assert r.status_code == 400
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "run_id" in r.json()["message"]

        r = http.post("/api/2.0/mlflow/experiments/create", json={"name": 5})
        assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
        assert "name" in r.json()["message"]

        r = http.post("/api/2.0/mlflow/experiments/create", content=b"{not json")
        assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")

        r = http.post("/api/2.0/mlflow/runs/create", json={"experiment_id": "0"})
        rid = r.json()["run"]["info"]["run_id"]
        bad = {"run_id": rid, "metrics": [{"key": "m", "value": "high", "timestamp": 1}]}
        r = http.post("/api/2.0/mlflow/runs/log-batch", json=bad)
        assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
        assert "metrics[0].value" in r.json()["message"]

        r = http.put(f"/api/2.0/mlflow-artifacts/artifacts/0/{rid}/artifacts/../../x", content=b"x")
        assert r.status_code in (400, 404)
        r = http.put(f"/api/2.0/mlflow-artifacts/artifacts/0/{rid}/artifacts/a%2F..%2F..%2Fx")
        assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


# -- auth -------------------------------------------------------------------------------------


@pytest.fixture
def auth_server(sqlite_home: Path, db_url: str, project: str) -> Iterator[ServerThread]:
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    services = Services.from_settings(
        make_settings(sqlite_home, db_url, auth=True, mlflow_project=project)
    )
    with ServerThread(create_app(services)) as srv:
        srv.services = services  # type: ignore[attr-defined]
        yield srv
    services.close()


def test_auth_roles_apply_to_mlflow_calls(
    auth_server: ServerThread, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    projects = auth_server.services.projects  # type: ignore[attr-defined]
    tokens = {}
    for role in ("admin", "viewer", "editor", "outsider"):
        name = f"{role}-{project}"
        projects.create_user(UserCreate(name=name, is_admin=role == "admin"))
        tokens[role] = projects.create_token(name, "t").secret
    url = auth_server.url

    _point_mlflow_at(monkeypatch, url, None)
    with pytest.raises(MlflowException) as err:
        MlflowClient(url).search_experiments()
    assert _code(err) == "UNAUTHENTICATED"

    _point_mlflow_at(monkeypatch, url, tokens["admin"])
    eid = MlflowClient(url).create_experiment("guarded")  # makes the project on demand
    projects.set_membership(project, f"viewer-{project}", Role.viewer)
    projects.set_membership(project, f"editor-{project}", Role.editor)

    _point_mlflow_at(monkeypatch, url, tokens["editor"])
    run = MlflowClient(url).create_run(eid, run_name="by-editor")
    MlflowClient(url).log_metric(run.info.run_id, "m", 1.0)
    assert run.info.user_id == f"editor-{project}"

    _point_mlflow_at(monkeypatch, url, tokens["viewer"])
    viewer = MlflowClient(url)
    assert viewer.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    with pytest.raises(MlflowException) as err:
        viewer.log_metric(run.info.run_id, "m", 2.0)
    assert _code(err) == "PERMISSION_DENIED"
    with pytest.raises(MlflowException) as err:
        viewer.create_experiment("not-mine")
    assert _code(err) == "PERMISSION_DENIED"

    _point_mlflow_at(monkeypatch, url, tokens["outsider"])
    with pytest.raises(MlflowException) as err:
        MlflowClient(url).get_run(run.info.run_id)
    assert _code(err) == "PERMISSION_DENIED"
    r = httpx.get(
        f"{url}/api/2.0/mlflow-artifacts/artifacts",
        params={"path": f"{eid}/{run.info.run_id}/artifacts"},
        headers={"authorization": f"Bearer {tokens['outsider']}"},
    )
    assert (r.status_code, r.json()["error_code"]) == (403, "PERMISSION_DENIED")


# -- the filter translation itself (no server) -------------------------------------------------


@pytest.mark.parametrize(
    ("mlflow_filter", "shipyard_filter"),
    [
        ("metrics.acc > 0.5", "metrics.`acc` > 0.5"),
        ("metric.`val loss` <= 1e-3", "metrics.`val loss` <= 1e-3"),
        ("params.lr = '0.1' and tags.team != \"a\"", "params.`lr` = '0.1' AND tags.`team` != 'a'"),
        ("parameters.`a``b` LIKE 'x%'", "params.`a``b` LIKE 'x%'"),
        ("tags.note = 'it''s'", "tags.`note` = 'it''s'"),
        ("tags.mlflow.runName ILIKE '%cat%'", "attributes.run_name ILIKE '%cat%'"),
        ("attributes.`Run name` = 'x'", "attributes.run_name = 'x'"),
        ("run.status IN ('FINISHED', 'KILLED')", "attributes.status IN ('FINISHED', 'KILLED')"),
        ("status NOT IN ('RUNNING')", "attributes.status NOT IN ('RUNNING')"),
        ("attr.created >= 1700000000000", "attributes.start_time >= 1700000000000"),
        ("tags.x IS NOT NULL", "tags.`x` LIKE '%'"),
        ("", None),
    ],
)
def test_filter_translation(mlflow_filter: str, shipyard_filter: str | None) -> None:
    from shipyard.tracking import search
    from shipyard.tracking.mlflow_search import translate_run_filter

    translated = translate_run_filter(mlflow_filter)
    assert translated == shipyard_filter
    search.parse_filter(translated)  # and Shipyard's parser takes it
