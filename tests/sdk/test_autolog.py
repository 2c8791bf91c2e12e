"""``sy.autolog()``: real training on small data, logged through both backends, on SQLite and
PostgreSQL (the ``sy`` fixture). Each test reads back what a user would: the runs, their params,
metric histories by step, and the model files, which are loaded and must predict as the
original did. Any ``AutologWarning`` fails a test unless the test expects one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import skops.io
import xgboost as xgb
from sklearn import metrics
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from shipyard.core.errors import InvalidArgument
from shipyard.sdk.autolog import AutologWarning
from shipyard.sdk.client import Client
from shipyard.tracking.schemas import RunPublic, RunStatus

# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_autolog_warnings(recwarn: pytest.WarningsRecorder) -> Any:
    yield
    failures = [str(w.message) for w in recwarn if issubclass(w.category, AutologWarning)]
    assert not failures, failures


@pytest.fixture
def autolog(sy: Any) -> Any:
    sy.autolog()
    yield sy
    sy.autolog(disable=True)


@pytest.fixture(scope="module")
def binary() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=80, n_features=4, n_informative=3, n_redundant=1, random_state=0
    )
    return X, y


def runs(client: Client) -> list[RunPublic]:
    """Every run of the test's project (each test has its own), oldest first."""
    return sorted(client.search_runs().data, key=lambda r: (r.start_time, r.id))


def only_run(client: Client) -> RunPublic:
    found = runs(client)
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def history(client: Client, run_id: str, key: str) -> tuple[list[int], list[float | None]]:
    h = client.get_metric_history(run_id, key)
    return h.steps, h.values


def model_folder(client: Client, run: RunPublic, dest: Path) -> Path:
    folder = client.download_artifacts(run.id, "model", dest)
    manifest = json.loads((folder / "manifest.json").read_text())
    # The manifest's digests are those of the files the run holds.
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert set(manifest["files"]) | {"manifest.json"} == {p.name for p in folder.iterdir()}
    return folder


def manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def example(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "input_example.json").read_text())


def load_skops(path: Path) -> Any:
    # The user trusts the types of a model they logged themselves.
    return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))


def metric(run: RunPublic, key: str) -> float:
    m = run.metrics[key]
    assert m.value is not None
    return m.value


# -- scikit-learn -------------------------------------------------------------------------------


