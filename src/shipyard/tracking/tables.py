"""Tables of the tracking domain. Only ``tracking.service`` (and ``tracking.search``) query them.

Times are integer milliseconds since the epoch, UTC. A metric value of NaN is stored as NULL:
SQLite turns NaN into NULL anyway, so the store says so explicitly on every backend.
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

experiments = Table(
    "experiments",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(16), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("lifecycle", String(16), nullable=False, default="active"),
    Column("deleted_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name"),
)

experiment_tags = Table(
    "experiment_tags",
    metadata,
    Column(
        "experiment_id",
        String(16),
        ForeignKey("experiments.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(16), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column(
        "experiment_id",
        String(16),
        ForeignKey("experiments.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("parent_run_id", String(16), nullable=True),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger, nullable=True),
    Column("lifecycle", String(16), nullable=False, default="active"),
    Column("deleted_at", BigInteger, nullable=True),
    Column("created_by", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_runs_experiment_start", runs.c.experiment_id, runs.c.start_time)
Index("ix_runs_project_start", runs.c.project_id, runs.c.start_time)
Index("ix_runs_parent", runs.c.parent_run_id)

run_params = Table(
    "run_params",
    metadata,
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)
# (key, value, run_id) on SQLite; on PostgreSQL (key, run_id) plus a hash index on value, since a
# B-tree entry cannot hold a 6,000-character value. See migration 0001.
Index("ix_run_params_key_value", run_params.c.key, run_params.c.value, run_params.c.run_id)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

# The whole history: one row per logged point. On PostgreSQL the foreign key on run_id is
# replaced by a lock on the run per batch and a delete trigger on runs (migration 0007): its
# per-row check cost as much as the rest of a COPY.
metrics = Table(
    "metrics",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float, nullable=True),
)
Index("ix_metrics_run_key_step", metrics.c.run_id, metrics.c.key, metrics.c.step)

# The value at the highest step (then latest timestamp) per run and key, for fast search.
latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float, nullable=True),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
)
Index(
    "ix_latest_metrics_key_value",
    latest_metrics.c.key,
    latest_metrics.c.value,
    latest_metrics.c.run_id,
)

# Batch ids already applied: a client that retries a batch after a lost answer stores it once.
metric_batches = Table(
    "metric_batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# A run's files. Bytes live content-addressed in the artifact store under their sha256.
artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_artifacts_digest", artifacts.c.digest)

run_inputs = Table(
    "run_inputs",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("schema", Text, nullable=False, default=""),  # JSON
    Column("context", String(64), nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("run_id", "name", "digest", "context"),
)
