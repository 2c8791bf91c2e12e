"""Built-in algorithms: a job with ``algorithm=...`` trains a model with no user code.

``"xgboost"``, ``"lightgbm"``, ``"linear"`` (logistic or ridge regression), ``"random-forest"``
and ``"kmeans"`` read the ``train`` channel (and ``validation`` when given): CSV or Parquet files,
one file or a folder of them. The ``target`` hyperparameter names the target column (kmeans
needs none); every other column is a feature unless ``features`` lists them. Features must be
numeric. ``task`` is ``classification`` or ``regression``; ``auto`` (the default) decides from the
target: text, booleans or at most ``MAX_AUTO_CLASSES`` distinct integers make a classification.

The boosters log their evaluation metrics at every iteration (``train/<metric>``,
``validation/<metric>``, e.g. ``validation/binary_logloss``); every algorithm logs final metrics
(accuracy and log loss, or RMSE, MAE and R², or inertia) on the validation data when given, else
on the training data. The model is saved into the job's model folder in Shipyard's model format
(LightGBM's text model, XGBoost's JSON, scikit-learn through skops), so the job's ``model``
artifact registers as a model version as it is.

Hyperparameters are checked before anything is read (``validate_hyperparameters``, cheap: the
jobs service can call it at submit): an unknown name or a value of the wrong type is an
``InvalidArgument`` naming ``hyperparameters.<name>``. Values may be given as strings
("0.1", "true"), as they arrive from a command line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.core.errors import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

ALGORITHMS = ("xgboost", "lightgbm", "linear", "random-forest", "kmeans")
# "auto" makes a classification of an integer target with at most this many distinct values.
MAX_AUTO_CLASSES = 20
DATA_SUFFIXES = (".csv", ".parquet", ".pq")

LogMetrics = Callable[[dict[str, float], int | None], None]


@dataclass(frozen=True)
class HP:
    """A hyperparameter: its type, default, bounds and meaning."""

    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    min_exclusive: bool = False


_COMMON = {
    "target": HP(str, None, "the target column", nullable=True),
    "features": HP(
        str, None, "comma-separated feature columns (default: every other column)", nullable=True
    ),
    "task": HP(str, "auto", "what to predict", choices=("auto", "classification", "regression")),
    "seed": HP(int, 0, "random seed", min=0),
}

HYPERPARAMETERS: dict[str, dict[str, HP]] = {
    # SageMaker's XGBoost names, so its users' settings carry over.
    "xgboost": {
        **_COMMON,
        "num_round": HP(int, 100, "boosting rounds", min=1),
        "eta": HP(float, 0.3, "learning rate", min=0, min_exclusive=True),
        "max_depth": HP(int, 6, "maximum tree depth", min=0),
        "subsample": HP(float, 1.0, "row subsample ratio", min=0, max=1, min_exclusive=True),
        "colsample_bytree": HP(
            float, 1.0, "column subsample ratio per tree", min=0, max=1, min_exclusive=True
        ),
        "min_child_weight": HP(float, 1.0, "minimum hessian weight in a child", min=0),
        "gamma": HP(float, 0.0, "minimum loss reduction to split", min=0),
        "lambda": HP(float, 1.0, "L2 regularization", min=0),
        "alpha": HP(float, 0.0, "L1 regularization", min=0),
        "objective": HP(str, None, "XGBoost objective (default from the task)", nullable=True),
        "eval_metric": HP(str, None, "evaluation metric (default from the task)", nullable=True),
        "early_stopping_rounds": HP(
            int, None, "stop after this many rounds without improvement", min=1, nullable=True
        ),
        "nthread": HP(int, None, "threads (default: the job's CPUs)", min=1, nullable=True),
    },
    # LightGBM's own names.
    "lightgbm": {
        **_COMMON,
        "num_iterations": HP(int, 100, "boosting iterations", min=1),
        "learning_rate": HP(float, 0.1, "learning rate", min=0, min_exclusive=True),
        "num_leaves": HP(int, 31, "maximum leaves per tree", min=2),
        "max_depth": HP(int, -1, "maximum tree depth (-1: no limit)", min=-1),
        "min_data_in_leaf": HP(int, 20, "minimum rows in a leaf", min=0),
        "feature_fraction": HP(
            float, 1.0, "column subsample ratio", min=0, max=1, min_exclusive=True
        ),
        "bagging_fraction": HP(float, 1.0, "row subsample ratio", min=0, max=1, min_exclusive=True),
        "bagging_freq": HP(int, 0, "bag every this many iterations (0: never)", min=0),
        "lambda_l1": HP(float, 0.0, "L1 regularization", min=0),
        "lambda_l2": HP(float, 0.0, "L2 regularization", min=0),
        "objective": HP(str, None, "LightGBM objective (default from the task)", nullable=True),
        "metric": HP(str, None, "evaluation metric (default from the task)", nullable=True),
        "early_stopping_rounds": HP(
            int, None, "stop after this many rounds without improvement", min=1, nullable=True
        ),
        "num_threads": HP(int, None, "threads (default: the job's CPUs)", min=1, nullable=True),
    },
    "linear": {
        **_COMMON,
        "C": HP(float, 1.0, "inverse regularization (classification)", min=0, min_exclusive=True),
        "alpha": HP(float, 1.0, "L2 regularization (regression)", min=0),
        "max_iter": HP(int, 1000, "maximum solver iterations", min=1),
        "fit_intercept": HP(bool, True, "fit an intercept"),
        "standardize": HP(bool, True, "scale features to zero mean and unit variance first"),
    },
    "random-forest": {
        **_COMMON,
        "n_estimators": HP(int, 100, "trees", min=1),
        "max_depth": HP(int, None, "maximum tree depth (default: no limit)", min=1, nullable=True),
        "min_samples_leaf": HP(int, 1, "minimum rows in a leaf", min=1),
        "min_samples_split": HP(int, 2, "minimum rows to split a node", min=2),
        "max_features": HP(
            str,
            None,
            "features tried per split (default: sqrt for classification, all for regression)",
            choices=("sqrt", "log2", "all"),
            nullable=True,
        ),
        "bootstrap": HP(bool, True, "sample rows with replacement for each tree"),
        "n_jobs": HP(int, None, "threads (default: the job's CPUs)", min=1, nullable=True),
    },
    "kmeans": {
        **_COMMON,
        "k": HP(int, None, "number of clusters (required)", min=1, nullable=True),
        "max_iter": HP(int, 300, "maximum iterations", min=1),
        "n_init": HP(int, 1, "runs with different seeds; the best is kept", min=1),
        "tol": HP(float, 1e-4, "convergence tolerance", min=0),
        "init": HP(str, "k-means++", "initialization", choices=("k-means++", "random")),
    },
}


# -- validation ---------------------------------------------------------------------------------


def _coerce(name: str, hp: HP, value: Any) -> Any:
    field = f"hyperparameters.{name}"
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        if hp.nullable:
            return None
        raise InvalidArgument.for_field(field, f"expected {_kind(hp)}, got {value!r}")
    out: Any
    if hp.type is bool:
        if isinstance(value, bool):
            out = value
        elif isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            out = value.strip().lower() in ("true", "1")
        elif isinstance(value, int) and value in (0, 1):
            out = bool(value)
        else:
            raise InvalidArgument.for_field(field, f"expected true or false, got {value!r}")
    elif hp.type is int:
        out = _as_int(value)
        if out is None:
            raise InvalidArgument.for_field(field, f"expected an integer, got {value!r}")
    elif hp.type is float:
        out = _as_float(value)
        if out is None:
            raise InvalidArgument.for_field(field, f"expected a number, got {value!r}")
    else:
        if not isinstance(value, str):
            raise InvalidArgument.for_field(field, f"expected a string, got {value!r}")
        out = value
        if hp.choices is not None and out not in hp.choices:
            raise InvalidArgument.for_field(
                field, f"expected one of {', '.join(hp.choices)}, got {value!r}"
            )
    if isinstance(out, int | float) and not isinstance(out, bool):
        low_bad = hp.min is not None and (out <= hp.min if hp.min_exclusive else out < hp.min)
        high_bad = hp.max is not None and out > hp.max
        if low_bad or high_bad:
            raise InvalidArgument.for_field(field, f"expected {_range(hp)}, got {value!r}")
    return out


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else None
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            f = _as_float(v)
            return int(f) if f is not None and f.is_integer() else None
    return None


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _kind(hp: HP) -> str:
    return {bool: "true or false", int: "an integer", float: "a number"}.get(hp.type, "a string")


def _range(hp: HP) -> str:
    parts = []
    if hp.min is not None:
        parts.append(f"{'>' if hp.min_exclusive else '>='} {hp.min:g}")
    if hp.max is not None:
        parts.append(f"<= {hp.max:g}")
    return f"{_kind(hp)} {' and '.join(parts)}"


def validate_hyperparameters(algorithm: str, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of ``algorithm``, checked and converted, with defaults filled in.

    Raises ``InvalidArgument`` for an unknown algorithm (field ``algorithm``), an unknown name,
    a value of the wrong type or out of range, or a missing required one
    (``hyperparameters.<name>``).
    """
    if algorithm not in HYPERPARAMETERS:
        raise InvalidArgument.for_field(
            "algorithm", f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
        )
    known = HYPERPARAMETERS[algorithm]
    for name in hyperparameters:
        if name not in known:
            raise InvalidArgument.for_field(
                f"hyperparameters.{name}",
                f"unknown hyperparameter for {algorithm}; expected one of {', '.join(known)}",
            )
    out = {
        name: _coerce(name, hp, hyperparameters[name]) if name in hyperparameters else hp.default
        for name, hp in known.items()
    }
    if algorithm != "kmeans" and not out["target"]:
        raise InvalidArgument.for_field(
            "hyperparameters.target", f"required by {algorithm}: the name of the target column"
        )
    if algorithm == "kmeans" and out["k"] is None:
        raise InvalidArgument.for_field(
            "hyperparameters.k", "required by kmeans: the number of clusters"
        )
    return out