def test_classifier_fit_logs_params_training_metrics_and_model(
    autolog: Any, client: Client, binary: Any, tmp_path: Path
) -> None:
    X, y = binary
    model = LogisticRegression(C=0.5, max_iter=200).fit(X, y)

    run = only_run(client)
    assert run.status == RunStatus.FINISHED
    assert run.params["C"] == "0.5"
    assert run.params["max_iter"] == "200"
    assert run.tags["estimator_name"] == "LogisticRegression"
    assert run.tags["estimator_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    pred, proba = model.predict(X), model.predict_proba(X)
    expected = {
        "training_score": model.score(X, y),
        "training_accuracy": metrics.accuracy_score(y, pred),
        "training_precision": metrics.precision_score(y, pred, average="weighted"),
        "training_recall": metrics.recall_score(y, pred, average="weighted"),
        "training_f1": metrics.f1_score(y, pred, average="weighted"),
        "training_log_loss": metrics.log_loss(y, proba),
        "training_roc_auc": metrics.roc_auc_score(y, proba[:, 1]),
    }
    for key, value in expected.items():
        assert metric(run, key) == pytest.approx(value), key
        assert run.metrics[key].step == 0

    folder = model_folder(client, run, tmp_path)
    loaded = load_skops(folder / "model.skops")
    assert type(loaded) is LogisticRegression
    np.testing.assert_array_equal(loaded.predict(X), pred)
    np.testing.assert_allclose(loaded.predict_proba(X), proba)
    ex = example(folder)
    assert ex["columns"] is None
    np.testing.assert_allclose(np.array(ex["data"]), X[:5])
    man = manifest(folder)
    assert man["flavor"] == "sklearn"
    assert man["model_file"] == "model.skops"
    assert man["input_example"] == "input_example.json"
    assert man["signature"]["inputs"] == {"type": "tensor", "dtype": "float64", "shape": [-1, 4]}
    assert "scikit-learn" in man["library_versions"]


def test_regressor_fit_logs_regression_metrics(autolog: Any, client: Client) -> None:
    X, y = make_regression(n_samples=40, n_features=3, noise=5.0, random_state=0)
    model = Ridge(alpha=2.0).fit(X, y)

    run = only_run(client)
    assert run.params["alpha"] == "2.0"
    pred = model.predict(X)
    mse = metrics.mean_squared_error(y, pred)
    assert metric(run, "training_mse") == pytest.approx(mse)
    assert metric(run, "training_rmse") == pytest.approx(mse**0.5)
    assert metric(run, "training_mae") == pytest.approx(metrics.mean_absolute_error(y, pred))
    assert metric(run, "training_r2") == pytest.approx(metrics.r2_score(y, pred))
    assert metric(run, "training_score") == pytest.approx(model.score(X, y))
    assert "training_accuracy" not in run.metrics


def test_pipeline_is_one_run_with_deep_params(
    autolog: Any, client: Client, binary: Any, tmp_path: Path
) -> None:
    X, y = binary
    df = pd.DataFrame(X, columns=["age", "income", "tenure", "visits"])
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=3.0))]).fit(df, y)

    run = only_run(client)  # the steps' own fits made no runs
    assert run.tags["estimator_name"] == "Pipeline"
    assert run.params["clf__C"] == "3.0"
    assert run.params["scale__with_mean"] == "True"
    assert metric(run, "training_accuracy") == pytest.approx(pipe.score(df, y))

    folder = model_folder(client, run, tmp_path)
    loaded = load_skops(folder / "model.skops")
    np.testing.assert_array_equal(loaded.predict(df), pipe.predict(df))
    ex = example(folder)
    assert ex["columns"] == ["age", "income", "tenure", "visits"]
    np.testing.assert_allclose(np.array(ex["data"], dtype=float), X[:5])
    assert manifest(folder)["signature"]["inputs"] == [
        {"name": c, "type": "float64"} for c in ["age", "income", "tenure", "visits"]
    ]


def test_meta_estimator_is_one_run_and_multiclass_metrics(autolog: Any, client: Client) -> None:
    X, y = make_classification(
        n_samples=90, n_features=5, n_informative=4, n_redundant=1, n_classes=3, random_state=1
    )
    model = OneVsRestClassifier(LogisticRegression(max_iter=300)).fit(X, y)

    run = only_run(client)  # not one more per class
    assert run.tags["estimator_name"] == "OneVsRestClassifier"
    assert run.params["estimator__max_iter"] == "300"
    proba = model.predict_proba(X)
    assert metric(run, "training_roc_auc") == pytest.approx(
        metrics.roc_auc_score(y, proba, multi_class="ovr", average="weighted")
    )
    assert metric(run, "training_log_loss") == pytest.approx(metrics.log_loss(y, proba))


def test_grid_search_logs_a_parent_and_a_child_run_per_candidate(
    autolog: Any, client: Client, binary: Any, tmp_path: Path
) -> None:
    X, y = binary
    search = GridSearchCV(LogisticRegression(max_iter=200), {"C": [0.01, 1.0, 100.0]}, cv=2)
    search.fit(X, y)

    found = runs(client)
    assert len(found) == 4  # the parent and 3 candidates; the 6 CV fits and the refit made none
    [parent] = [r for r in found if r.parent_run_id is None]
    children = [r for r in found if r.parent_run_id == parent.id]
    assert len(children) == 3
    assert parent.status == RunStatus.FINISHED
    assert parent.params["best_C"] == str(search.best_params_["C"])
    assert parent.params["estimator__max_iter"] == "200"
    assert metric(parent, "best_cv_score") == pytest.approx(search.best_score_)
    assert metric(parent, "training_accuracy") == pytest.approx(search.score(X, y))

    res = search.cv_results_
    for child in children:
        i = int(child.tags["candidate_index"])
        assert child.status == RunStatus.FINISHED
        assert child.experiment_id == parent.experiment_id
        assert child.params == {"C": str(res["params"][i]["C"])}
        for key in ("mean_test_score", "std_test_score", "rank_test_score", "mean_fit_time"):
            assert metric(child, key) == pytest.approx(float(res[key][i])), key
    assert sorted(int(c.tags["candidate_index"]) for c in children) == [0, 1, 2]

    # The model is the refitted best estimator.
    loaded = load_skops(model_folder(client, parent, tmp_path) / "model.skops")
    assert loaded.get_params()["C"] == search.best_params_["C"]
    np.testing.assert_array_equal(loaded.predict(X), search.predict(X))


