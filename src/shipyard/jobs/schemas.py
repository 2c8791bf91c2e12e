"""API types of the jobs domain: a training job's spec (``JobCreate``), the job as the API shows
it (``Job``), and its log chunks.

A job is one piece of user code (a script, a function, or a built-in algorithm) run on an
executor with a contract of folders and environment variables, tied to one tracking run. Its
status moves ``queued -> starting -> running -> completed | failed | stopped``; a retried job goes
back to ``queued`` with its attempt counted.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from shipyard.core.schemas import Key, Model, Name, Page

Scalar = str | int | float | bool | None

# A channel name becomes part of environment variable names (SHIPYARD_CHANNEL_<NAME>).
_CHANNEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

ALGORITHMS = ("xgboost", "lightgbm", "linear", "random-forest", "kmeans")
Algorithm = Literal["xgboost", "lightgbm", "linear", "random-forest", "kmeans"]


class JobStatus(StrEnum):
    queued = "queued"
    starting = "starting"
    running = "running"
    completed = "completed"
    failed = "failed"
    stopped = "stopped"

    @property
    def final(self) -> bool:
        return self in (JobStatus.completed, JobStatus.failed, JobStatus.stopped)


FINAL_STATUSES = (JobStatus.completed, JobStatus.failed, JobStatus.stopped)
ACTIVE_STATUSES = (JobStatus.queued, JobStatus.starting, JobStatus.running)


class Resources(Model):
    cpus: int = Field(default=1, ge=1, le=1024, description="CPUs (executor slots) per instance.")
    memory_gb: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Memory limit per instance; the job is stopped "
        "with a clear reason when its processes use more.",
    )
    gpus: int = Field(default=0, ge=0, le=64)


class MetricDefinition(Model):
    """A metric read from the job's log, as SageMaker's metric definitions: every log line the
    regular expression matches logs its one group's value as the metric ``name``."""

    name: Key
    regex: str = Field(min_length=1, max_length=1000)

    @field_validator("regex")
    @classmethod
    def _one_group(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if compiled.groups != 1:
            raise ValueError(
                f"expected exactly one group (the value), got {compiled.groups}: "
                r"for example 'loss=([0-9.eE+-]+)'"
            )
        return v


class JobCreate(Model):
    """What to run. Exactly one of ``entry_point``, ``function`` (or ``function_pickle``) and
    ``algorithm``."""

    name: Name | None = Field(default=None, description="Default: from what runs, plus the id.")
    entry_point: str | list[str] | None = Field(
        default=None,
        description="A .py file relative to source_dir, or a command as a list of arguments "
        "(never a shell string).",
    )
    function: str | None = Field(
        default=None,
        max_length=512,
        description="'package.module:function', called with **hyperparameters.",
    )
    function_pickle: str | None = Field(
        default=None, max_length=16 * 1024 * 1024, description="A cloudpickled function, base64."
    )
    algorithm: Algorithm | None = None
    source_dir: str | None = Field(
        default=None, max_length=4096, description="An absolute folder: the working directory."
    )
    hyperparameters: dict[Key, Scalar] = Field(default_factory=dict)
    inputs: dict[str, Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=dict, description="Channel name -> a file or folder path, or s3:// URI."
    )
    resources: Resources = Field(default_factory=Resources)
    max_runtime_s: float | None = Field(
        default=None, gt=0, le=366 * 24 * 3600, description="Total across attempts."
    )
    retries: int = Field(default=0, ge=0, le=100, description="Attempts after the first.")
    instance_count: int = Field(default=1, ge=1, le=256)
    metric_definitions: list[MetricDefinition] = Field(default_factory=list, max_length=100)
    experiment: Name = "jobs"
    environment: dict[str, Annotated[str, Field(max_length=32768)]] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)
    tags: dict[Key, Annotated[str, Field(max_length=8000)]] = Field(default_factory=dict)
    tuning_job_id: str | None = Field(default=None, min_length=1, max_length=16)

    @field_validator("entry_point")
    @classmethod
    def _entry_point(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v is None:
            return v
        if isinstance(v, list):
            if not v or not all(a for a in v) or len(v) > 10_000:
                raise ValueError("expected a non-empty command: a list of non-empty arguments")
            return v
        if not v.endswith(".py") or "\x00" in v:
            raise ValueError(f"expected a .py file (or a command as a list), got {v!r}")
        return v

    @field_validator("function")
    @classmethod
    def _function(cls, v: str | None) -> str | None:
        if v is not None and not _TARGET_RE.match(v):
            raise ValueError(f"expected 'package.module:function', got {v!r}")
        return v

    @field_validator("inputs")
    @classmethod
    def _channels(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _CHANNEL_RE.match(name):
                raise ValueError(
                    f"channel {name!r}: expected a letter then letters, digits or '_' "
                    "(it becomes SHIPYARD_CHANNEL_<NAME>)"
                )
        if len({n.upper() for n in v}) != len(v):
            raise ValueError("two channels differ only by case")
        return v

    @field_validator("environment")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _ENV_RE.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> JobCreate:
        given = [
            k
            for k in ("entry_point", "function", "function_pickle", "algorithm")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of entry_point, function (or function_pickle) and algorithm"
                + (f"; got {', '.join(given)}" if given else "")
            )
        if self.source_dir is not None and not self.source_dir.startswith("/"):
            raise ValueError(f"source_dir must be an absolute path, got {self.source_dir!r}")
        if (
            isinstance(self.entry_point, str)
            and not self.entry_point.startswith("/")
            and self.source_dir is None
        ):
            raise ValueError("a relative entry_point needs source_dir (the folder it is in)")
        return self

    def display_name(self) -> str:
        """What the job runs, in a word: the script's stem, the function's name, the algorithm."""
        if isinstance(self.entry_point, str):
            return self.entry_point.rsplit("/", 1)[-1].removesuffix(".py") or "job"
        if isinstance(self.entry_point, list):
            return self.entry_point[0].rsplit("/", 1)[-1] or "job"
        if self.function:
            return self.function.rsplit(":", 1)[-1]
        if self.algorithm:
            return self.algorithm
        return "function"


class Job(Model):
    id: str
    project: str
    name: str
    status: JobStatus
    run_id: str | None = None
    experiment_id: str | None = None
    # The current (or last) attempt, 1-based; 0 until the first one starts.
    attempt: int
    # How many attempts the job may make: retries + 1.
    attempts: int
    failure_reason: str | None = None
    stop_requested: bool = False
    # The launcher's report: {"findings": [...], "summary": {...}}, once an attempt ended.
    report: dict[str, Any] | None = None
    model_artifact_path: str | None = None
    worker: str | None = Field(default=None, description="The worker holding the job's lease.")
    runtime_s: float = Field(default=0.0, description="Seconds run so far, every attempt.")
    spec: JobCreate
    tuning_job_id: str | None = None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None


JobsPublic = Page[Job]


class JobLogChunk(Model):
    seq: int
    attempt: int
    rank: int | None = Field(default=None, description="None for Shipyard's own lines.")
    data: str
    created_at: datetime


class JobLogs(Model):
    data: list[JobLogChunk]
    # Pass as after_seq to get what came next.
    next_seq: int
    # The job is final and every chunk was returned: a follower can stop.
    done: bool
    status: JobStatus


class JobStop(Model):
    reason: str | None = Field(default=None, max_length=1000)
