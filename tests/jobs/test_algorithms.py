"""Built-in algorithms: each trains on a small generated dataset with no user code, logs its
metrics, and saves a model that loads and predicts; bad hyperparameters or data are refused with
an error naming what is wrong; and an algorithm job's ``model`` artifact registers as it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core.errors import InvalidArgument
from shipyard.core.executors import LocalExecutor, TaskState
from shipyard.jobs import algorithms
from shipyard.jobs.launcher import PRELOAD
from shipyard.models.format import load_model
from tests.jobs.runtime_helpers import JobHarness, make_job


def dataset(n: int = 160, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df["label"] = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    df["amount"] = 2 * X[:, 0] + X[:, 2] + rng.normal(scale=0.1, size=n)
    return df


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ as CSV, validation/ as Parquet, as a user would hand them over."""
    d = tmp_path_factory.mktemp("data")
    df = dataset()
    # One dataset per target: every column but the target is a feature.
    for target, drop in (("label", "amount"), ("amount", "label")):
        (d / target / "train").mkdir(parents=True)
        (d / target / "validation").mkdir()
        part = df.drop(columns=[drop])
        part.iloc[:120].to_csv(d / target / "train" / "part-0.csv", index=False)
        part.iloc[120:].to_parquet(d / target / "validation" / "part-0.parquet")
    return d


CASES = [
    ("xgboost", {"target": "label", "num_round": 8}, "classification", "validation/logloss"),
    ("xgboost", {"target": "amount", "num_round": "8"}, "regression", "validation/rmse"),
    (
        "lightgbm",
        {"target": "label", "num_iterations": 8, "min_data_in_leaf": 5},
        "classification",
        "validation/binary_logloss",
    ),
    ("lightgbm", {"target": "amount", "num_iterations": 8}, "regression", "validation/rmse"),
    ("linear", {"target": "label", "C": "0.5"}, "classification", None),
    ("linear", {"target": "amount", "alpha": 0.1}, "regression", None),
    ("random-forest", {"target": "label", "n_estimators": 10}, "classification", None),
    ("random-forest", {"target": "amount", "n_estimators": 10}, "regression", None),
    ("kmeans", {"k": 3, "features": "a,b,c"}, "clustering", None),
]


