"""The stock ``mlflow`` client's model registry calls against a real Shipyard server, on SQLite
and PostgreSQL: what MLflow registers, Shipyard's SDK sees, and the other way round."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from shipyard.sdk.client import Client
from shipyard.sdk.http import HttpBackend
from tests.conftest import ServerThread, make_settings
from tests.models.conftest import FEATURES


@pytest.fixture
def settings(sqlite_home: Path, db_url: str, project: str):  # type: ignore[no-untyped-def]
    """MLflow's calls land in this test's own project."""
    return make_settings(sqlite_home, db_url, mlflow_project=project)


@pytest.fixture
def ml(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    mlflow.set_tracking_uri(server.url)
    yield MlflowClient(server.url)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@pytest.fixture
def shipyard(server: ServerThread, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "client-home"))
    backend = HttpBackend(server.url, retry_for_s=5)
    yield Client(project=project, backend=backend)
    backend.close()


def _logged_model(shipyard: Client, small_model: Any) -> str:
    """A Shipyard model logged in a run of the MLflow project; its runs:/ URI."""
    import shipyard as sy

    sy.init(client=shipyard)
    with sy.start_run(experiment="Default"):
        logged = sy.log_model(small_model, input_example=FEATURES[:3])
    return logged.uri


def test_mlflow_client_registers_and_shipyard_loads(
    ml: MlflowClient, shipyard: Client, small_model: Any
) -> None:
    uri = _logged_model(shipyard, small_model)
    run_id = uri.split("/")[1]
    rm = ml.create_registered_model("churn", tags={"team": "risk"}, description="who leaves")
    assert rm.name == "churn" and rm.tags == {"team": "risk"} and rm.description == "who leaves"
    with pytest.raises(MlflowException) as e:
        ml.create_registered_model("churn")
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"

    mv = ml.create_model_version("churn", uri, run_id=run_id, tags={"k": "v"})
    assert (mv.name, mv.version, mv.run_id, mv.status) == ("churn", "1", run_id, "READY")
    assert mv.tags == {"k": "v"}
    mv2 = ml.create_model_version("churn", uri, run_id=run_id)
    assert mv2.version == "2"

    ml.set_registered_model_alias("churn", "champion", "1")
    by_alias = ml.get_model_version_by_alias("churn", "champion")
    assert by_alias.version == "1" and by_alias.aliases == ["champion"]
    got = ml.get_model_version("churn", "2")
    assert (got.version, got.source) == ("2", uri)
    assert ml.get_registered_model("churn").aliases == {"champion": "1"}

    found = ml.search_model_versions("name = 'churn'")
    assert sorted(v.version for v in found) == ["1", "2"]
    assert [v.version for v in ml.search_model_versions("tags.k = 'v'")] == ["1"]
    newest = ml.search_model_versions(f"run_id = '{run_id}'", max_results=1)
    assert [v.version for v in newest] == ["2"] and newest.token
    assert [m.name for m in ml.search_registered_models("name LIKE 'ch%'")] == ["churn"]

    # Shipyard sees the same registry, and loads what MLflow registered.
    assert shipyard.get_model_version_by_alias("churn", "champion").version == 1
    loaded = shipyard.load_model("models:/churn@champion")
    np.testing.assert_array_equal(loaded.predict(FEATURES), small_model.predict(FEATURES))

    ml.update_model_version("churn", "1", description="first")
    ml.set_model_version_tag("churn", "1", "stage", "canary")
    assert shipyard.get_model_version("churn", 1).tags == {"k": "v", "stage": "canary"}
    ml.delete_registered_model_alias("churn", "champion")
    with pytest.raises(MlflowException) as e:
        ml.get_model_version_by_alias("churn", "champion")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    ml.delete_model_version("churn", "2")
    assert [v.version for v in ml.search_model_versions("name = 'churn'")] == ["1"]
    ml.delete_registered_model("churn")
    with pytest.raises(MlflowException) as e:
        ml.get_registered_model("churn")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_mlflow_register_model_of_an_mlflow_folder(
    ml: MlflowClient, shipyard: Client, tmp_path: Path
) -> None:
    """``mlflow.register_model`` resolves runs:/ to the run's mlflow-artifacts:/ location."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), "model")
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", "outside")
    assert (mv.name, mv.version) == ("outside", "1")
    shipyard_view = shipyard.get_model_version("outside", 1)
    assert shipyard_view.flavor == "mlflow" and shipyard_view.run_id == run.info.run_id
    uri = ml.get_model_version_download_uri("outside", "1")
    assert uri.endswith(f"/{run.info.run_id}/artifacts/model")


def test_mlflow_errors_name_the_field(ml: MlflowClient, shipyard: Client, small_model: Any) -> None:
    with pytest.raises(MlflowException) as e:
        ml.create_registered_model("has space")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and "name" in e.value.message
    ml.create_registered_model("churn")
    with pytest.raises(MlflowException) as e:
        ml.create_model_version("churn", "s3://bucket/model")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and "source" in e.value.message
    with pytest.raises(MlflowException) as e:
        ml.get_model_version("churn", "7")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        ml.search_model_versions("metrics.acc > 1")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
