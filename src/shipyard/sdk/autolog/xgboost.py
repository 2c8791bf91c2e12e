"""Autologging for XGBoost: ``xgboost.train`` and the scikit-learn API (``XGBClassifier``,
``XGBRegressor``, ``XGBRanker``, the random-forest variants).

Records the params, every eval metric at every iteration as ``<data name>-<metric>`` with the
iteration as its step (``validation_0-logloss`` for the scikit-learn API, ``<name>-<metric>``
for the names given to ``xgboost.train``'s ``evals``), ``best_iteration`` (with early stopping)
and ``stopped_iteration``, ``feature_importance.json`` (weight, gain and cover per feature), and
the model as XGBoost's JSON in ``model/model.json``. ``xgboost.train`` logs each iteration as it
ends, through a callback added to the user's; the scikit-learn API logs ``evals_result()`` once
fit returns (its callbacks are constructor arguments, which autologging does not touch).

``xgboost.train`` takes a ``DMatrix``, which does not keep the raw rows, so its model has no
input example; the scikit-learn API's has one.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xgboost
import xgboost.sklearn

from shipyard.sdk.autolog import _log
from shipyard.sdk.autolog._patch import Hook, patch, warn

FLAVOR = "xgboost"
# xgboost-cpu is the same package without the CUDA library; either may be installed.
DISTS = ("xgboost", "xgboost-cpu", "numpy")


def install() -> None:
    patch(xgboost, "train", Train)
    seen: set[type] = set()
    for cls in (
        xgboost.sklearn.XGBModel,
        xgboost.sklearn.XGBClassifier,
        xgboost.sklearn.XGBRegressor,
        xgboost.sklearn.XGBRanker,
        xgboost.sklearn.XGBRFClassifier,
        xgboost.sklearn.XGBRFRegressor,
    ):
        owner = next((k for k in cls.__mro__ if "fit" in vars(k)), None)
        if owner is not None and owner not in seen and inspect.isfunction(vars(owner)["fit"]):
            seen.add(owner)
            patch(owner, "fit", SklearnFit)


def _params(params: Any) -> dict[str, Any]:
    """xgboost.train's params: a dict, or pairs in which a key may repeat (``eval_metric``)."""
    if isinstance(params, Mapping):
        return dict(params)
    out: dict[str, Any] = {}
    for k, v in params or ():
        out[k] = [*out[k], v] if isinstance(out.get(k), list) else ([out[k], v] if k in out else v)
    return out


def _log_booster(hook: Hook, booster: xgboost.Booster, data: Any, **model_kw: Any) -> None:
    run = hook.run

    def iterations() -> None:
        metrics: dict[str, Any] = {"stopped_iteration": booster.num_boosted_rounds()}
        with contextlib.suppress(AttributeError):  # only defined with early stopping
            metrics["best_iteration"] = booster.best_iteration
        _log.log_metrics(run, metrics)

    def importance() -> None:
        _log.log_json(
            run,
            {kind: booster.get_score(importance_type=kind) for kind in ("weight", "gain", "cover")},
            "feature_importance.json",
        )

    hook.safely("log the best iteration", iterations)
    hook.safely("log feature importance", importance)
    if hook.config.log_models:
        hook.safely(
            "log the model",
            lambda: _log.log_model(
                run,
                flavor=FLAVOR,
                data=data,
                log_input_example=hook.config.log_input_examples,
                dists=DISTS,
                **model_kw,
            ),
        )


class _EvalCallback(xgboost.callback.TrainingCallback):
    def __init__(self, hook: Hook) -> None:
        super().__init__()
        self.hook = hook
        self.failed = False

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        if self.failed:
            return False
        try:
            metrics = {}
            for data_name, by_metric in evals_log.items():
                for metric, values in by_metric.items():
                    v = values[-1]
                    metrics[f"{data_name}-{metric}"] = v[0] if isinstance(v, tuple) else v
            _log.log_metrics(self.hook.run, metrics, step=int(epoch))
        except Exception as exc:
            self.failed = True  # one warning, not one per iteration
            warn(f"could not log eval metrics to run {self.hook.run.id}", exc)
        return False  # never asks training to stop


class Train(Hook):
    """``xgboost.train(params, dtrain, num_boost_round, *, evals, ..., callbacks)``."""

    flavor = FLAVOR

    def before(self) -> None:
        self.safely("set tags", lambda: self.run.set_tags({"shipyard.autolog": FLAVOR}))
        params = _params(self.arg("params"))
        params["num_boost_round"] = self.arg("num_boost_round")
        if self.arg("early_stopping_rounds") is not None:
            params["early_stopping_rounds"] = self.arg("early_stopping_rounds")
        self.safely("log params", lambda: _log.log_params(self.run, params))
        callbacks = list(self.arg("callbacks") or [])
        self.bound.arguments["callbacks"] = [*callbacks, _EvalCallback(self)]

    def after(self, result: Any) -> None:
        def save(folder: Path) -> str:
            result.save_model(str(folder / "model.json"))
            return "model.json"

        _log_booster(self, result, None, save=save, model=result)


class SklearnFit(Hook):
    """``XGBClassifier.fit(X, y, eval_set=..., ...)`` and the other estimators of the API."""

    flavor = FLAVOR

    def before(self) -> None:
        est = self.bound.arguments["self"]
        # None means "XGBoost's default": log what was chosen, not forty Nones.
        params = {k: v for k, v in est.get_params().items() if v is not None}
        self.safely("set tags", lambda: _log.estimator_tags(self.run, FLAVOR, est))
        self.safely("log params", lambda: _log.log_params(self.run, params))

    def after(self, result: Any) -> None:
        from shipyard.sdk.autolog.sklearn import fit_data, training_metrics

        est = self.bound.arguments["self"]
        X, y, sw = fit_data(self)
        if getattr(est, "evals_result_", None):
            self.safely("log eval metrics", lambda: _log.log_history(self.run, est.evals_result()))
        if self.config.log_training_metrics and y is not None:
            self.safely(
                "log training metrics",
                lambda: _log.log_metrics(self.run, training_metrics(est, X, y, sw)),
            )

        def save(folder: Path) -> str:
            est.save_model(str(folder / "model.json"))  # the booster and the sklearn attributes
            return "model.json"

        classes = getattr(est, "classes_", None)
        _log_booster(
            self,
            est.get_booster(),
            X,
            save=save,
            model=est,
            predict=est.predict,
            extra={
                "sklearn_api": {
                    "class": _log.class_name(est),
                    "classes": None if classes is None else _log.jsonable(classes),
                }
            },
        )
