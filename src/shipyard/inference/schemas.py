"""API types of the inference domain: batch transform jobs and asynchronous inference."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from shipyard.core.schemas import Model, Page

ModelRef = str  # "models:/churn/3", "models:/churn@champion", "churn@champion", "runs:/<id>/model"
IdempotencyKey = str


class BatchJobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def final(self) -> bool:
        return self in (BatchJobStatus.STOPPED, BatchJobStatus.SUCCEEDED, BatchJobStatus.FAILED)


class ShardStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class DataFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


# -- batch jobs -------------------------------------------------------------------------------


class BatchJobCreate(Model):
    model: ModelRef = Field(min_length=1, max_length=1024)
    input: str = Field(min_length=1, max_length=4096, description="A CSV or Parquet file.")
    output: str = Field(min_length=1, max_length=4096, description="A folder for the results.")
    input_format: DataFormat | None = Field(
        default=None, description="Default: from the input's extension."
    )
    format: DataFormat = Field(default=DataFormat.parquet, description="Output file format.")
    shards: int | None = Field(
        default=None, ge=1, le=100_000, description="Default: one per executor slot."
    )
    join_columns: list[str] | None = Field(
        default=None, max_length=1000, description="Input columns copied beside predictions."
    )
    join_all: bool = False
    parallelism: int | None = Field(
        default=None, ge=1, le=1024, description="Shards run at once (default: every slot)."
    )
    retries: int = Field(default=0, ge=0, le=10, description="Retries of a failed shard.")
    overwrite: bool = Field(
        default=False, description="Replace earlier results in a non-empty output folder."
    )
    trust_code: bool = Field(default=False, description="Load a python_function (pickled) model.")
    idempotency_key: IdempotencyKey | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one_join(self) -> BatchJobCreate:
        if self.join_all and self.join_columns:
            raise ValueError("give join_columns or join_all, not both")
        return self


class BatchProgress(Model):
    shards_total: int
    shards_done: int
    shards_running: int
    shards_failed: int
    rows_total: int
    rows_done: int
    # Rows per second over the job's current run (since it was last started or resumed).
    rows_per_s: float | None = None
    fraction: float


class BatchShardPublic(Model):
    index: int
    status: ShardStatus
    start_row: int
    stop_row: int
    attempts: int
    rows: int | None = None
    output_file: str | None = None
    output_bytes: int | None = None
    error: str | None = None
    log_path: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class BatchJobPublic(Model):
    id: str
    project: str
    status: BatchJobStatus
    model: str
    model_name: str | None = None
    model_version: str | None = None
    input: str
    input_format: DataFormat
    output: str
    format: DataFormat
    join_columns: list[str] | None = None
    join_all: bool
    parallelism: int | None = None
    retries: int
    progress: BatchProgress
    error: str | None = None
    manifest: str | None = Field(default=None, description="The manifest file, once succeeded.")
    created_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    # Only in a single job's answer, not in lists.
    shards: list[BatchShardPublic] | None = None


BatchJobsPublic = Page[BatchJobPublic]


# -- asynchronous inference -------------------------------------------------------------------


class AsyncInferenceStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def final(self) -> bool:
        return self in (AsyncInferenceStatus.SUCCEEDED, AsyncInferenceStatus.FAILED)


class AsyncInferenceCreate(Model):
    model: ModelRef = Field(min_length=1, max_length=1024)
    payload: Any = Field(
        description="Any request shape: dataframe_split, dataframe_records, instances, inputs, "
        "or CSV text."
    )
    idempotency_key: IdempotencyKey | None = Field(default=None, min_length=1, max_length=128)


class AsyncInferenceError(Model):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class AsyncInferencePublic(Model):
    id: str
    project: str
    status: AsyncInferenceStatus
    model: str
    model_name: str | None = None
    model_version: str | None = None
    # {"predictions": [...], "outputs": [column names]} once succeeded.
    result: dict[str, Any] | None = None
    error: AsyncInferenceError | None = None
    rows: int | None = None
    created_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


AsyncInferencesPublic = Page[AsyncInferencePublic]
