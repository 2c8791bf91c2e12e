"""API types of the tracking domain: the schema ladder per entity (Create / Update / Public)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from shipyard.core.schemas import Key, Model, Name, Page

ParamValue = Annotated[str, Field(max_length=6000)]
TagValue = Annotated[str, Field(max_length=8000)]


# One logged metric point as the service and the SDK pass it around:
# key, value (None for NaN), step, timestamp in epoch milliseconds.
MetricRow = tuple[str, float | None, int, int]


class RunStatus(StrEnum):
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class Lifecycle(StrEnum):
    active = "active"
    deleted = "deleted"
    all = "all"


# -- experiments ------------------------------------------------------------------------------


class ExperimentCreate(Model):
    name: Name
    description: str = Field(default="", max_length=20_000)
    tags: dict[Key, TagValue] = Field(default_factory=dict)


class ExperimentUpdate(Model):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=20_000)
    tags: dict[Key, TagValue] | None = None


class ExperimentPublic(Model):
    id: str
    project: str
    name: str
    description: str
    lifecycle: Lifecycle
    tags: dict[str, str]
    deleted_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


ExperimentsPublic = Page[ExperimentPublic]


# -- runs -------------------------------------------------------------------------------------


class RunCreate(Model):
    experiment_id: str = Field(min_length=1, max_length=16)
    name: Name | None = None
    parent_run_id: str | None = Field(default=None, max_length=16)
    tags: dict[Key, TagValue] = Field(default_factory=dict)
    start_time: datetime | None = None


class RunUpdate(Model):
    status: RunStatus | None = None
    end_time: datetime | None = None
    name: Name | None = None


class MetricPoint(Model):
    """One logged value. ``timestamp`` is milliseconds since the epoch (UTC); NaN travels as null."""

    key: Key
    value: float | None
    # Bounded to the 64-bit columns that store them: a bigger number is a 400, not a 500.
    step: int = Field(default=0, ge=-(2**63), lt=2**63)
    timestamp: int = Field(ge=0, lt=2**63)


class ParamIn(Model):
    key: Key
    value: ParamValue


class TagIn(Model):
    key: Key
    value: TagValue


class LogBatch(Model):
    metrics: list[MetricPoint] = Field(default_factory=list)
    params: list[ParamIn] = Field(default_factory=list)
    tags: list[TagIn] = Field(default_factory=list)
    # A client-chosen id: a retried batch with the same id is applied once.
    batch_id: str | None = Field(default=None, min_length=1, max_length=64)


class MetricColumnsIn(Model):
    """Metric points column by column, the fast way to log many (``POST .../runs/{id}/metrics``).

    Point ``i`` is ``keys[i]``, ``values[i]``, ``steps[i]``, ``timestamps[i]``; the four lists
    have one length. ``timestamps`` are milliseconds since the epoch (UTC); NaN travels as null.
    Documents the body: the server parses it without building a model per point.
    """

    keys: list[Key]
    values: list[float | None]
    steps: list[int]
    timestamps: list[int]
    # A client-chosen id: a retried batch with the same id is applied once.
    batch_id: str | None = Field(default=None, min_length=1, max_length=64)


class DatasetInput(Model):
    name: Name
    digest: str = Field(min_length=1, max_length=64)
    source: str = Field(default="", max_length=4000)
    schema_: dict[str, Any] | list[Any] | None = Field(default=None, alias="schema")
    context: str = Field(default="", max_length=64)

    model_config = Model.model_config | {"populate_by_name": True}


class LatestMetric(Model):
    value: float | None
    step: int
    timestamp: int


class RunPublic(Model):
    id: str
    project: str
    experiment_id: str
    parent_run_id: str | None
    name: str
    status: RunStatus
    start_time: datetime
    end_time: datetime | None
    lifecycle: Lifecycle
    created_by: str | None = None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, LatestMetric]
    inputs: list[DatasetInput] = Field(default_factory=list)
    deleted_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


RunsPublic = Page[RunPublic]


class SearchRuns(Model):
    experiment_ids: list[str] | None = None
    filter: str | None = Field(default=None, max_length=10_000)
    order_by: list[str] | None = None
    lifecycle: Lifecycle = Lifecycle.active
    page_size: int = Field(default=100, ge=1, le=10_000)
    page_token: str | None = None


class MetricHistory(Model):
    run_id: str
    key: str
    steps: list[int]
    timestamps: list[int]
    values: list[float | None]


class RunComparison(Model):
    """Several runs side by side: params (with the keys whose values differ) and histories."""

    runs: list[RunPublic]
    param_keys: list[str]
    differing_params: list[str]
    metric_keys: list[str]
    histories: dict[str, list[MetricHistory]]


# -- artifacts --------------------------------------------------------------------------------


class ArtifactPublic(Model):
    path: str
    is_dir: bool
    size: int | None = None
    digest: str | None = None


class ArtifactsPublic(Model):
    root: str
    files: list[ArtifactPublic]


class PurgeReport(Model):
    runs_purged: int
    experiments_purged: int
    blobs_deleted: int
    bytes_freed: int
