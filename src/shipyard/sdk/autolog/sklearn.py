"""Autologging for scikit-learn: ``fit`` (and ``fit_transform``, ``fit_predict``) of every
estimator, pipelines and hyper-parameter searches.

A fit records the estimator's ``get_params(deep=True)``, training metrics computed on the data
it was fitted on (``training_*``), and the fitted model through ``skops.io``. A search
(``GridSearchCV``, ``RandomizedSearchCV``) records one child run per candidate with its params
and cross-validation scores, and ``best_*`` params, ``best_cv_score`` and the best estimator as
the model on the parent. The fits a meta-estimator makes inside its own fit log nothing.
"""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path
from typing import Any

from shipyard.sdk import fluent
from shipyard.sdk.autolog import _log
from shipyard.sdk.autolog._patch import Hook, patch

FLAVOR = "sklearn"
METHODS = ("fit", "fit_transform", "fit_predict")


@functools.cache
def _targets() -> tuple[tuple[type, str], ...]:
    """The classes that define each fitting method of every scikit-learn estimator (often a
    private base, as ``BaseForest.fit``), each once. Subclasses, a user's included, inherit the
    wrapper. Descriptors (``available_if``) are left alone: replacing one would make a method
    appear on estimators that do not have it."""
    from sklearn.utils import all_estimators

    seen: set[tuple[type, str]] = set()
    out: list[tuple[type, str]] = []
    for _, cls in all_estimators():
        for name in METHODS:
            owner = next((k for k in cls.__mro__ if name in vars(k)), None)
            if (
                owner is None
                or not owner.__module__.startswith("sklearn.")
                or not inspect.isfunction(vars(owner)[name])
                or (owner, name) in seen
            ):
                continue
            seen.add((owner, name))
            out.append((owner, name))
    return tuple(out)


def install() -> None:
    for owner, name in _targets():
        patch(owner, name, SklearnFit)


# -- training metrics ----------------------------------------------------------------------------


def training_metrics(estimator: Any, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float]:
    """Metrics of a fitted classifier or regressor on (X, y), named ``training_*``. A metric
    that does not apply (no ``predict_proba``, multi-output targets) is left out."""
    from sklearn import metrics as m
    from sklearn.base import is_classifier, is_regressor

    out: dict[str, float] = {}
    sw = sample_weight

    def add(name: str, fn: Any) -> None:
        try:
            v = _log.number(fn())
        except Exception:  # this metric does not apply to this estimator or target
            return
        if v is not None:
            out[f"training_{name}"] = v

    if is_classifier(estimator):
        y_pred = estimator.predict(X)
        add("score", lambda: estimator.score(X, y))
        add("accuracy", lambda: m.accuracy_score(y, y_pred, sample_weight=sw))
        for name, fn in (
            ("precision", m.precision_score),
            ("recall", m.recall_score),
            ("f1", m.f1_score),
        ):
            add(
                name,
                functools.partial(
                    fn, y, y_pred, average="weighted", sample_weight=sw, zero_division=0
                ),
            )
        if hasattr(estimator, "predict_proba"):
            proba = None
            try:
                proba = estimator.predict_proba(X)
            except Exception:
                proba = None
            if proba is not None:
                classes = getattr(estimator, "classes_", None)
                add("log_loss", lambda: m.log_loss(y, proba, labels=classes, sample_weight=sw))
                if getattr(proba, "ndim", 0) == 2 and proba.shape[1] == 2:
                    add("roc_auc", lambda: m.roc_auc_score(y, proba[:, 1], sample_weight=sw))
                else:
                    add(
                        "roc_auc",
                        lambda: m.roc_auc_score(
                            y,
                            proba,
                            multi_class="ovr",
                            average="weighted",
                            labels=classes,
                            sample_weight=sw,
                        ),
                    )
    elif is_regressor(estimator):
        y_pred = estimator.predict(X)
        add("score", lambda: estimator.score(X, y))
        mse = _log.number(m.mean_squared_error(y, y_pred, sample_weight=sw))
        if mse is not None:
            out["training_mse"] = mse
            out["training_rmse"] = math.sqrt(mse)
        add("mae", lambda: m.mean_absolute_error(y, y_pred, sample_weight=sw))
        add("r2", lambda: m.r2_score(y, y_pred, sample_weight=sw))
    return out