def test_max_tuning_runs_keeps_the_best_ranked_candidates(
    sy: Any, client: Client, binary: Any
) -> None:
    X, y = binary
    sy.autolog(max_tuning_runs=2)
    try:
        search = RandomizedSearchCV(
            DecisionTreeClassifier(random_state=0),
            {"max_depth": [1, 2, 3, 4]},
            n_iter=4,
            cv=2,
            random_state=0,
        ).fit(X, y)
    finally:
        sy.autolog(disable=True)

    children = [r for r in runs(client) if r.parent_run_id is not None]
    ranks = search.cv_results_["rank_test_score"]
    best = sorted(range(4), key=lambda i: (ranks[i], i))[:2]
    assert sorted(int(c.tags["candidate_index"]) for c in children) == sorted(best)


def test_fit_inside_an_active_run_logs_into_it_and_leaves_it_open(
    autolog: Any, client: Client, binary: Any
) -> None:
    X, y = binary
    with autolog.start_run(name="mine") as active:
        LogisticRegression(C=2.0).fit(X, y)
        autolog.flush()
        run = client.get_run(active.id)
        assert run.status == RunStatus.RUNNING
        assert run.params["C"] == "2.0"
        assert "training_accuracy" in run.metrics
        assert autolog.active_run() is active
    assert only_run(client).status == RunStatus.FINISHED


class BoomError(Exception):
    pass


def test_a_failing_fit_marks_the_run_failed_and_reraises_the_same_exception(
    autolog: Any, client: Client, binary: Any
) -> None:
    X, y = binary
    err = BoomError("bad feature")

    def boom(data: Any) -> Any:
        raise err

    pipe = Pipeline([("prep", FunctionTransformer(boom)), ("clf", LogisticRegression())])
    with pytest.raises(BoomError) as info:
        pipe.fit(X, y)
    assert info.value is err  # the user's own exception object, not a wrapper

    run = only_run(client)
    assert run.status == RunStatus.FAILED
    assert run.params["clf__C"] == "1.0"  # params are logged before fit runs
    assert autolog.active_run() is None


def test_a_library_error_reaches_the_user_unchanged(
    autolog: Any, client: Client, binary: Any
) -> None:
    X, y = binary
    bad = X.copy()
    bad[0, 0] = np.nan
    autolog.autolog(disable=True)
    with pytest.raises(ValueError) as plain:
        LogisticRegression().fit(bad, y)
    autolog.autolog()
    with pytest.raises(ValueError) as logged:
        LogisticRegression().fit(bad, y)
    assert type(logged.value) is type(plain.value)
    assert str(logged.value) == str(plain.value)
    assert only_run(client).status == RunStatus.FAILED


def test_a_logging_failure_is_a_warning_and_fit_still_returns(
    autolog: Any, client: Client, binary: Any
) -> None:
    X, y = binary
    run = autolog.start_run()
    client.delete_run(run.id)  # the store now refuses every write to this run
    with pytest.warns(AutologWarning):
        model = LogisticRegression().fit(X, y)
    autolog.autolog(disable=True)  # the same fit without autologging, to compare
    expected = LogisticRegression().fit(X, y)
    np.testing.assert_array_equal(model.coef_, expected.coef_)
    client.restore_run(run.id)
    run.end()
    assert only_run(client).params == {}  # nothing was half-written


