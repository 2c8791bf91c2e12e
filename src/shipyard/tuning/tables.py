"""Tables of hyperparameter tuning. Only ``tuning.service`` queries them.

``tuning_trials`` is the one source of truth for a tuning job's trials: the Optuna study that
proposes the next trial is rebuilt from these rows in memory (``tuning.engine``), so a process
that takes a tuning job over (after a restart) resumes it where the rows say.

A ``job`` tuning job is driven by one coordinator at a time: ``owner`` names its process and
``lease_expires_at`` says until when it answers for the job; a lease that ran out means that
process is gone, and the next one to start adopts the job. A ``function`` tuning job is driven
by the SDK process that calls ``sy.tune``, which reports its trials in batches.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shipyard.core.db import metadata

tuning_jobs = Table(
    "tuning_jobs",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(16), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("kind", String(16), nullable=False),  # job | function
    # running | stopping | completed | failed | stopped
    Column("status", String(16), nullable=False),
    # JSON: the TuningJobCreate as given (space, strategy, objective, trial template, ...).
    Column("spec", Text, nullable=False),
    Column("objective_metric", String(250), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("max_trials", Integer, nullable=False),
    Column("max_parallel", Integer, nullable=False),
    Column("experiment_id", String(16), nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("idempotency_key", String(128), nullable=True),
    Column("owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("created_by", String(64), nullable=True),
    Column("started_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("project_id", "idempotency_key"),
)
Index("ix_tuning_jobs_project_created", tuning_jobs.c.project_id, tuning_jobs.c.created_at)
Index("ix_tuning_jobs_status", tuning_jobs.c.status, tuning_jobs.c.lease_expires_at)

tuning_trials = Table(
    "tuning_trials",
    metadata,
    Column(
        "tuning_job_id",
        String(16),
        ForeignKey("tuning_jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("number", Integer, primary_key=True),
    Column("params", Text, nullable=False),  # JSON object
    # running | completed | pruned | failed | stopped
    Column("state", String(16), nullable=False),
    Column("value", Float, nullable=True),
    Column("intermediate_values", Text, nullable=True),  # JSON [[step, value], ...]
    Column("job_id", String(16), nullable=True),
    Column("run_id", String(16), nullable=True),
    Column("error", Text, nullable=True),
    Column("started_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
)