def fit_data(hook: Hook) -> tuple[Any, Any, Any]:
    """(X, y, sample_weight) of a ``fit(self, X, y=None, ...)`` call."""
    names = [n for n in hook.bound.signature.parameters if n != "self"]
    args = hook.bound.arguments
    X = args.get("X", args.get(names[0]) if names else None)
    y = args.get("y", args.get("Y"))
    sw = args.get("sample_weight")
    if sw is None:
        sw = hook.kwarg("sample_weight")
    return X, y, sw


def save_skops(model: Any) -> Any:
    def save(folder: Path) -> str:
        import skops.io

        skops.io.dump(model, folder / "model.skops")
        return "model.skops"

    return save


# -- the hook ---------------------------------------------------------------------------------


class SklearnFit(Hook):
    flavor = FLAVOR

    @property
    def estimator(self) -> Any:
        return self.bound.arguments["self"]

    def before(self) -> None:
        est = self.estimator
        self.safely("set tags", lambda: _log.estimator_tags(self.run, FLAVOR, est))
        self.safely("log params", lambda: _log.log_params(self.run, est.get_params(deep=True)))

    def after(self, result: Any) -> None:
        from sklearn.model_selection._search import BaseSearchCV

        est = self.estimator
        X, y, sw = fit_data(self)
        search = isinstance(est, BaseSearchCV)
        if search:
            self.safely("log the search's best candidate", lambda: self._log_best(est))
            self.safely("log a child run per candidate", lambda: self._log_candidates(est))
        fitted = est
        if search:
            fitted = getattr(est, "best_estimator_", None)
        if (
            self.config.log_training_metrics
            and y is not None
            and (not search or fitted is not None)
        ):
            self.safely(
                "log training metrics",
                lambda: _log.log_metrics(self.run, training_metrics(est, X, y, sw)),
            )
        if self.config.log_models and fitted is not None:
            self.safely("log the model", lambda: self._log_model(fitted, X))

    def _log_model(self, model: Any, X: Any) -> None:
        _log.log_model(
            self.run,
            flavor=FLAVOR,
            save=save_skops(model),
            model=model,
            data=X,
            log_input_example=self.config.log_input_examples,
            dists=("scikit-learn", "skops", "numpy"),
            predict=getattr(model, "predict", None),
        )

    def _log_best(self, search: Any) -> None:
        best = getattr(search, "best_params_", None)
        if best:
            _log.log_params(self.run, {f"best_{k}": v for k, v in best.items()})
        if hasattr(search, "best_score_"):
            _log.log_metrics(self.run, {"best_cv_score": search.best_score_})

    def _log_candidates(self, search: Any) -> None:
        results = search.cv_results_
        n = len(results["params"])
        order = list(range(n))
        limit = self.config.max_tuning_runs
        if limit is not None:
            refit = search.refit if isinstance(search.refit, str) else "score"
            ranks = results.get(f"rank_test_{refit}")
            if ranks is not None:
                order.sort(key=lambda i: (int(ranks[i]), i))
            order = sorted(order[:limit])
        keys = [k for k in results if k.startswith(("mean_", "std_", "rank_"))]
        parent = self.run
        for i in order:
            child = fluent.start_run(nested=True, name=f"{parent.name}-{i}"[:256])
            try:
                params = {
                    str(k): _log.param_value(v)
                    for k, v in results["params"][i].items()
                    if 0 < len(str(k)) <= _log.MAX_KEY
                }
                child.client.backend.log_batch(
                    child.client.project,
                    child.id,
                    metrics=_log.metric_rows({k: results[k][i] for k in keys}),
                    params=list(params.items()),
                    tags=[("shipyard.autolog", FLAVOR), ("candidate_index", str(i))],
                )
            finally:
                child.end()
