"""Tables of the tracking domain. Only ``tracking.service`` (and ``tracking.search``) query them.

Times are integer milliseconds since the epoch, UTC. A metric value of NaN is stored as NULL in
``latest_metrics`` (SQLite turns NaN into NULL anyway, so the store says so on every backend) and
read back as None from ``metric_chunks``.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
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

# The whole history, in chunks: one row per (run, key, write batch) with that batch's points as
# packed arrays (little-endian int64 steps and timestamps, float64 values with NaN for None; see
# ``tracking.chunks``) and their lowest and highest step, for reads of a range of steps. A batch
# of 10,000 points of 10 keys is 10 rows, not 10,000: a row per point capped writes at the rate
# PostgreSQL's COPY inserts rows (about 100,000 a second). Migration 0008 made it from the
# former one-row-per-point ``metrics`` table; ``id`` keeps the order the chunks were written in.
metric_chunks = Table(
    "metric_chunks",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("min_step", BigInteger, nullable=False),
    Column("max_step", BigInteger, nullable=False),
    Column("points", Integer, nullable=False),
    Column("steps_i64", LargeBinary, nullable=False),
    Column("timestamps_i64", LargeBinary, nullable=False),
    Column("values_f64", LargeBinary, nullable=False),
)
Index(
    "ix_metric_chunks_run_key_step",
    metric_chunks.c.run_id,
    metric_chunks.c.key,
    metric_chunks.c.min_step,
)

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
