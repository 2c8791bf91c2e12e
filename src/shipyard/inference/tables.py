"""Tables of the inference domain (batch transform and asynchronous inference). Only
``inference.service`` queries them.

A batch job pins its model to a version when it is created (``model_name``/``model_version``),
so a resumed job predicts with the same model even if an alias moved meanwhile. Its shards are
row ranges of the input (and, for CSV, byte ranges that start at a row boundary); a shard is
``succeeded`` only once its output file was renamed into place, so resuming redoes exactly the
shards that are not.

A job is driven by one coordinator at a time: ``owner`` names it and ``lease_expires_at`` says
until when it answers for the job. A coordinator whose lease ran out (its process died) is
presumed gone: the job is marked failed and can be resumed by anyone.

An asynchronous inference keeps its request and its result in the artifact store (by digest),
not in the row: a payload may be megabytes, and the metadata store stays small.
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

batch_jobs = Table(
    "batch_jobs",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(16), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    # pending | running | stopping | stopped | succeeded | failed
    Column("status", String(16), nullable=False),
    Column("model_uri", String(1024), nullable=False),
    Column("model_name", String(256), nullable=True),
    Column("model_version", String(64), nullable=True),
    Column("input_path", Text, nullable=False),
    Column("input_format", String(16), nullable=False),
    Column("output_path", Text, nullable=False),
    Column("output_format", String(16), nullable=False),
    # JSON: the input's header line and column types (CSV), join columns, output columns.
    Column("plan", Text, nullable=False),
    Column("join_columns", Text, nullable=True),  # JSON list, or null
    Column("join_all", Boolean, nullable=False, default=False),
    Column("parallelism", Integer, nullable=True),
    Column("retries", Integer, nullable=False, default=0),
    Column("trust_code", Boolean, nullable=False, default=False),
    Column("shards_total", Integer, nullable=False),
    Column("rows_total", BigInteger, nullable=False),
    Column("error", Text, nullable=True),
    Column("idempotency_key", String(128), nullable=True),
    Column("owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("created_by", String(64), nullable=True),
    # When the current (or last) run of the job started and ended: a resume starts a new run.
    Column("started_at", BigInteger, nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("project_id", "idempotency_key"),
)
Index("ix_batch_jobs_project_created", batch_jobs.c.project_id, batch_jobs.c.created_at)

batch_shards = Table(
    "batch_shards",
    metadata,
    Column("job_id", String(16), ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("shard_index", Integer, primary_key=True),
    # pending | running | succeeded | failed
    Column("status", String(16), nullable=False),
    Column("start_row", BigInteger, nullable=False),
    Column("stop_row", BigInteger, nullable=False),
    Column("start_byte", BigInteger, nullable=True),  # CSV only
    Column("stop_byte", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("rows", BigInteger, nullable=True),  # rows written, once succeeded
    Column("output_file", String(256), nullable=True),
    Column("output_bytes", BigInteger, nullable=True),
    Column("output_digest", String(64), nullable=True),
    Column("task_id", String(64), nullable=True),
    Column("log_path", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("started_at", BigInteger, nullable=True),
    Column("finished_at", BigInteger, nullable=True),
)

async_inferences = Table(
    "async_inferences",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(16), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    # queued | running | succeeded | failed
    Column("status", String(16), nullable=False),
    Column("model_uri", String(1024), nullable=False),
    Column("model_name", String(256), nullable=True),
    Column("model_version", String(64), nullable=True),
    Column("input_digest", String(64), nullable=False),
    Column("output_digest", String(64), nullable=True),
    Column("rows", Integer, nullable=True),
    Column("error", Text, nullable=True),  # JSON {"code", "message", "details"}
    Column("idempotency_key", String(128), nullable=True),
    Column("owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("created_by", String(64), nullable=True),
    Column("started_at", BigInteger, nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("project_id", "idempotency_key"),
)
Index(
    "ix_async_inferences_project_created",
    async_inferences.c.project_id,
    async_inferences.c.created_at,
)
Index("ix_async_inferences_status", async_inferences.c.status, async_inferences.c.lease_expires_at)