# -- data ---------------------------------------------------------------------------------------


def channel_files(name: str, path: Path) -> list[Path]:
    """The CSV and Parquet files of a channel (a file, or a folder searched recursively)."""
    if path.is_file():
        return [path]
    files = []
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if not n.startswith(".") and n.lower().endswith(DATA_SUFFIXES):
                files.append(Path(root, n))
    if not files:
        raise InvalidArgument.for_field(f"inputs.{name}", f"{path} holds no .csv or .parquet file")
    return files


def read_channel(name: str, path: Path) -> pd.DataFrame:
    import pandas as pd

    frames = []
    for f in channel_files(name, path):
        try:
            if f.suffix.lower() == ".csv":
                frames.append(pd.read_csv(f))
            else:
                frames.append(pd.read_parquet(f))
        except Exception as exc:
            raise InvalidArgument.for_field(
                f"inputs.{name}", f"cannot read {f.name}: {type(exc).__name__}: {exc}"
            ) from None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


@dataclass
class Data:
    X: pd.DataFrame
    y: Any  # a Series, or None for kmeans without a target
    X_val: pd.DataFrame | None
    y_val: Any
    task: str  # classification | regression | clustering
    features: list[str]


def _split(
    df: pd.DataFrame, channel: str, target: str | None, features: list[str] | None
) -> tuple[pd.DataFrame, Any]:
    import pandas as pd

    if target is not None and target not in df.columns:
        raise InvalidArgument.for_field(
            "hyperparameters.target",
            f"column {target!r} is not in the {channel} channel; its columns are "
            f"{', '.join(map(str, df.columns[:50]))}",
        )
    cols = features if features is not None else [c for c in df.columns if c != target]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InvalidArgument.for_field(
            "hyperparameters.features", f"not in the {channel} channel: {', '.join(missing)}"
        )
    if not cols:
        raise InvalidArgument.for_field(f"inputs.{channel}", "no feature columns")
    X = df[cols]
    for c in cols:
        dtype = X[c].dtype
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            raise InvalidArgument.for_field(
                f"inputs.{channel}",
                f"column {c!r} is {dtype}, not numeric: the built-in algorithms take numeric "
                "features; encode it first, or leave it out with the 'features' hyperparameter",
            )
    y = df[target] if target is not None else None
    if y is not None and y.isna().any():
        raise InvalidArgument.for_field(
            "hyperparameters.target", f"column {target!r} has missing values in {channel}"
        )
    return X, y


