"""``sy.autolog()``: record training with scikit-learn, LightGBM and XGBoost without other code.

    import shipyard as sy
    sy.autolog()
    LogisticRegression().fit(X, y)   # a run with params, training metrics and the model

Each fit logs into the active run, or starts a run and ends it when fit returns (FAILED, and
the user's exception re-raised untouched, if fit raised). What each library records is said at
the top of its module (``sklearn.py``, ``lightgbm.py``, ``xgboost.py``); how patching stays safe
is said in ``_patch.py``. ``sy.autolog(disable=True)`` puts the original functions back.

The libraries are imported by ``autolog()``, never by ``import shipyard``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

from shipyard.core.errors import InvalidArgument
from shipyard.sdk.autolog._patch import AutologWarning, Config, enable, unpatch_all

__all__ = ["LIBRARIES", "AutologWarning", "autolog"]

# Our flavor module -> the module it patches, which must be importable.
LIBRARIES = {"sklearn": "sklearn", "lightgbm": "lightgbm", "xgboost": "xgboost"}


def autolog(
    disable: bool = False,
    log_models: bool = True,
    log_input_examples: bool = True,
    *,
    log_training_metrics: bool = True,
    max_tuning_runs: int | None = None,
    libraries: Iterable[str] | None = None,
    silent: bool = False,
) -> None:
    """Turn on (or with ``disable=True`` off) autologging.

    - ``log_models``: log the fitted model as ``model/`` (skops, LightGBM text, XGBoost JSON).
    - ``log_input_examples``: keep the first 5 training rows beside the model.
    - ``log_training_metrics``: scikit-learn metrics on the training data (``training_*``).
    - ``max_tuning_runs``: child runs for a hyper-parameter search, the best-ranked first
      (None: one per candidate).
    - ``libraries``: among ``sklearn``, ``lightgbm``, ``xgboost`` (None: those installed).
    - ``silent``: no ``AutologWarning`` when logging fails (it is still logged at DEBUG).

    Calling it again replaces the previous settings.
    """
    if max_tuning_runs is not None and (
        not isinstance(max_tuning_runs, int)
        or isinstance(max_tuning_runs, bool)
        or max_tuning_runs < 0
    ):
        raise InvalidArgument.for_field(
            "max_tuning_runs", f"expected a non-negative integer or None, got {max_tuning_runs!r}"
        )
    if libraries is None:
        chosen = [name for name, mod in LIBRARIES.items() if _installed(mod)]
    else:
        chosen = [libraries] if isinstance(libraries, str) else list(libraries)
        for name in chosen:
            if name not in LIBRARIES:
                raise InvalidArgument.for_field(
                    "libraries", f"expected some of {sorted(LIBRARIES)}, got {name!r}"
                )
            if not _installed(LIBRARIES[name]):
                raise InvalidArgument.for_field("libraries", f"{name} is not installed")

    unpatch_all()
    if disable:
        return
    try:
        for name in chosen:
            importlib.import_module(f"shipyard.sdk.autolog.{name}").install()
    except BaseException:
        unpatch_all()  # all or nothing: never leave some libraries patched
        raise
    enable(
        Config(
            log_models=bool(log_models),
            log_input_examples=bool(log_input_examples),
            log_training_metrics=bool(log_training_metrics),
            max_tuning_runs=max_tuning_runs,
            silent=bool(silent),
        )
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
