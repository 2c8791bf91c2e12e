"""Tables of the jobs domain. Only ``jobs.service`` (and the worker, through it) queries them.

A job waits in ``jobs`` until a worker claims it: the worker writes its name in ``lease_owner``
and renews ``lease_expires_at`` with a heartbeat while the job's tasks run. A lease that ran out
means the worker is gone: any worker (or the server) reaps the job, retrying it while attempts
remain. ``attempt`` counts attempts started; ``max_attempts`` is retries + 1.

A job's log (its tasks' stdout and stderr, plus Shipyard's own lines) is kept in ``job_logs`` as
chunks numbered by ``seq`` per job, so a follower asks for what came after the last it saw.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shipyard.core.db import metadata

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(16), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    # queued | starting | running | completed | failed | stopped
    Column("status", String(16), nullable=False),
    Column("spec", Text, nullable=False),  # JobCreate as JSON
    # Executor slots the job holds while it runs: cpus x instance_count.
    Column("slots", Integer, nullable=False),
    Column("run_id", String(16), nullable=True),
    Column("experiment_id", String(16), nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("failure_reason", Text, nullable=True),
    Column("report", Text, nullable=True),  # JSON
    Column("model_artifact_path", String(1024), nullable=True),
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("stop_reason", Text, nullable=True),
    Column("idempotency_key", String(128), nullable=True),
    Column("tuning_job_id", String(16), nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    # Milliseconds run by finished attempts, against max_runtime_s.
    Column("runtime_ms", BigInteger, nullable=False, default=0),
    Column("attempt_started_at", BigInteger, nullable=True),
    Column("created_by", String(64), nullable=True),
    Column("started_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("project_id", "idempotency_key"),
)
Index("ix_jobs_project_created", jobs.c.project_id, jobs.c.created_at)
Index("ix_jobs_status_created", jobs.c.status, jobs.c.created_at)
Index("ix_jobs_tuning_job", jobs.c.tuning_job_id)

job_logs = Table(
    "job_logs",
    metadata,
    Column("job_id", String(16), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("attempt", Integer, nullable=False),
    Column("rank", Integer, nullable=True),  # null: a line of Shipyard's own
    Column("data", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
