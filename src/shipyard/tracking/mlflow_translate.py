"""MLflow's tracking REST shapes to and from Shipyard's: pure functions, no HTTP, no queries.

``tracking.mlflow_compat`` (the routes) reads MLflow's JSON with ``Fields``, calls
``TrackingService`` with Shipyard's schemas, and writes MLflow's JSON with the ``*_out``
functions here. The choices that make MLflow's model fit Shipyard's:

- MLflow has no projects: every MLflow call works in one project (``Settings.mlflow_project``).
- MLflow's experiment ``"0"`` is the project's experiment named ``Default``, made on demand.
- A run's name is Shipyard's run name; MLflow's ``mlflow.runName`` tag reads and writes it. An
  experiment's description is MLflow's ``mlflow.note.content`` tag.
- A run's ``artifact_uri`` is ``mlflow-artifacts:/<experiment>/<run>/artifacts``, so the client
  sends its artifacts through the server's proxy (``/api/2.0/mlflow-artifacts/artifacts/...``),
  and the path after ``artifacts`` is the artifact's path in the Shipyard run.
- MLflow's search filters are parsed here and re-written in Shipyard's language
  (``tracking.search``); the few things Shipyard's language cannot say are refused with
  ``INVALID_PARAMETER_VALUE`` naming them.
- A dataset input keeps MLflow's name, digest, schema and context; its source keeps the URI
  when MLflow's source is ``{"uri": ...}`` (the JSON as given otherwise); its profile is dropped.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from shipyard.core.errors import InvalidArgument, ShipyardError
from shipyard.core.timeutil import dt_to_ms
from shipyard.tracking.schemas import (
    DatasetInput,
    ExperimentPublic,
    Lifecycle,
    MetricHistory,
    RunPublic,
    RunStatus,
)

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
RUN_NAME_TAG = "mlflow.runName"
PARENT_RUN_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
DATASET_CONTEXT_TAG = "mlflow.data.context"

# Shipyard's error code -> MLflow's error code and HTTP status. MLflow's client retries 429 and
# 5xx, so only what is worth retrying (an unavailable store) gets one of those.
_ERRORS: dict[str, tuple[str, int]] = {
    "INVALID_ARGUMENT": ("INVALID_PARAMETER_VALUE", 400),
    "UNAUTHENTICATED": ("UNAUTHENTICATED", 401),
    "PERMISSION_DENIED": ("PERMISSION_DENIED", 403),
    "NOT_FOUND": ("RESOURCE_DOES_NOT_EXIST", 404),
    "ALREADY_EXISTS": ("RESOURCE_ALREADY_EXISTS", 400),
    "CONFLICT": ("RESOURCE_CONFLICT", 409),
    "PAYLOAD_TOO_LARGE": ("RESOURCE_EXHAUSTED", 413),
    "UNAVAILABLE": ("TEMPORARILY_UNAVAILABLE", 503),
}


def error_out(exc: ShipyardError) -> tuple[int, dict[str, str]]:
    """The HTTP status and MLflow's error body (``{"error_code", "message"}``) for an error."""
    code, status = _ERRORS.get(exc.code, ("INTERNAL_ERROR", 500))
    return status, {"error_code": code, "message": exc.message}


# -- reading MLflow's request fields ----------------------------------------------------------

_VIEW_TYPES = {
    "ACTIVE_ONLY": Lifecycle.active,
    "DELETED_ONLY": Lifecycle.deleted,
    "ALL": Lifecycle.all,
    "1": Lifecycle.active,
    "2": Lifecycle.deleted,
    "3": Lifecycle.all,
}
# MLflow's RunStatus enum, by name and by number (protobuf JSON may carry either).
_STATUSES = {"1": "RUNNING", "2": "SCHEDULED", "3": "FINISHED", "4": "FAILED", "5": "KILLED"}


