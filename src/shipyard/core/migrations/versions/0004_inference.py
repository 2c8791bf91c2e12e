"""inference: batch transform jobs and their shards, asynchronous inference requests

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_uri", sa.String(length=1024), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("input_path", sa.Text(), nullable=False),
        sa.Column("input_format", sa.String(length=16), nullable=False),
        sa.Column("output_path", sa.Text(), nullable=False),
        sa.Column("output_format", sa.String(length=16), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("join_columns", sa.Text(), nullable=True),
        sa.Column("join_all", sa.Boolean(), nullable=False),
        sa.Column("parallelism", sa.Integer(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("trust_code", sa.Boolean(), nullable=False),
        sa.Column("shards_total", sa.Integer(), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_batch_jobs_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_jobs")),
        sa.UniqueConstraint(
            "project_id", "idempotency_key", name=op.f("uq_batch_jobs_project_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_batch_jobs_project_created", ["project_id", "created_at"], unique=False
        )

    op.create_table(
        "batch_shards",
        sa.Column("job_id", sa.String(length=16), nullable=False),
        sa.Column("shard_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_row", sa.BigInteger(), nullable=False),
        sa.Column("stop_row", sa.BigInteger(), nullable=False),
        sa.Column("start_byte", sa.BigInteger(), nullable=True),
        sa.Column("stop_byte", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("output_file", sa.String(length=256), nullable=True),
        sa.Column("output_bytes", sa.BigInteger(), nullable=True),
        sa.Column("output_digest", sa.String(length=64), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["batch_jobs.id"],
            name=op.f("fk_batch_shards_job_id_batch_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "shard_index", name=op.f("pk_batch_shards")),
    )

    op.create_table(
        "async_inferences",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_uri", sa.String(length=1024), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("input_digest", sa.String(length=64), nullable=False),
        sa.Column("output_digest", sa.String(length=64), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_async_inferences_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_async_inferences")),
        sa.UniqueConstraint(
            "project_id",
            "idempotency_key",
            name=op.f("uq_async_inferences_project_id_idempotency_key"),
        ),
    )
    with op.batch_alter_table("async_inferences", schema=None) as batch_op:
        batch_op.create_index(
            "ix_async_inferences_project_created", ["project_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_async_inferences_status", ["status", "lease_expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("async_inferences", schema=None) as batch_op:
        batch_op.drop_index("ix_async_inferences_status")
        batch_op.drop_index("ix_async_inferences_project_created")
    op.drop_table("async_inferences")
    op.drop_table("batch_shards")
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_jobs_project_created")
    op.drop_table("batch_jobs")
