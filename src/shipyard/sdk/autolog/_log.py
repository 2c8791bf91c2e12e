"""What every flavor logs the same way: params as the store takes them, metrics, the model folder.

The model folder (``model/`` in the run's artifacts) follows the model format of DESIGN.md:

    model/
      model.skops | model.txt | model.json   the model, in a format that holds data, not code
      input_example.json                      the first rows of the training input (optional)
      manifest.json                           flavor, file, library versions, signature, sha256

``input_example.json`` is ``{"columns": [...] or null, "data": [[...], ...]}``: the column names
of a DataFrame (null for an array) and up to five rows, with NaN and infinities as null.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard.sdk.fluent import ActiveRun

# The store's limits (tracking/service.py): a longer key is skipped, a longer value truncated.
MAX_KEY = 250
MAX_PARAM = 6000
EXAMPLE_ROWS = 5
MODEL_DIR = "model"
MANIFEST_VERSION = 1


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_PARAM else text[: MAX_PARAM - 3] + "..."


def log_params(run: ActiveRun, params: Mapping[str, Any]) -> None:
    clean = {str(k): param_value(v) for k, v in params.items() if 0 < len(str(k)) <= MAX_KEY}
    if clean:
        run.log_params(clean)


def number(value: Any) -> float | None:
    """A metric value as a float (NaN and infinities as None); None when not a number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def log_metrics(run: ActiveRun, metrics: Mapping[str, Any], step: int = 0) -> None:
    clean = {k: v for k, v in ((k, number(v)) for k, v in metrics.items()) if v is not None}
    if clean:
        run.log_metrics(clean, step=step)


def metric_rows(metrics: Mapping[str, Any], step: int = 0) -> list[tuple[str, float, int, int]]:
    """Rows for ``backend.log_batch``: (key, value, step, timestamp in ms)."""
    ts = time.time_ns() // 1_000_000
    return [
        (k, v, step, ts) for k, v in ((k, number(v)) for k, v in metrics.items()) if v is not None
    ]


def log_history(run: ActiveRun, history: Mapping[str, Mapping[str, Iterable[Any]]]) -> None:
    """Log ``{data_name: {metric: [value per iteration]}}`` as ``data_name-metric`` by step."""
    by_step: dict[int, dict[str, Any]] = {}
    for data_name, metrics in history.items():
        for metric, values in metrics.items():
            for step, v in enumerate(values):
                # xgboost.cv records (mean, std) pairs; a history of those logs the mean
                by_step.setdefault(step, {})[f"{data_name}-{metric}"] = (
                    v[0] if isinstance(v, tuple | list) else v
                )
    for step in sorted(by_step):
        log_metrics(run, by_step[step], step=step)


def class_name(obj: Any) -> str:
    t = obj if isinstance(obj, type) else type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def estimator_tags(run: ActiveRun, flavor: str, estimator: Any) -> None:
    run.set_tags(
        {
            "shipyard.autolog": flavor,
            "estimator_name": type(estimator).__name__,
            "estimator_class": class_name(estimator),
        }
    )


# -- input examples and signatures --------------------------------------------------------------


def head(data: Any, n: int = EXAMPLE_ROWS) -> Any:
    """The first ``n`` rows of a DataFrame, an array, a sparse matrix or a list; None if unknown."""
    if data is None or isinstance(data, str | bytes | Path):
        return None
    if hasattr(data, "iloc"):
        return data.iloc[:n]
    if hasattr(data, "tocsr"):  # scipy.sparse
        return data.tocsr()[:n].toarray()
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        return data[:n]
    if isinstance(data, list | tuple):
        return list(data[:n])
    return None


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def input_example(rows: Any) -> dict[str, Any] | None:
    if rows is None:
        return None
    if hasattr(rows, "columns") and hasattr(rows, "to_numpy"):
        return {
            "columns": [str(c) for c in rows.columns],
            "data": jsonable(rows.to_numpy(dtype=object).tolist()),
        }
    return {"columns": None, "data": jsonable(rows)}


def _describe(data: Any) -> Any:
    """The schema of a DataFrame (column names and types) or an array (dtype and shape)."""
    if data is None:
        return None
    if hasattr(data, "columns") and hasattr(data, "dtypes"):
        return [
            {"name": str(c), "type": str(t)} for c, t in zip(data.columns, data.dtypes, strict=True)
        ]
    if hasattr(data, "name") and hasattr(data, "dtype") and hasattr(data, "iloc"):  # a Series
        return [{"name": str(data.name), "type": str(data.dtype)}]
    shape = getattr(data, "shape", None)
    dtype = getattr(data, "dtype", None)
    if shape is not None and dtype is not None:
        return {"type": "tensor", "dtype": str(dtype), "shape": [-1, *list(shape)[1:]]}
    return None


def signature(rows: Any, predict: Callable[[Any], Any] | None = None) -> dict[str, Any] | None:
    """Inputs described from the example rows; outputs from predicting on them, when possible."""
    inputs = _describe(rows)
    if inputs is None:
        return None
    outputs = None
    if predict is not None:
        try:
            outputs = _describe(predict(rows))
        except Exception:  # a model that cannot predict on its own example: no output schema
            outputs = None
    return {"inputs": inputs, "outputs": outputs}


# -- the model folder ---------------------------------------------------------------------------


def library_versions(*dists: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in dists:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log_model(
    run: ActiveRun,
    *,
    flavor: str,
    save: Callable[[Path], str],
    model: Any,
    data: Any,
    log_input_example: bool,
    dists: Iterable[str],
    predict: Callable[[Any], Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the model folder (``save(folder)`` writes the model and returns its file name) and
    log it as ``model/``. ``data`` is the training input, of which the first rows are kept."""
    rows = head(data)
    with tempfile.TemporaryDirectory(prefix="shipyard-autolog-") as tmp:
        folder = Path(tmp, MODEL_DIR)
        folder.mkdir()
        model_file = save(folder)
        example_file = None
        if log_input_example:
            example = input_example(rows)
            if example is not None:
                example_file = "input_example.json"
                (folder / example_file).write_text(json.dumps(example))
        files = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "flavor": flavor,
            "model_file": model_file,
            "model_class": class_name(model),
            "input_example": example_file,
            "signature": signature(rows, predict),
            "library_versions": library_versions(*dists),
            "files": files,
            "created_at": datetime.now(UTC).isoformat(),
            "created_by": "shipyard.autolog",
            **(extra or {}),
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        run.log_artifact(folder, MODEL_DIR)


def log_json(run: ActiveRun, data: Any, artifact_file: str) -> None:
    run.log_text(json.dumps(jsonable(data), indent=2), artifact_file)