class Fields:
    """One MLflow request message (a JSON body, or a GET's query string) with typed getters that
    raise ``InvalidArgument`` naming the field, as MLflow's server does."""

    def __init__(self, data: object) -> None:
        if data is not None and not isinstance(data, Mapping):
            raise InvalidArgument.for_field("body", "expected a JSON object")
        self.data: Mapping[str, Any] = data or {}

    def _missing(self, name: str) -> NoReturn:
        raise InvalidArgument.for_field(name, f"missing value for required parameter '{name}'")

    def text(self, name: str, *, required: bool = False, alias: str | None = None) -> str | None:
        value = self.data.get(name)
        if value in (None, "") and alias is not None:
            value = self.data.get(alias)
        if value is None or value == "":
            if required:
                self._missing(name)
            return None
        if not isinstance(value, str):
            raise InvalidArgument.for_field(name, f"expected a string, got {value!r}")
        return value

    def req(self, name: str, alias: str | None = None) -> str:
        value = self.text(name, required=True, alias=alias)
        assert value is not None
        return value

    def integer(self, name: str, *, required: bool = False) -> int | None:
        value = self.data.get(name)
        if value is None or value == "":
            if required:
                self._missing(name)
            return None
        return to_int(value, name)

    def items(self, name: str) -> list[Any]:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidArgument.for_field(name, f"expected a list, got {value!r}")
        return value

    def key_values(self, name: str) -> list[tuple[str, str]]:
        """A repeated ``{key, value}`` message (tags, params) as pairs."""
        out = []
        for item in self.items(name):
            f = Fields(item)
            out.append((f.req("key"), f.text("value") or ""))
        return out

    def view_type(self, name: str) -> Lifecycle:
        value = self.data.get(name)
        if value is None or value == "":
            return Lifecycle.active
        found = _VIEW_TYPES.get(str(value).upper())
        if found is None:
            raise InvalidArgument.for_field(
                name, f"expected ACTIVE_ONLY, DELETED_ONLY or ALL, got {value!r}"
            )
        return found

    def status(self, name: str) -> RunStatus | None:
        value = self.data.get(name)
        if value is None or value == "":
            return None
        text = _STATUSES.get(str(value), str(value).upper())
        try:
            return RunStatus(text)
        except ValueError:
            raise InvalidArgument.for_field(
                name,
                f"expected one of {', '.join(s.value for s in RunStatus)}, got {value!r}"
                + (" (Shipyard has no SCHEDULED runs)" if text == "SCHEDULED" else ""),
            ) from None


