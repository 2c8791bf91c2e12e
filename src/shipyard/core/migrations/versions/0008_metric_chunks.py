"""metric_chunks: the metric history in chunks, one row per (run, key, write batch)

Revision ID: 0008
Revises: 0007

A row per logged point capped batched logging at the rate the database inserts rows (COPY on
PostgreSQL: about 100,000 a second here). ``metric_chunks`` holds a write batch's points of one
key as packed arrays: steps and timestamps as little-endian int64, values as little-endian
float64 with NaN for a missing value (see ``shipyard.tracking.chunks``), plus the lowest and
highest step for range reads. Ten keys in a batch of 10,000 points are ten rows.

On PostgreSQL the arrays are stored uncompressed (``STORAGE EXTERNAL``; see ``upgrade``).

With a handful of rows per batch, a per-row foreign-key check costs nothing that matters, so
the chunks have an ordinary ``ON DELETE CASCADE`` key on both backends, and PostgreSQL's delete
trigger from 0007 goes.

Upgrade packs every (run, key)'s existing points, in the order they were inserted, into chunks
of at most ``CHUNK`` points; downgrade unpacks them back into rows. Both stream, so a large
history is converted without holding it in memory. The encoding is written out here rather than
imported, so this revision keeps meaning the same bytes whatever later code does.
"""

import math
import sys
from array import array
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CHUNK = 10_000  # points per chunk made from existing rows
_BIG_ENDIAN = sys.byteorder == "big"

_metrics = sa.table(
    "metrics",
    sa.column("id", sa.BigInteger),
    sa.column("run_id", sa.String),
    sa.column("key", sa.String),
    sa.column("step", sa.BigInteger),
    sa.column("timestamp", sa.BigInteger),
    sa.column("value", sa.Float),
)
_chunks = sa.table(
    "metric_chunks",
    sa.column("id", sa.BigInteger),
    sa.column("run_id", sa.String),
    sa.column("key", sa.String),
    sa.column("min_step", sa.BigInteger),
    sa.column("max_step", sa.BigInteger),
    sa.column("points", sa.Integer),
    sa.column("steps_i64", sa.LargeBinary),
    sa.column("timestamps_i64", sa.LargeBinary),
    sa.column("values_f64", sa.LargeBinary),
)


def _pack(code: str, xs: list[Any]) -> bytes:
    a = array(code, xs)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def _unpack(code: str, b: bytes) -> list[Any]:
    a = array(code)
    a.frombytes(b)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tolist()


def _chunk(run_id: str, key: str, rows: list[Any]) -> dict[str, Any]:
    steps = [r[2] for r in rows]
    return {
        "run_id": run_id,
        "key": key,
        "min_step": min(steps),
        "max_step": max(steps),
        "points": len(rows),
        "steps_i64": _pack("q", steps),
        "timestamps_i64": _pack("q", [r[3] for r in rows]),
        "values_f64": _pack("d", [math.nan if r[4] is None else r[4] for r in rows]),
    }


def _chunks_of(conn: sa.Connection) -> Iterator[dict[str, Any]]:
    """Chunks of the ``metrics`` rows, per (run, key) in the order they were inserted."""
    # Options on the statement, not the connection: on the connection they would stay for the
    # migration's later DDL (which PostgreSQL cannot run through a server-side cursor).
    rows = conn.execute(
        sa.select(
            _metrics.c.run_id,
            _metrics.c.key,
            _metrics.c.step,
            _metrics.c.timestamp,
            _metrics.c.value,
        )
        .order_by(_metrics.c.run_id, _metrics.c.key, _metrics.c.id)
        .execution_options(stream_results=True, yield_per=CHUNK)
    )
    group: list[Any] = []
    for row in rows:
        if group and ((row[0], row[1]) != (group[0][0], group[0][1]) or len(group) == CHUNK):
            yield _chunk(group[0][0], group[0][1], group)
            group = []
        group.append(row)
    if group:
        yield _chunk(group[0][0], group[0][1], group)


def _batched(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _create_metrics(postgres: bool) -> None:
    """The ``metrics`` table as 0007 left it (no foreign key on PostgreSQL)."""
    fk = (
        []
        if postgres
        else [
            sa.ForeignKeyConstraint(
                ["run_id"], ["runs.id"], name=op.f("fk_metrics_run_id_runs"), ondelete="CASCADE"
            )
        ]
    )
    op.create_table(
        "metrics",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        *fk,
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics")),
    )
    op.create_index("ix_metrics_run_key_step", "metrics", ["run_id", "key", "step"])


def upgrade() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    op.create_table(
        "metric_chunks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("min_step", sa.BigInteger(), nullable=False),
        sa.Column("max_step", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("steps_i64", sa.LargeBinary(), nullable=False),
        sa.Column("timestamps_i64", sa.LargeBinary(), nullable=False),
        sa.Column("values_f64", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_metric_chunks_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_chunks")),
    )
    if postgres:
        # A chunk's arrays are kilobytes, past the size where PostgreSQL compresses a value
        # (pglz, by default) before storing it out of line: that compression cost about 15 ms
        # per batch of 10,000 points, seven times the rest of the insert, to save little
        # (float64 values hardly compress). EXTERNAL stores them out of line, uncompressed.
        for column in ("steps_i64", "timestamps_i64", "values_f64"):
            op.execute(f"ALTER TABLE metric_chunks ALTER COLUMN {column} SET STORAGE EXTERNAL")
    # 0007's trigger leaves no points of deleted runs on PostgreSQL, but the new key must hold
    # for every chunk: only points of runs that exist are carried over.
    if postgres:
        op.execute(
            "DELETE FROM metrics m WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = m.run_id)"
        )
    # The rows are read in a stream (a server-side cursor on PostgreSQL) while the chunks are
    # written, a hundred at a time, on the same connection and in the same transaction.
    for batch in _batched(_chunks_of(conn), 100):
        conn.execute(_chunks.insert(), batch)
    op.create_index("ix_metric_chunks_run_key_step", "metric_chunks", ["run_id", "key", "min_step"])
    if postgres:
        op.execute("DROP TRIGGER IF EXISTS runs_delete_metrics ON runs")
        op.execute("DROP FUNCTION IF EXISTS shipyard_runs_delete_metrics()")
    op.drop_index("ix_metrics_run_key_step", table_name="metrics")
    op.drop_table("metrics")


def downgrade() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    _create_metrics(postgres)
    stored = conn.execute(
        sa.select(
            _chunks.c.run_id,
            _chunks.c.key,
            _chunks.c.steps_i64,
            _chunks.c.timestamps_i64,
            _chunks.c.values_f64,
        )
        .order_by(_chunks.c.id)
        .execution_options(stream_results=True, yield_per=100)
    )
    rows: list[dict[str, Any]] = []
    for run_id, key, s, t, v in stored:
        for step, ts, value in zip(_unpack("q", s), _unpack("q", t), _unpack("d", v), strict=True):
            rows.append(
                {
                    "run_id": run_id,
                    "key": key,
                    "step": step,
                    "timestamp": ts,
                    "value": None if value != value else value,
                }
            )
        if len(rows) >= CHUNK:
            conn.execute(_metrics.insert(), rows)
            rows = []
    if rows:
        conn.execute(_metrics.insert(), rows)
    op.drop_index("ix_metric_chunks_run_key_step", table_name="metric_chunks")
    op.drop_table("metric_chunks")
    if postgres:
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