def _infer_task(y: Any) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(y.dtype) or not pd.api.types.is_numeric_dtype(y.dtype):
        return "classification"
    if pd.api.types.is_float_dtype(y.dtype) and not (y % 1 == 0).all():
        return "regression"
    return "classification" if y.nunique() <= MAX_AUTO_CLASSES else "regression"


def load_data(algorithm: str, hps: Mapping[str, Any], channels: Mapping[str, Path | str]) -> Data:
    if "train" not in channels:
        raise InvalidArgument.for_field(
            "inputs.train", f"{algorithm} needs a 'train' channel (a CSV or Parquet file)"
        )
    target = hps.get("target")
    features = (
        [c.strip() for c in str(hps["features"]).split(",") if c.strip()]
        if hps.get("features")
        else None
    )
    train = read_channel("train", Path(channels["train"]))
    X, y = _split(train, "train", target, features)
    X_val = y_val = None
    if "validation" in channels:
        val = read_channel("validation", Path(channels["validation"]))
        X_val, y_val = _split(val, "validation", target, list(X.columns))
    if algorithm == "kmeans":
        task = "clustering"
    else:
        task = hps.get("task") or "auto"
        if task == "auto":
            task = _infer_task(y)
    if task == "classification" and y is not None and y.nunique() < 2:
        raise InvalidArgument.for_field(
            "hyperparameters.target", f"column {target!r} has a single class: nothing to learn"
        )
    return Data(X, y, X_val, y_val, task, [str(c) for c in X.columns])