def test_disable_restores_the_exact_original_functions(
    sy: Any, client: Client, binary: Any
) -> None:
    from sklearn.utils import all_estimators

    def snapshot() -> dict[tuple[Any, str], Any]:
        owners: list[Any] = [lgb, xgb]
        for _, cls in all_estimators():
            owners.extend(cls.__mro__)
        owners += [lgb.LGBMModel, lgb.LGBMClassifier, lgb.LGBMRegressor, lgb.LGBMRanker]
        owners += [xgb.XGBModel, xgb.XGBClassifier, xgb.XGBRegressor, xgb.XGBRanker]
        names = ("fit", "fit_transform", "fit_predict", "train")
        return {(o, n): vars(o)[n] for o in set(owners) for n in names if n in vars(o)}

    before = snapshot()
    originals = (LogisticRegression.fit, Pipeline.fit, lgb.train, xgb.train, xgb.XGBModel.fit)
    sy.autolog()
    patched = (LogisticRegression.fit, Pipeline.fit, lgb.train, xgb.train, xgb.XGBModel.fit)
    assert all(p is not o for p, o in zip(patched, originals, strict=True))
    assert lgb.LGBMClassifier.fit is not before[(lgb.LGBMClassifier, "fit")]
    sy.autolog()  # again: replaces the settings, never wraps a wrapper
    sy.autolog(disable=True)

    after = snapshot()
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    current = (LogisticRegression.fit, Pipeline.fit, lgb.train, xgb.train, xgb.XGBModel.fit)
    assert all(c is o for c, o in zip(current, originals, strict=True))
    # available_if methods kept their meaning: a Pipeline ending in a classifier has no fit_predict
    assert not hasattr(Pipeline([("clf", LogisticRegression())]), "fit_predict")

    X, y = binary
    LogisticRegression().fit(X, y)
    assert runs(client) == []


def test_bad_settings_name_the_field() -> None:
    import shipyard

    with pytest.raises(InvalidArgument) as info:
        shipyard.autolog(libraries=["torch"])
    assert info.value.details["field"] == "libraries"
    with pytest.raises(InvalidArgument) as info:
        shipyard.autolog(max_tuning_runs=-1)
    assert info.value.details["field"] == "max_tuning_runs"


def test_import_shipyard_does_not_import_the_ml_libraries() -> None:
    code = (
        "import sys, shipyard; "
        "print([m for m in ('sklearn', 'lightgbm', 'xgboost', 'skops') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- LightGBM -----------------------------------------------------------------------------------


def test_lightgbm_train_logs_eval_metrics_by_iteration(
    autolog: Any, client: Client, binary: Any, tmp_path: Path
) -> None:
    X, y = binary
    dtrain = lgb.Dataset(X[:60], y[:60])
    dvalid = lgb.Dataset(X[60:], y[60:], reference=dtrain)
    recorded: dict[str, Any] = {}
    params = {"objective": "binary", "num_leaves": 4, "learning_rate": 0.3, "verbose": -1}
    callbacks = [lgb.record_evaluation(recorded), lgb.early_stopping(3, verbose=False)]
    booster = lgb.train(params, dtrain, 8, valid_sets=[dvalid], callbacks=callbacks)
    assert len(callbacks) == 2  # the user's list is left as it was

    run = only_run(client)
    assert run.status == RunStatus.FINISHED
    assert run.params["objective"] == "binary"
    assert run.params["num_leaves"] == "4"
    assert run.params["num_boost_round"] == "8"
    expected = recorded["valid_0"]["binary_logloss"]
    steps, values = history(client, run.id, "valid_0-binary_logloss")
    assert steps == list(range(len(expected)))  # every iteration, the stopping one included
    assert values == pytest.approx(expected)
    assert metric(run, "best_iteration") == booster.best_iteration
    assert metric(run, "stopped_iteration") == booster.current_iteration()

    imp = json.loads(
        client.download_artifacts(run.id, "feature_importance.json", tmp_path).read_text()
    )
    names = booster.feature_name()
    assert imp["split"] == dict(
        zip(names, booster.feature_importance("split").tolist(), strict=True)
    )
    assert imp["gain"] == pytest.approx(
        dict(zip(names, booster.feature_importance("gain").tolist(), strict=True))
    )

    folder = model_folder(client, run, tmp_path)
    assert manifest(folder)["flavor"] == "lightgbm"
    loaded = lgb.Booster(model_file=str(folder / "model.txt"))
    np.testing.assert_allclose(loaded.predict(X), booster.predict(X))
    np.testing.assert_allclose(np.array(example(folder)["data"]), X[:5])


@pytest.mark.filterwarnings("ignore:The argument 'eval_set' is deprecated")
def test_lightgbm_sklearn_api_logs_eval_set_metrics_and_model(
    autolog: Any, client: Client, binary: Any, tmp_path: Path
) -> None:
    X, y = binary
    clf = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1)
    clf.fit(X[:60], y[:60], eval_set=[(X[60:], y[60:])])

    run = only_run(client)
    assert run.params["n_estimators"] == "5"
    assert run.tags["estimator_name"] == "LGBMClassifier"
    steps, values = history(client, run.id, "valid_0-binary_logloss")
    assert steps == [0, 1, 2, 3, 4]
    assert values == pytest.approx(clf.evals_result_["valid_0"]["binary_logloss"])
    assert metric(run, "training_accuracy") == pytest.approx(clf.score(X[:60], y[:60]))

    folder = model_folder(client, run, tmp_path)
    man = manifest(folder)
    assert man["model_file"] == "model.txt"
    assert man["sklearn_api"]["classes"] == [0, 1]
    loaded = lgb.Booster(model_file=str(folder / "model.txt"))
    np.testing.assert_allclose(loaded.predict(X), clf.predict_proba(X)[:, 1])