def to_int(value: object, name: str) -> int:
    """An int64 field: protobuf JSON writes it as a number or as a string of digits."""
    if isinstance(value, bool):
        raise InvalidArgument.for_field(name, f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise InvalidArgument.for_field(name, f"expected an integer, got {value!r}")


def metric_in(value: object, name: str) -> float:
    """A double field: a number, or protobuf JSON's "NaN", "Infinity" and "-Infinity"."""
    if isinstance(value, bool):
        raise InvalidArgument.for_field(name, f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise InvalidArgument.for_field(name, f"expected a number, got {value!r}")


def metric_row(item: object, where: str) -> tuple[str, float, int, int]:
    """An MLflow ``Metric`` message as Shipyard's (key, value, step, timestamp)."""
    f = Fields(item)
    key = f.req("key")
    if "value" not in f.data:
        raise InvalidArgument.for_field(f"{where}.value", "missing value for required parameter")
    value = metric_in(f.data["value"], f"{where}.value")
    timestamp = f.integer("timestamp", required=True)
    step = f.integer("step") or 0
    assert timestamp is not None
    return key, value, step, timestamp


# -- writing MLflow's responses ---------------------------------------------------------------


def number_out(value: float | None) -> float | str:
    """A double as protobuf JSON writes it. Shipyard keeps NaN as None and an infinity as the
    largest finite float (JSON has neither); MLflow's client expects them back by name."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value) or abs(value) == sys.float_info.max:
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _pairs(d: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in d.items()]


def artifact_location(experiment_id: str) -> str:
    return f"mlflow-artifacts:/{experiment_id}"


def artifact_uri(experiment_id: str, run_id: str) -> str:
    return f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"


def experiment_out(exp: ExperimentPublic, experiment_id: str) -> dict[str, Any]:
    """An ``mlflow.Experiment``; ``experiment_id`` is the id MLflow sees ("0" for Default)."""
    tags = dict(exp.tags)
    if exp.description:
        tags[NOTE_TAG] = exp.description
    return {
        "experiment_id": experiment_id,
        "name": exp.name,
        "artifact_location": artifact_location(experiment_id),
        "lifecycle_stage": "deleted" if exp.lifecycle == Lifecycle.deleted else "active",
        "creation_time": dt_to_ms(exp.created_at),
        "last_update_time": dt_to_ms(exp.updated_at),
        "tags": _pairs(tags),
    }


def run_info_out(run: RunPublic, experiment_id: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": run.id,
        "run_uuid": run.id,
        "run_name": run.name,
        "experiment_id": experiment_id,
        "user_id": run.created_by or "",
        "status": run.status.value,
        "start_time": dt_to_ms(run.start_time),
        "artifact_uri": artifact_uri(experiment_id, run.id),
        "lifecycle_stage": "deleted" if run.lifecycle == Lifecycle.deleted else "active",
    }
    if run.end_time is not None:
        info["end_time"] = dt_to_ms(run.end_time)
    return info


def run_out(run: RunPublic, experiment_id: str) -> dict[str, Any]:
    """An ``mlflow.Run``: info, data (latest metrics, params, tags) and dataset inputs."""
    tags = dict(run.tags)
    tags[RUN_NAME_TAG] = run.name
    if run.parent_run_id and PARENT_RUN_TAG not in tags:
        tags[PARENT_RUN_TAG] = run.parent_run_id
    metrics = [
        {"key": k, "value": number_out(m.value), "timestamp": m.timestamp, "step": m.step}
        for k, m in run.metrics.items()
    ]
    return {
        "info": run_info_out(run, experiment_id),
        "data": {"metrics": metrics, "params": _pairs(run.params), "tags": _pairs(tags)},
        "inputs": {"dataset_inputs": [dataset_out(d) for d in run.inputs]},
    }


def history_out(h: MetricHistory) -> list[dict[str, Any]]:
    return [
        {"key": h.key, "value": number_out(v), "timestamp": t, "step": s, "run_id": h.run_id}
        for s, t, v in zip(h.steps, h.timestamps, h.values, strict=True)
    ]


# -- dataset inputs ---------------------------------------------------------------------------


def _source_type_of(uri: str) -> str:
    """The MLflow source type that MLflow itself gives a dataset at ``uri``."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        return "http"
    if scheme in ("", "file") or uri.startswith("file:"):
        return "local"
    return scheme


def dataset_in(item: object, where: str) -> DatasetInput:
    """An ``mlflow.DatasetInput`` (dataset and input tags) as Shipyard's ``DatasetInput``."""
    f = Fields(item)
    d = Fields(f.data.get("dataset"))
    context = ""
    for key, value in f.key_values("tags"):
        if key == DATASET_CONTEXT_TAG:
            context = value
    source = d.text("source") or ""
    source_type = d.text("source_type") or ""
    try:
        parsed = json.loads(source) if source else None
    except ValueError:
        parsed = None
    if (
        isinstance(parsed, dict)
        and list(parsed) == ["uri"]
        and isinstance(parsed["uri"], str)
        and _source_type_of(parsed["uri"]) == source_type
    ):
        source = parsed["uri"]  # Shipyard shows the URI; the JSON is rebuilt on the way out
    schema: Any = None
    raw_schema = d.text("schema")
    if raw_schema:
        try:
            schema = json.loads(raw_schema)
        except ValueError:
            schema = None
        if not isinstance(schema, dict | list):
            schema = {"text": raw_schema}
    try:
        return DatasetInput(
            name=d.req("name"),
            digest=d.req("digest"),
            source=source,
            schema=schema,
            context=context,
        )
    except ValueError as exc:  # pydantic's ValidationError
        from shipyard.core.schemas import invalid_from_validation

        err = invalid_from_validation(exc)
        raise InvalidArgument(f"{where}.dataset: {err.message}", err.details) from None


def dataset_out(d: DatasetInput) -> dict[str, Any]:
    try:
        parsed = json.loads(d.source) if d.source.startswith("{") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        source = d.source
        uri = parsed.get("uri")
        if isinstance(uri, str):
            source_type = _source_type_of(uri)
        else:
            source_type = "code" if "tags" in parsed else "unknown"
    else:
        source = json.dumps({"uri": d.source})
        source_type = _source_type_of(d.source)
    dataset: dict[str, Any] = {
        "name": d.name,
        "digest": d.digest,
        "source_type": source_type,
        "source": source,
    }
    if d.schema_ is not None:
        text = d.schema_.get("text") if isinstance(d.schema_, dict) else None
        dataset["schema"] = (
            text if isinstance(text, str) and len(d.schema_) == 1 else json.dumps(d.schema_)
        )
    tags = [{"key": DATASET_CONTEXT_TAG, "value": d.context}] if d.context else []
    return {"tags": tags, "dataset": dataset}


# -- artifact proxy paths ---------------------------------------------------------------------


def split_artifact_path(path: str | None) -> tuple[str, str | None] | None:
    """``<experiment>/<run>/artifacts[/<path>]`` as (run id, path in the run or None).

    None when ``path`` is not inside a run's artifacts (the folders above them list as empty).
    The run id alone names the run (the experiment segment is informational), and the routes
    look it up in the MLflow project only; the path in the run is checked by the tracking
    service (``clean_relpath``), never here.
    """
    parts = [p for p in (path or "").split("/") if p]
    if len(parts) < 3 or parts[2] != "artifacts":
        return None
    rest = "/".join(parts[3:])
    return parts[1], rest or None
