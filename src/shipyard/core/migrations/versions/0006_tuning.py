"""tuning: hyperparameter tuning jobs and their trials

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuning_jobs",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("objective_metric", sa.String(length=250), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("max_trials", sa.Integer(), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.String(length=16), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_tuning_jobs_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuning_jobs")),
        sa.UniqueConstraint(
            "project_id", "idempotency_key", name=op.f("uq_tuning_jobs_project_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("tuning_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tuning_jobs_project_created", ["project_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_tuning_jobs_status", ["status", "lease_expires_at"], unique=False)

    op.create_table(
        "tuning_trials",
        sa.Column("tuning_job_id", sa.String(length=16), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("intermediate_values", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(length=16), nullable=True),
        sa.Column("run_id", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tuning_job_id"],
            ["tuning_jobs.id"],
            name=op.f("fk_tuning_trials_tuning_job_id_tuning_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tuning_job_id", "number", name=op.f("pk_tuning_trials")),
    )


def downgrade() -> None:
    op.drop_table("tuning_trials")
    with op.batch_alter_table("tuning_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_tuning_jobs_status")
        batch_op.drop_index("ix_tuning_jobs_project_created")
    op.drop_table("tuning_jobs")
