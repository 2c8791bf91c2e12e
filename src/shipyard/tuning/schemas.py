"""API types of hyperparameter tuning: the search space, the tuning job and its trials.

A tuning job searches a space of hyperparameters for the values that minimize (or maximize) an
objective metric. Each trial is a run; a trial of a ``job`` tuning job is also a training job
(the ``trial`` template with the sampled hyperparameters added), while a trial of a ``function``
tuning job is a Python function called in the SDK's process (``sy.tune``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from shipyard.core.schemas import Key, Model, Name, Page
from shipyard.jobs.schemas import JobCreate

Scalar = str | int | float | bool


class ParamKind(StrEnum):
    float = "float"
    int = "int"
    categorical = "categorical"


class ParamSpec(Model):
    """One dimension of the search space.

    ``float``: ``low``..``high``, sampled uniformly, or log-uniformly with ``log``; ``step``
    makes it a grid of ``low, low+step, ...`` (and is what grid search enumerates).
    ``int``: ``low``..``high`` inclusive, ``step`` (default 1) or ``log``.
    ``categorical``: one of ``choices``.
    """

    type: ParamKind
    # int | float: an int parameter's bounds read back as written (2, not 2.0).
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(default=None, gt=0)
    choices: list[Scalar | None] | None = Field(default=None, min_length=1, max_length=10_000)


class Strategy(StrEnum):
    """How trials are proposed: ``random``, ``grid`` (every combination, in a shuffled order),
    ``bayesian`` (Optuna's TPE), or ``hyperband`` / ``asha`` (random proposals, with bad trials
    stopped early on their intermediate objective values)."""

    random = "random"
    grid = "grid"
    bayesian = "bayesian"
    hyperband = "hyperband"
    asha = "asha"


class EarlyStopping(StrEnum):
    """Stop trials whose intermediate objective values trail the others'."""

    none = "none"
    asha = "asha"
    hyperband = "hyperband"


class Direction(StrEnum):
    minimize = "minimize"
    maximize = "maximize"


class TuningJobKind(StrEnum):
    job = "job"  # each trial is a training job run by the platform's workers
    function = "function"  # each trial is a Python function called by the SDK (sy.tune)


class TuningJobStatus(StrEnum):
    running = "running"
    stopping = "stopping"
    completed = "completed"
    failed = "failed"
    stopped = "stopped"

    @property
    def final(self) -> bool:
        return self in (TuningJobStatus.completed, TuningJobStatus.failed, TuningJobStatus.stopped)


class TrialState(StrEnum):
    running = "running"
    completed = "completed"
    pruned = "pruned"
    failed = "failed"
    stopped = "stopped"

    @property
    def final(self) -> bool:
        return self != TrialState.running


class Objective(Model):
    metric: Key = Field(description="The run metric to optimize (its latest value counts).")
    direction: Direction = Direction.minimize


class TuningJobCreate(Model):
    name: Name | None = None
    kind: TuningJobKind = TuningJobKind.job
    objective: Objective
    space: dict[Key, ParamSpec] = Field(min_length=1, max_length=1000)
    strategy: Strategy = Strategy.bayesian
    early_stopping: EarlyStopping | None = Field(
        default=None, description="Default: as the strategy says (hyperband, asha) or none."
    )
    max_trials: int = Field(default=20, ge=1, le=100_000)
    max_parallel: int = Field(default=1, ge=1, le=1024)
    # The pruners' budget, in steps of the intermediate objective values.
    min_resource: int = Field(default=1, ge=1)
    max_resource: int | None = Field(
        default=None, ge=1, description="Hyperband's largest budget (default: from the trials)."
    )
    reduction_factor: int = Field(default=3, ge=2, le=100)
    seed: int | None = None
    warm_start_from: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Earlier tuning jobs whose completed trials seed this one's search.",
    )
    # The training job each trial runs (a JobCreate without tuning_job_id): its hyperparameters
    # are the static ones, and the sampled values are added to them. Only for kind=job.
    trial: JobCreate | None = None
    experiment: Name | None = Field(
        default=None, description="Where the trials' runs go (default 'tuning')."
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)
    tags: dict[Key, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _trial_template(self) -> TuningJobCreate:
        if self.kind == TuningJobKind.job and self.trial is None:
            raise ValueError("a job tuning job needs 'trial' (the training job each trial runs)")
        if self.kind == TuningJobKind.function and self.trial is not None:
            raise ValueError("a function tuning job takes no 'trial' template")
        return self


class TrialRecord(Model):
    """A trial as the SDK reports it for a function tuning job."""

    number: int = Field(ge=0)
    params: dict[str, Any]
    state: TrialState
    value: float | None = None
    intermediate_values: dict[int, float] = Field(default_factory=dict)
    # Other metrics the objective logged (``trial.log_metric``): [key, value, step].
    metrics: list[tuple[Key, float | None, int]] = Field(default_factory=list, max_length=100_000)
    run_id: str | None = None
    error: str | None = Field(default=None, max_length=8000)
    started_at: datetime | None = None
    ended_at: datetime | None = None


class TrialsReport(Model):
    """Trials of a function tuning job, sent in batches; ``status`` ends the job."""

    trials: list[TrialRecord] = Field(default_factory=list, max_length=10_000)
    status: Literal["completed", "failed", "stopped"] | None = None
    failure_reason: str | None = Field(default=None, max_length=8000)


class TrialPublic(Model):
    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None = None
    intermediate_values: dict[int, float] = Field(default_factory=dict)
    job_id: str | None = None
    run_id: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class BestTrial(Model):
    number: int
    params: dict[str, Any]
    value: float
    run_id: str | None = None
    job_id: str | None = None


class TrialCounts(Model):
    total: int = 0
    running: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    stopped: int = 0


class TuningJobPublic(Model):
    id: str
    project: str
    name: str
    kind: TuningJobKind
    status: TuningJobStatus
    objective: Objective
    space: dict[str, ParamSpec]
    strategy: Strategy
    early_stopping: EarlyStopping
    max_trials: int
    max_parallel: int
    min_resource: int
    max_resource: int | None = None
    reduction_factor: int
    seed: int | None = None
    warm_start_from: list[str]
    trial: JobCreate | None = None
    experiment: str
    tags: dict[str, str] = Field(default_factory=dict)
    trials_count: TrialCounts
    best: BestTrial | None = None
    failure_reason: str | None = None
    created_by: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    # Only in a single tuning job's answer, not in lists.
    trials: list[TrialPublic] | None = None


TuningJobsPublic = Page[TuningJobPublic]


class RegisterBest(Model):
    model_name: Name
    artifact_path: str = Field(default="model", min_length=1, max_length=1024)
    description: str = Field(default="", max_length=5000)
