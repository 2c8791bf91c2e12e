"""Metric points belong to a live run, on SQLite and PostgreSQL (a foreign key with a cascade on
``metric_chunks``, and a lock on the run per batch): deleting a run, an experiment or a project
leaves no points behind, and a batch racing a delete of its run stores nothing.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from shipyard.core.errors import NotFound
from shipyard.tracking import tables
from shipyard.tracking.schemas import ExperimentCreate, RunCreate
from shipyard.tracking.service import TrackingService


@pytest.fixture
def svc(services, project: str) -> TrackingService:  # type: ignore[no-untyped-def]
    services.projects.ensure_project(project)
    return services.tracking  # type: ignore[no-any-return]


def _points(services, run_ids: list[str]) -> int:  # type: ignore[no-untyped-def]
    with services.db.read() as conn:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(tables.metric_chunks.c.points), 0)).where(
                    tables.metric_chunks.c.run_id.in_(run_ids)
                )
            ).scalar_one()
        )


def _logged_runs(svc: TrackingService, project: str, n: int = 2) -> tuple[str, list[str]]:
    exp = svc.create_experiment(project, ExperimentCreate(name="integrity")).id
    ids = []
    for _ in range(n):
        rid = svc.create_run(project, RunCreate(experiment_id=exp)).id
        svc.log_metric_columns(
            project, rid, ["a", "b"] * 50, [0.5] * 100, list(range(100)), [1] * 100
        )
        ids.append(rid)
    return exp, ids


def test_purging_an_experiment_removes_its_runs_points(services, svc, project) -> None:  # type: ignore[no-untyped-def]
    exp, ids = _logged_runs(svc, project)
    assert _points(services, ids) == 200
    svc.delete_experiment(project, exp)
    assert svc.purge(project, experiment_ids=[exp]).runs_purged == 2
    assert _points(services, ids) == 0


def test_deleting_a_project_removes_its_points_and_no_others(services, svc, project) -> None:  # type: ignore[no-untyped-def]
    _, ids = _logged_runs(svc, project)
    other = project + "-other"
    services.projects.ensure_project(other)
    _, others = _logged_runs(svc, other, 1)
    services.projects.delete_project(project)
    assert _points(services, ids) == 0
    assert _points(services, others) == 100


def test_a_batch_racing_the_delete_of_its_run_stores_nothing(  # type: ignore[no-untyped-def]
    services, svc, project, db_url
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: the race cannot happen there")
    _, (rid,) = _logged_runs(svc, project, 1)
    outcome: list[BaseException | bool] = []

    def log() -> None:
        try:
            outcome.append(svc.log_metric_columns(project, rid, ["late"], [1.0], [0], [1]))
        except BaseException as exc:
            outcome.append(exc)

    with services.db.write() as conn:  # the delete is in flight, not yet committed
        conn.execute(tables.runs.delete().where(tables.runs.c.id == rid))
        t = threading.Thread(target=log)
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), outcome  # the batch waits for the delete to end
    t.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], NotFound), outcome
    assert _points(services, [rid]) == 0


def test_postgres_chunks_have_a_cascading_key_and_0007s_trigger_is_gone(  # type: ignore[no-untyped-def]
    services, db_url
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    from sqlalchemy import text

    with services.db.read() as conn:
        fks = conn.execute(
            text(
                "SELECT confdeltype FROM pg_constraint "
                "WHERE conrelid = 'metric_chunks'::regclass AND contype = 'f'"
            )
        ).all()
        trig = conn.execute(
            text("SELECT tgname FROM pg_trigger WHERE tgname = 'runs_delete_metrics'")
        ).all()
    assert [f[0] for f in fks] == ["c"] and trig == []