@pytest.mark.parametrize(
    ("algorithm", "hps", "task", "per_iteration"),
    CASES,
    ids=[f"{c[0]}-{c[2]}" for c in CASES],
)
def test_each_algorithm_trains_logs_and_saves_a_loadable_model(
    algorithm: str,
    hps: dict[str, Any],
    task: str,
    per_iteration: str | None,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    logged: list[tuple[int | None, dict[str, float]]] = []
    folder = data_dir / hps.get("target", "label")
    out = algorithms.train(
        algorithm,
        hps,
        channels={"train": folder / "train", "validation": folder / "validation"},
        model_dir=tmp_path / "model",
        output_dir=tmp_path / "output",
        log_metrics=lambda m, step: logged.append((step, m)),
    )
    assert out["task"] == task and out["rows"] == 120
    assert out["features"] == ["a", "b", "c"]
    final = out["metrics"]
    if task == "classification":
        assert final["validation/accuracy"] >= 0.7  # chance is 0.5
        assert "validation/log_loss" in final
    elif task == "regression":
        assert final["validation/rmse"] < 1.5 and "validation/r2" in final
    else:
        assert final["validation/inertia"] > 0
        assert sum(out["cluster_sizes"]) == 120
    # The final metrics are logged too (but a curve is not extended by its final value).
    assert {k: v for k, v in logged[-1][1].items()} == {
        k: v for k, v in final.items() if per_iteration is None or k != per_iteration
    }
    if per_iteration is not None:
        # A booster logs its evaluation at every iteration, on train and on validation.
        steps = [s for s, m in logged if per_iteration in m]
        assert steps == list(range(8))
        assert all(per_iteration.replace("validation", "train") in m for _, m in logged[:8])
        curve = [m[per_iteration] for _, m in logged[:8]]
        assert curve[-1] < curve[0]

    model = load_model(tmp_path / "model")
    rows = dataset(5, seed=1)[["a", "b", "c"]]
    pred = model.predict(rows)
    assert len(pred) == 5
    if task == "classification" and algorithm != "xgboost":
        assert set(pred.tolist()) <= {"yes", "no"}
    if algorithm == "xgboost" and task == "classification":
        # Class indices into the sorted labels, which the training summary lists.
        assert set(pred.tolist()) <= {0, 1} and out["classes"] == ["no", "yes"]
    assert (tmp_path / "output" / "training.json").exists()


@pytest.mark.parametrize(
    ("algorithm", "hps", "field", "words"),
    [
        ("xgboost", {"target": "label", "max_dpth": 3}, "hyperparameters.max_dpth", "unknown"),
        ("xgboost", {"target": "label", "num_round": "many"}, "hyperparameters.num_round", "an integer"),
        ("lightgbm", {"target": "label", "learning_rate": 0}, "hyperparameters.learning_rate", "> 0"),
        ("linear", {"target": "label", "fit_intercept": "maybe"}, "hyperparameters.fit_intercept", "true or false"),
        ("random-forest", {"target": "label", "max_features": "half"}, "hyperparameters.max_features", "sqrt, log2, all"),
        ("lightgbm", {}, "hyperparameters.target", "required"),
        ("kmeans", {"features": "a,b"}, "hyperparameters.k", "required"),
        ("svm", {}, "algorithm", "expected one of xgboost, lightgbm"),
    ],
)  # fmt: skip
def test_bad_hyperparameters_are_refused_naming_the_hyperparameter(
    algorithm: str, hps: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as e:
        algorithms.validate_hyperparameters(algorithm, hps)
    assert e.value.details["field"] == field
    assert words in e.value.message


def test_hyperparameters_arrive_as_strings_and_are_converted() -> None:
    got = algorithms.validate_hyperparameters(
        "lightgbm",
        {"target": "y", "num_iterations": "50", "learning_rate": "0.05", "max_depth": "-1"},
    )
    assert (got["num_iterations"], got["learning_rate"], got["max_depth"]) == (50, 0.05, -1)
    assert got["num_leaves"] == 31  # defaults filled in
    assert (
        algorithms.validate_hyperparameters("linear", {"target": "y", "standardize": "false"})[
            "standardize"
        ]
        is False
    )


def test_bad_data_is_refused_naming_the_column_or_channel(tmp_path: Path) -> None:
    df = dataset(40)
    df["city"] = "paris"
    (tmp_path / "train").mkdir()
    df.to_csv(tmp_path / "train" / "rows.csv", index=False)

    def train(hps: dict[str, Any], channels: dict[str, Path]) -> None:
        algorithms.train("linear", hps, channels=channels, model_dir=tmp_path / "m")

    with pytest.raises(InvalidArgument) as e:
        train({"target": "label"}, {"train": tmp_path / "train"})
    assert e.value.details["field"] == "inputs.train" and "'city'" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        train({"target": "price"}, {"train": tmp_path / "train"})
    assert e.value.details["field"] == "hyperparameters.target" and "'price'" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        train({"target": "label"}, {"validation": tmp_path / "train"})
    assert e.value.details["field"] == "inputs.train"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgument) as e:
        train({"target": "label"}, {"train": tmp_path / "empty"})
    assert "no .csv or .parquet" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        algorithms.train(
            "lightgbm",
            {"target": "label", "features": "a,b", "early_stopping_rounds": 3},
            channels={"train": tmp_path / "train"},
            model_dir=tmp_path / "m",
        )
    assert e.value.details["field"] == "hyperparameters.early_stopping_rounds"


# -- an algorithm job, end to end ---------------------------------------------------------------


@pytest.fixture
def db_url(sqlite_home: Path) -> str:
    return f"sqlite:///{sqlite_home / 'shipyard.db'}"


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalExecutor]:
    ex = LocalExecutor(
        tmp_path_factory.mktemp("tasks"), 2, preload=[*PRELOAD, "pandas", "lightgbm", "sklearn"]
    )
    yield ex
    ex.shutdown()


@pytest.fixture
def job(services, executor: LocalExecutor, project: str) -> JobHarness:  # type: ignore[no-untyped-def]
    return make_job(services, executor, project)


def test_an_algorithm_job_logs_per_iteration_and_its_model_registers(
    job: JobHarness, data_dir: Path
) -> None:
    spec = {
        "algorithm": "lightgbm",
        "hyperparameters": {"target": "label", "num_iterations": 12, "min_data_in_leaf": 5},
        "inputs": {
            "train": str(data_dir / "label" / "train"),
            "validation": str(data_dir / "label" / "validation"),
        },
    }
    a = job.run(spec)
    assert a.status.state == TaskState.SUCCEEDED, a.log
    assert a.log.splitlines()[0] == "shipyard: starting algorithm lightgbm (attempt 1, rank 0/1)"
    assert a.status.result["model_artifact_path"] == "model"
    assert a.status.result["value"]["metrics"]["validation/accuracy"] > 0.8
    curve = job.history("validation/binary_logloss")
    assert len(curve) == 12 and curve[-1] < curve[0]
    assert job.get_run().metrics["validation/accuracy"].value > 0.8
    assert "model/shipyard-model.json" in job.artifacts()
    assert "output/training.json" in job.artifacts()

    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    client = Client(job.project, backend=LocalBackend(job.services))
    version = client.register_model(f"runs:/{job.run_id}/model", "churn")
    assert version.flavor == "lightgbm"
    assert [c["name"] for c in version.signature["inputs"]] == ["a", "b", "c"]
    loaded = client.load_model("models:/churn/1")
    assert set(loaded.predict(dataset(4, seed=2)[["a", "b", "c"]]).tolist()) <= {"yes", "no"}


def test_an_algorithm_job_with_a_bad_hyperparameter_fails_naming_it(job: JobHarness) -> None:
    a = job.run({"algorithm": "xgboost", "hyperparameters": {"target": "y", "depth": 3}})
    assert a.status.state == TaskState.FAILED
    assert a.status.error["code"] == "INVALID_ARGUMENT"
    assert a.status.error["details"]["field"] == "hyperparameters.depth"
    assert a.report["summary"]["status"] == "failed"
