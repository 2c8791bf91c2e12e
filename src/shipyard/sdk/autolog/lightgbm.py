"""Autologging for LightGBM: ``lightgbm.train`` and the scikit-learn API (``LGBMClassifier``,
``LGBMRegressor``, ``LGBMRanker``).

Records the params, every eval metric at every iteration as ``<data name>-<metric>`` with the
iteration as its step (``valid_0-binary_logloss``, ``training-l2``), ``best_iteration`` (with
early stopping) and ``stopped_iteration``, ``feature_importance.json`` (split and gain per
feature), and the booster as LightGBM's text model in ``model/model.txt``. ``lightgbm.train``
logs each iteration as it ends, through a callback added to the user's; the scikit-learn API
logs its ``evals_result_`` once fit returns (plus ``training_*`` metrics on the training data).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightgbm
import lightgbm.sklearn

from shipyard.sdk.autolog import _log
from shipyard.sdk.autolog._patch import Hook, patch, warn

FLAVOR = "lightgbm"
DISTS = ("lightgbm", "numpy")


def install() -> None:
    patch(lightgbm, "train", Train)
    for cls in (
        lightgbm.sklearn.LGBMModel,
        lightgbm.sklearn.LGBMClassifier,
        lightgbm.sklearn.LGBMRegressor,
        lightgbm.sklearn.LGBMRanker,
    ):
        if inspect.isfunction(vars(cls).get("fit")):
            patch(cls, "fit", SklearnFit)


def _log_booster(hook: Hook, booster: lightgbm.Booster, data: Any, **model_kw: Any) -> None:
    run = hook.run

    def iterations() -> None:
        metrics = {"stopped_iteration": booster.current_iteration()}
        if booster.best_iteration > 0:  # set by early stopping; 0 means "not used"
            metrics["best_iteration"] = booster.best_iteration
        _log.log_metrics(run, metrics)

    def importance() -> None:
        names = booster.feature_name()
        _log.log_json(
            run,
            {
                kind: dict(
                    zip(names, booster.feature_importance(importance_type=kind), strict=True)
                )
                for kind in ("split", "gain")
            },
            "feature_importance.json",
        )

    def save(folder: Path) -> str:
        booster.save_model(str(folder / "model.txt"))
        return "model.txt"

    hook.safely("log the best iteration", iterations)
    hook.safely("log feature importance", importance)
    if hook.config.log_models:
        hook.safely(
            "log the model",
            lambda: _log.log_model(
                run,
                flavor=FLAVOR,
                save=save,
                data=data,
                log_input_example=hook.config.log_input_examples,
                dists=DISTS,
                **model_kw,
            ),
        )


class _EvalCallback:
    """Logs each iteration's eval results. Runs before early stopping (order 30), which raises
    to stop, so the last iteration is logged too."""

    order = 15
    before_iteration = False

    def __init__(self, hook: Hook) -> None:
        self.hook = hook
        self.failed = False

    def __call__(self, env: Any) -> None:
        if self.failed:
            return
        try:
            metrics = {f"{r[0]}-{r[1]}": r[2] for r in env.evaluation_result_list or ()}
            _log.log_metrics(self.hook.run, metrics, step=int(env.iteration))
        except Exception as exc:
            self.failed = True  # one warning, not one per iteration
            warn(f"could not log eval metrics to run {self.hook.run.id}", exc)


class Train(Hook):
    """``lightgbm.train(params, train_set, num_boost_round, valid_sets, ..., callbacks)``."""

    flavor = FLAVOR

    def before(self) -> None:
        self.data = None
        self.safely("set tags", lambda: self.run.set_tags({"shipyard.autolog": FLAVOR}))
        params = dict(self.arg("params") or {})
        params["num_boost_round"] = self.arg("num_boost_round")
        self.safely("log params", lambda: _log.log_params(self.run, params))
        # Keep the first rows now: once the Dataset is built, LightGBM frees its raw data.
        train_set = self.arg("train_set")
        self.data = _log.head(getattr(train_set, "data", None))
        callbacks = list(self.arg("callbacks") or [])
        self.bound.arguments["callbacks"] = [*callbacks, _EvalCallback(self)]

    def after(self, result: Any) -> None:
        _log_booster(self, result, self.data, model=result)


class SklearnFit(Hook):
    """``LGBMClassifier.fit(X, y, eval_set=..., ...)`` and the other estimators of the API."""

    flavor = FLAVOR

    def before(self) -> None:
        est = self.bound.arguments["self"]
        self.safely("set tags", lambda: _log.estimator_tags(self.run, FLAVOR, est))
        self.safely("log params", lambda: _log.log_params(self.run, est.get_params()))

    def after(self, result: Any) -> None:
        from shipyard.sdk.autolog.sklearn import fit_data, training_metrics

        est = self.bound.arguments["self"]
        X, y, sw = fit_data(self)
        self.safely("log eval metrics", lambda: _log.log_history(self.run, est.evals_result_))
        if self.config.log_training_metrics and y is not None:
            self.safely(
                "log training metrics",
                lambda: _log.log_metrics(self.run, training_metrics(est, X, y, sw)),
            )
        classes = getattr(est, "classes_", None)
        _log_booster(
            self,
            est.booster_,
            X,
            model=est,
            predict=est.predict,
            extra={
                "sklearn_api": {
                    "class": _log.class_name(est),
                    "classes": None if classes is None else _log.jsonable(classes),
                }
            },
        )
