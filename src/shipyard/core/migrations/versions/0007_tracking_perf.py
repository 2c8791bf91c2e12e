"""tracking_perf: metric points without a per-row foreign-key check on PostgreSQL

Revision ID: 0007
Revises: 0006

On PostgreSQL a foreign key is checked by a trigger that runs one locking query per inserted
row. For ``metrics``, where a batch inserts thousands of rows of one run, that check was about
45% of the cost of ``COPY`` (measured: 52,000 rows/s with it, 94,000 without, same table and
indexes). This revision replaces it with what the key gave, done once per batch or statement:

- existence: ``TrackingService.log_batch`` locks the run's row ``FOR KEY SHARE`` (the lock the
  key check takes) before writing, so a concurrent delete of the run waits for the batch;
- ``ON DELETE CASCADE``: a statement-level trigger on ``runs`` deletes the points of the runs a
  statement deleted, including runs deleted by a cascade from their experiment or project.

SQLite keeps its foreign key: there the check is an in-process primary-key lookup.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint("fk_metrics_run_id_runs", "metrics", type_="foreignkey")
    op.execute(
        """
        CREATE FUNCTION shipyard_runs_delete_metrics() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM metrics WHERE run_id IN (SELECT id FROM gone_runs);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER runs_delete_metrics AFTER DELETE ON runs
        REFERENCING OLD TABLE AS gone_runs
        FOR EACH STATEMENT EXECUTE FUNCTION shipyard_runs_delete_metrics()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS runs_delete_metrics ON runs")
    op.execute("DROP FUNCTION IF EXISTS shipyard_runs_delete_metrics()")
    op.execute(
        "DELETE FROM metrics m WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = m.run_id)"
    )
    op.create_foreign_key(
        "fk_metrics_run_id_runs", "metrics", "runs", ["run_id"], ["id"], ondelete="CASCADE"
    )
