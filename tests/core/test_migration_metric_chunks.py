"""Migration 0008 on SQLite and PostgreSQL: a store with a one-row-per-point ``metrics`` table
(0007) upgrades to ``metric_chunks`` with every history reading back as before, and downgrades
back to the same rows."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from shipyard.core.db import Database
from tests.conftest import PG_ADMIN_URL, make_settings

# A point per row: (run, key, step, timestamp, value), in the order they are inserted.
ROWS: list[tuple[str, str, int, int, float | None]] = [
    *[("run-a", "loss", s, 1000 + s, 1.0 / (s + 1)) for s in range(10_005)],  # > one chunk
    ("run-a", "acc", 3, 7, 0.5),
    ("run-a", "acc", 1, 9, None),  # NaN is stored as NULL before 0008
    ("run-a", "acc", 3, 5, 0.25),  # the same step, an earlier timestamp
    ("run-a", "acc", 3, 7, 0.75),  # the same step and timestamp: after the first one
    ("run-b", "acc", -2, 0, 1e300),
]


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store of its own: this test walks migrations up and down."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    import psycopg

    name = f"shipyard_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fill_0007(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO projects (id, name, description, created_at, updated_at) "
                "VALUES ('p1', 'mig', '', 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO experiments (id, project_id, name, description, lifecycle, "
                "created_at, updated_at) VALUES ('e1', 'p1', 'e', '', 'active', 0, 0)"
            )
        )
        for rid in ("run-a", "run-b"):
            conn.execute(
                text(
                    "INSERT INTO runs (id, project_id, experiment_id, name, status, start_time, "
                    "lifecycle, created_at, updated_at) "
                    "VALUES (:id, 'p1', 'e1', :id, 'RUNNING', 0, 'active', 0, 0)"
                ),
                {"id": rid},
            )
        conn.execute(
            text(
                "INSERT INTO metrics (run_id, key, step, timestamp, value) "
                "VALUES (:r, :k, :s, :t, :v)"
            ),
            [{"r": r, "k": k, "s": s, "t": t, "v": v} for r, k, s, t, v in ROWS],
        )


def _metric_rows(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT run_id, key, step, timestamp, value FROM metrics "
                    "ORDER BY run_id, key, step, timestamp, id"
                )
            )
        ]


def _expected(run_id: str, key: str) -> tuple[list[int], list[int], list[Any]]:
    mine = [(s, t, i, v) for i, (r, k, s, t, v) in enumerate(ROWS) if (r, k) == (run_id, key)]
    mine.sort(key=lambda p: p[:3])
    return [p[0] for p in mine], [p[1] for p in mine], [p[3] for p in mine]


def test_0008_packs_existing_points_into_chunks_and_back(fresh_url: str, tmp_path: Path) -> None:
    db = Database(fresh_url)
    cfg = db._alembic_config()
    command.upgrade(cfg, "0007")
    _fill_0007(db)
    before = _metric_rows(db)

    command.upgrade(cfg, "0008")
    with db.engine.connect() as conn:
        chunks = conn.execute(
            text("SELECT run_id, key, min_step, max_step, points FROM metric_chunks ORDER BY id")
        ).all()
        tables = set(db.engine.dialect.get_table_names(conn))
    assert "metrics" not in tables
    assert [tuple(c) for c in chunks] == [
        ("run-a", "acc", 1, 3, 4),
        ("run-a", "loss", 0, 9_999, 10_000),
        ("run-a", "loss", 10_000, 10_004, 5),
        ("run-b", "acc", -2, -2, 1),
    ]

    from shipyard.server.context import Services

    services = Services.from_settings(make_settings(tmp_path, fresh_url))
    try:
        for run_id, key in (("run-a", "loss"), ("run-a", "acc"), ("run-b", "acc")):
            h = services.tracking.get_metric_history("mig", run_id, key)
            assert (h.steps, h.timestamps, h.values) == _expected(run_id, key)
        h = services.tracking.get_metric_history("mig", "run-a", "acc")
        assert h.values == [None, 0.25, 0.5, 0.75]
        # New points land beside the converted ones, and deleting the run takes them all.
        services.tracking.log_metric_columns("mig", "run-b", ["acc"], [2.0], [-3], [1])
        assert services.tracking.get_metric_history("mig", "run-b", "acc").steps == [-3, -2]
        with services.db.write() as conn:
            conn.execute(text("DELETE FROM runs WHERE id = 'run-b'"))
    finally:
        services.close()

    command.downgrade(cfg, "0007")
    after = _metric_rows(db)
    assert after == [r for r in before if r[0] == "run-a"]
    assert any(r[4] is None for r in after) and not any(
        isinstance(r[4], float) and math.isnan(r[4]) for r in after
    )
    if fresh_url.startswith("postgresql"):
        with db.engine.connect() as conn:
            trig = conn.execute(
                text("SELECT 1 FROM pg_trigger WHERE tgname = 'runs_delete_metrics'")
            ).all()
        assert trig == [(1,)]  # 0007's delete trigger is back
    command.upgrade(cfg, "head")  # and up again, from rows the downgrade wrote
    with db.engine.connect() as conn:
        points = conn.execute(text("SELECT SUM(points) FROM metric_chunks")).scalar_one()
    assert points == len(after)
    db.dispose()