# -- XGBoost ------------------------------------------------------------------------------------


def test_xgboost_train_logs_eval_metrics_by_iteration(
    autolog: Any, client: Client, binary: Any, tmp_path: Path
) -> None:
    X, y = binary
    dtrain = xgb.DMatrix(X[:60], label=y[:60])
    dvalid = xgb.DMatrix(X[60:], label=y[60:])
    evals_result: dict[str, Any] = {}
    params = {"objective": "binary:logistic", "eval_metric": "logloss", "max_depth": 2}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=6,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        early_stopping_rounds=3,
        evals_result=evals_result,
        verbose_eval=False,
    )

    run = only_run(client)
    assert run.params["max_depth"] == "2"
    assert run.params["num_boost_round"] == "6"
    assert run.params["early_stopping_rounds"] == "3"
    for data in ("train", "valid"):
        steps, values = history(client, run.id, f"{data}-logloss")
        assert steps == list(range(len(evals_result[data]["logloss"])))
        assert values == pytest.approx(evals_result[data]["logloss"])
    assert metric(run, "best_iteration") == booster.best_iteration
    assert metric(run, "stopped_iteration") == booster.num_boosted_rounds()

    imp = json.loads(
        client.download_artifacts(run.id, "feature_importance.json", tmp_path).read_text()
    )
    assert imp["gain"] == pytest.approx(booster.get_score(importance_type="gain"))

    folder = model_folder(client, run, tmp_path)
    man = manifest(folder)
    assert (man["flavor"], man["model_file"], man["input_example"]) == (
        "xgboost",
        "model.json",
        None,  # a DMatrix keeps no raw rows
    )
    loaded = xgb.Booster(model_file=str(folder / "model.json"))
    np.testing.assert_allclose(loaded.predict(xgb.DMatrix(X)), booster.predict(xgb.DMatrix(X)))


def test_xgboost_sklearn_api_logs_eval_set_metrics_and_model(
    autolog: Any, client: Client, binary: Any, tmp_path: Path
) -> None:
    X, y = binary
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=2, eval_metric="logloss")
    clf.fit(X[:60], y[:60], eval_set=[(X[60:], y[60:])], verbose=False)

    run = only_run(client)
    assert run.params["n_estimators"] == "5"
    assert "gamma" not in run.params  # XGBoost's defaults (None) are not logged
    steps, values = history(client, run.id, "validation_0-logloss")
    assert steps == [0, 1, 2, 3, 4]
    assert values == pytest.approx(clf.evals_result()["validation_0"]["logloss"])
    assert "best_iteration" not in run.metrics  # no early stopping
    assert metric(run, "training_accuracy") == pytest.approx(clf.score(X[:60], y[:60]))

    folder = model_folder(client, run, tmp_path)
    loaded = xgb.XGBClassifier()
    loaded.load_model(str(folder / "model.json"))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_allclose(np.array(example(folder)["data"]), X[:5])