# -- training -----------------------------------------------------------------------------------


def train(
    algorithm: str,
    hyperparameters: Mapping[str, Any],
    *,
    channels: Mapping[str, Path | str],
    model_dir: Path | str,
    output_dir: Path | str | None = None,
    log_metrics: LogMetrics | None = None,
    cpus: int = 1,
) -> dict[str, Any]:
    """Train ``algorithm`` on the channels' data and save the model into ``model_dir`` (empty or
    absent). Returns ``{"algorithm", "task", "rows", "features", "metrics", "iterations"}``."""
    hps = validate_hyperparameters(algorithm, hyperparameters)
    data = load_data(algorithm, hps, channels)
    sink = log_metrics or (lambda metrics, step: None)
    per_iteration: set[str] = set()

    def log(metrics: dict[str, float], step: int | None) -> None:
        per_iteration.update(metrics)
        sink(metrics, step)

    fn = {
        "xgboost": _xgboost,
        "lightgbm": _lightgbm,
        "linear": _linear,
        "random-forest": _random_forest,
        "kmeans": _kmeans,
    }[algorithm]
    model, iterations, extra = fn(hps, data, log, max(1, int(cpus)))
    metrics = _final_metrics(model, data, algorithm)
    # A curve logged at every iteration (validation/rmse) is not extended by its final value.
    final_only = {k: v for k, v in metrics.items() if k not in per_iteration}
    if final_only:
        sink(final_only, iterations)
    from shipyard.models.format import save_model

    save_model(model, Path(model_dir), input_example=data.X.head(5))
    out = {
        "algorithm": algorithm,
        "task": data.task,
        "rows": len(data.X),
        "features": data.features,
        "metrics": metrics,
        "iterations": iterations,
        **extra,
    }
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        Path(output_dir, "training.json").write_text(json.dumps(out, indent=2, default=str))
    return out


def _eval_sets(data: Data) -> tuple[list[tuple[Any, Any]], list[str]]:
    sets = [(data.X, data.y)]
    names = ["train"]
    if data.X_val is not None:
        sets.append((data.X_val, data.y_val))
        names.append("validation")
    return sets, names


def _needs_validation(hps: Mapping[str, Any], data: Data) -> None:
    if hps.get("early_stopping_rounds") and data.X_val is None:
        raise InvalidArgument.for_field(
            "hyperparameters.early_stopping_rounds",
            "early stopping needs a 'validation' channel to watch",
        )


def _xgboost(
    hps: Mapping[str, Any], data: Data, log: LogMetrics, cpus: int
) -> tuple[Any, int, dict[str, Any]]:
    import numpy as np
    import xgboost as xgb

    _needs_validation(hps, data)
    extra: dict[str, Any] = {}
    y, y_val = data.y, data.y_val
    if data.task == "classification":
        # XGBoost's classifiers want labels 0..k-1: the model predicts those indices, and
        # output/training.json lists the classes they stand for.
        classes = np.unique(y)
        index = {c: i for i, c in enumerate(classes.tolist())}
        y = y.map(index)
        if y_val is not None:
            unknown = set(y_val.unique().tolist()) - set(index)
            if unknown:
                raise InvalidArgument.for_field(
                    "inputs.validation",
                    f"target values not seen in train: {sorted(map(str, unknown))[:10]}",
                )
            y_val = y_val.map(index)
        extra["classes"] = classes.tolist()
        n_classes = len(classes)
        objective = hps["objective"] or ("binary:logistic" if n_classes == 2 else "multi:softprob")
        eval_metric = hps["eval_metric"] or ("logloss" if n_classes == 2 else "mlogloss")
    else:
        objective = hps["objective"] or "reg:squarederror"
        eval_metric = hps["eval_metric"] or "rmse"
    sets = [(data.X, y)] + ([(data.X_val, y_val)] if data.X_val is not None else [])
    names = ["train", "validation"][: len(sets)]

    class _Log(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            values = {}
            for i, (_, metrics) in enumerate(evals_log.items()):
                for metric, hist in metrics.items():
                    if hist:
                        last = hist[-1]
                        values[f"{names[i]}/{metric}"] = float(
                            last[0] if isinstance(last, tuple) else last
                        )
            log(values, epoch)
            return False

    kw: dict[str, Any] = {
        "n_estimators": hps["num_round"],
        "learning_rate": hps["eta"],
        "max_depth": hps["max_depth"],
        "subsample": hps["subsample"],
        "colsample_bytree": hps["colsample_bytree"],
        "min_child_weight": hps["min_child_weight"],
        "gamma": hps["gamma"],
        "reg_lambda": hps["lambda"],
        "reg_alpha": hps["alpha"],
        "objective": objective,
        "eval_metric": eval_metric,
        "early_stopping_rounds": hps["early_stopping_rounds"],
        "n_jobs": hps["nthread"] or cpus,
        "random_state": hps["seed"],
        "callbacks": [_Log()],
    }
    cls = xgb.XGBClassifier if data.task == "classification" else xgb.XGBRegressor
    model = cls(**kw)
    try:
        model.fit(data.X, y, eval_set=sets, verbose=False)
    except xgb.core.XGBoostError as exc:
        raise InvalidArgument.for_field(
            "hyperparameters", f"XGBoost refused the settings: {str(exc).splitlines()[0]}"
        ) from None
    best = getattr(model, "best_iteration", None)
    iterations = int(best) + 1 if best is not None else int(hps["num_round"])
    return model, iterations, extra


def _lightgbm(
    hps: Mapping[str, Any], data: Data, log: LogMetrics, cpus: int
) -> tuple[Any, int, dict[str, Any]]:
    import lightgbm as lgb

    _needs_validation(hps, data)
    sets, names = _eval_sets(data)
    classification = data.task == "classification"
    metric = hps["metric"]
    if metric is None:
        metric = (
            ("binary_logloss" if data.y.nunique() == 2 else "multi_logloss")
            if classification
            else "rmse"
        )

    def log_iteration(env: Any) -> None:
        values = {f"{r[0]}/{r[1]}": float(r[2]) for r in env.evaluation_result_list}
        log(values, env.iteration)

    callbacks: list[Any] = [log_iteration]
    if hps["early_stopping_rounds"]:
        callbacks.append(
            lgb.early_stopping(hps["early_stopping_rounds"], first_metric_only=True, verbose=False)
        )
    kw: dict[str, Any] = {
        "n_estimators": hps["num_iterations"],
        "learning_rate": hps["learning_rate"],
        "num_leaves": hps["num_leaves"],
        "max_depth": hps["max_depth"],
        "min_child_samples": hps["min_data_in_leaf"],
        "colsample_bytree": hps["feature_fraction"],
        "subsample": hps["bagging_fraction"],
        "subsample_freq": hps["bagging_freq"],
        "reg_alpha": hps["lambda_l1"],
        "reg_lambda": hps["lambda_l2"],
        "random_state": hps["seed"],
        "n_jobs": hps["num_threads"] or cpus,
        "metric": metric,
        "verbose": -1,
    }
    if hps["objective"]:
        kw["objective"] = hps["objective"]
    cls = lgb.LGBMClassifier if classification else lgb.LGBMRegressor
    model = cls(**kw)
    try:
        with warnings.catch_warnings():
            # LightGBM 4.7 deprecates eval_set for eval_X/eval_y, but its classifier does not
            # encode text labels given through eval_y: keep eval_set, quietly.
            warnings.filterwarnings("ignore", message=".*eval_set.*")
            model.fit(data.X, data.y, eval_set=sets, eval_names=names, callbacks=callbacks)
    except lgb.basic.LightGBMError as exc:
        raise InvalidArgument.for_field(
            "hyperparameters", f"LightGBM refused the settings: {str(exc).splitlines()[0]}"
        ) from None
    best = getattr(model, "best_iteration_", None)
    iterations = int(best) if best else int(hps["num_iterations"])
    return model, iterations, {}


def _linear(
    hps: Mapping[str, Any], data: Data, log: LogMetrics, cpus: int
) -> tuple[Any, int, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est: Any
    if data.task == "classification":
        est = LogisticRegression(
            C=hps["C"],
            max_iter=hps["max_iter"],
            fit_intercept=hps["fit_intercept"],
            random_state=hps["seed"],
        )
    else:
        est = Ridge(alpha=hps["alpha"], fit_intercept=hps["fit_intercept"])
    model = make_pipeline(StandardScaler(), est) if hps["standardize"] else est
    model.fit(data.X, data.y)
    n_iter = getattr(est, "n_iter_", None)
    iterations = int(max(n_iter)) if n_iter is not None and len(n_iter) else 1
    return model, iterations, {}


def _random_forest(
    hps: Mapping[str, Any], data: Data, log: LogMetrics, cpus: int
) -> tuple[Any, int, dict[str, Any]]:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    classification = data.task == "classification"
    mf = hps["max_features"] or ("sqrt" if classification else "all")
    cls = RandomForestClassifier if classification else RandomForestRegressor
    model = cls(
        n_estimators=hps["n_estimators"],
        max_depth=hps["max_depth"],
        min_samples_leaf=hps["min_samples_leaf"],
        min_samples_split=hps["min_samples_split"],
        max_features=1.0 if mf == "all" else mf,
        bootstrap=hps["bootstrap"],
        n_jobs=hps["n_jobs"] or cpus,
        random_state=hps["seed"],
    )
    model.fit(data.X, data.y)
    return model, int(hps["n_estimators"]), {}


def _kmeans(
    hps: Mapping[str, Any], data: Data, log: LogMetrics, cpus: int
) -> tuple[Any, int, dict[str, Any]]:
    from sklearn.cluster import KMeans

    if hps["k"] > len(data.X):
        raise InvalidArgument.for_field(
            "hyperparameters.k",
            f"{hps['k']} clusters for {len(data.X)} rows: expected at most one per row",
        )
    model = KMeans(
        n_clusters=hps["k"],
        max_iter=hps["max_iter"],
        n_init=hps["n_init"],
        tol=hps["tol"],
        init=hps["init"],
        random_state=hps["seed"],
    )
    model.fit(data.X)
    return model, int(model.n_iter_), {"cluster_sizes": _sizes(model.labels_, hps["k"])}


def _sizes(labels: Any, k: int) -> list[int]:
    import numpy as np

    return [int(x) for x in np.bincount(labels, minlength=k)]


def _final_metrics(model: Any, data: Data, algorithm: str) -> dict[str, float]:
    import numpy as np

    on_val = data.X_val is not None
    X: Any = data.X_val if on_val else data.X
    y = data.y_val if on_val else data.y
    prefix = "validation" if on_val else "train"
    out: dict[str, float] = {}
    if data.task == "clustering":
        inertia = float(-model.score(X))
        out[f"{prefix}/inertia"] = inertia
        out[f"{prefix}/mean_squared_distance"] = inertia / max(1, len(X))
        return out
    if data.task == "classification":
        from sklearn.metrics import accuracy_score, log_loss

        pred = model.predict(X)
        truth = np.asarray(y)
        if algorithm == "xgboost":  # its classes are indices into the sorted labels
            pred = np.asarray(_xgb_labels(data))[np.asarray(pred, dtype=int)]
        out[f"{prefix}/accuracy"] = float(accuracy_score(truth, pred))
        if hasattr(model, "predict_proba"):
            proba = model.predict_proba(X)
            labels = _xgb_labels(data) if algorithm == "xgboost" else list(model.classes_)
            with contextlib.suppress(ValueError):  # a validation set missing some classes
                out[f"{prefix}/log_loss"] = float(log_loss(truth, proba, labels=labels))
        return out
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    pred = model.predict(X)
    out[f"{prefix}/rmse"] = float(math.sqrt(mean_squared_error(y, pred)))
    out[f"{prefix}/mae"] = float(mean_absolute_error(y, pred))
    if len(y) > 1:
        out[f"{prefix}/r2"] = float(r2_score(y, pred))
    return out


def _xgb_labels(data: Data) -> list[Any]:
    import numpy as np

    return list(np.unique(data.y))
