"""``TrackingService`` on SQLite and PostgreSQL: what does not depend on the surface.

The SDK contract (tests/sdk/test_tracking_contract.py) covers what a user does; this file pins
the service's own rules where they are easiest to reach: which value is "latest" when steps
arrive out of order, NaN, batch ids applied once, what a purge removes and what it must keep.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from shipyard.core.errors import InvalidArgument, NotFound, ShipyardError
from shipyard.tracking.schemas import (
    ExperimentCreate,
    ExperimentUpdate,
    Lifecycle,
    RunCreate,
    RunStatus,
    RunUpdate,
)
from shipyard.tracking.service import TrackingService
from shipyard.tracking.tables import metric_chunks


def _field(exc: pytest.ExceptionInfo[ShipyardError]) -> str:
    return str(exc.value.details.get("field"))


@pytest.fixture
def svc(services, project: str) -> TrackingService:
    services.projects.ensure_project(project)
    return services.tracking


@pytest.fixture
def exp_id(svc: TrackingService, project: str) -> str:
    return svc.create_experiment(project, ExperimentCreate(name="exp")).id


def _run(svc: TrackingService, project: str, exp_id: str, **kw: Any) -> str:
    return svc.create_run(project, RunCreate(experiment_id=exp_id, **kw)).id


def _blob(tmp_path: Path, data: bytes, name: str = "f.bin") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# -- latest metric ----------------------------------------------------------------------------


def test_latest_metric_with_out_of_order_steps_across_batches(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    svc.log_batch(project, rid, metrics_=[("loss", 0.3, 5, 1000)])
    svc.log_batch(project, rid, metrics_=[("loss", 0.9, 1, 5000)])  # later, but an older step
    latest = svc.get_run(project, rid).metrics["loss"]
    assert (latest.value, latest.step, latest.timestamp) == (0.3, 5, 1000)

    svc.log_batch(project, rid, metrics_=[("loss", 0.2, 5, 900)])  # same step, older time
    assert svc.get_run(project, rid).metrics["loss"].value == 0.3
    svc.log_batch(project, rid, metrics_=[("loss", 0.1, 5, 1100)])  # same step, newer time
    assert svc.get_run(project, rid).metrics["loss"].value == 0.1
    svc.log_batch(project, rid, metrics_=[("loss", 0.05, 6, 1)])  # a higher step wins outright
    latest = svc.get_run(project, rid).metrics["loss"]
    assert (latest.value, latest.step, latest.timestamp) == (0.05, 6, 1)

    h = svc.get_metric_history(project, rid, "loss")
    assert h.steps == [1, 5, 5, 5, 6]
    assert h.values == [0.9, 0.2, 0.3, 0.1, 0.05]  # by step, then by timestamp


def test_latest_metric_with_out_of_order_steps_inside_one_batch(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    svc.log_batch(
        project,
        rid,
        metrics_=[
            ("a", 1.0, 9, 10),
            ("a", 2.0, 3, 20),
            ("b", 1.0, 2, 30),
            ("b", 2.0, 2, 10),
            ("c", 1.0, 4, 50),
            ("c", 2.0, 4, 50),  # a tie on step and time: the one logged last wins
        ],
    )
    m = svc.get_run(project, rid).metrics
    assert (m["a"].value, m["a"].step) == (1.0, 9)
    assert (m["b"].value, m["b"].timestamp) == (1.0, 30)
    assert m["c"].value == 2.0


def test_latest_metric_agrees_with_the_history(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    """Whatever the arrival order, the latest value is the history's last point."""
    import random

    rng = random.Random(7)
    points = [("k", float(i), rng.randrange(50), rng.randrange(10_000)) for i in range(300)]
    rid = _run(svc, project, exp_id)
    for i in range(0, 300, 37):
        svc.log_batch(project, rid, metrics_=points[i : i + 37])
    h = svc.get_metric_history(project, rid, "k")
    latest = svc.get_run(project, rid).metrics["k"]
    assert (latest.step, latest.timestamp) == (h.steps[-1], h.timestamps[-1])
    best = max(points, key=lambda p: (p[2], p[3]))
    assert (latest.step, latest.timestamp) == (best[2], best[3])
    assert len(h.steps) == 300


# -- NaN, bad points --------------------------------------------------------------------------


def test_nan_is_stored_and_returned_as_none(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    svc.log_batch(
        project,
        rid,
        metrics_=[("loss", 0.5, 0, 1), ("loss", float("nan"), 1, 2), ("x", None, 0, 3)],
    )
    assert svc.get_metric_history(project, rid, "loss").values == [0.5, None]
    m = svc.get_run(project, rid).metrics
    assert m["loss"].value is None and m["loss"].step == 1
    assert m["x"].value is None
    cmp = svc.compare_runs(project, [rid])
    assert cmp.histories["loss"][0].values == [0.5, None]


@pytest.mark.parametrize(
    ("point", "field"),
    [
        (("", 1.0, 0, 1), "metrics[0].key"),
        (("k" * 251, 1.0, 0, 1), "metrics[0].key"),
        (("k", "abc", 0, 1), "metrics[0].value"),
        (("k", 1.0, 1.5, 1), "metrics[0].step"),
        (("k", 1.0, True, 1), "metrics[0].step"),
        (("k", 1.0, 0, -1), "metrics[0].timestamp"),
        (("k", 1.0, 0, 1.5), "metrics[0].timestamp"),
    ],
)
def test_a_bad_metric_point_is_refused_and_nothing_is_stored(
    svc: TrackingService, project: str, exp_id: str, point: tuple, field: str
) -> None:
    rid = _run(svc, project, exp_id)
    with pytest.raises(InvalidArgument) as info:
        svc.log_batch(project, rid, metrics_=[point], params=[("p", "1")])
    assert _field(info) == field
    run = svc.get_run(project, rid)
    assert run.metrics == {} and run.params == {}


def test_params_and_tags_limits(svc: TrackingService, project: str, exp_id: str) -> None:
    rid = _run(svc, project, exp_id)
    with pytest.raises(InvalidArgument) as info:
        svc.log_batch(project, rid, params=[("big", "x" * 6001)])
    assert _field(info) == "params.big"
    with pytest.raises(InvalidArgument) as info:
        svc.log_batch(project, rid, params=[("p", "1"), ("p", "2")])  # twice in one batch
    assert _field(info) == "params.p"
    with pytest.raises(InvalidArgument) as info:
        svc.log_batch(project, rid, tags=[("t", "x" * 8001)])
    assert _field(info) == "tags.t"
    svc.log_batch(project, rid, params=[("p", "x" * 6000), ("q", 3)], tags=[("t", 1.5)])
    run = svc.get_run(project, rid)
    assert run.params == {"p": "x" * 6000, "q": "3"}
    assert run.tags == {"t": "1.5"}


def test_a_batch_id_is_applied_once(
    services, svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    rows = [("m", float(i), i, i) for i in range(10)]
    assert svc.log_batch(project, rid, metrics_=rows, batch_id="b-1") is True
    assert svc.log_batch(project, rid, metrics_=rows, batch_id="b-1") is False  # a retry
    assert svc.log_batch(project, rid, metrics_=rows[:1], batch_id="b-2") is True
    assert len(svc.get_metric_history(project, rid, "m").steps) == 11
    # The same batch id on another run is another batch.
    other = _run(svc, project, exp_id)
    assert svc.log_batch(project, other, metrics_=rows, batch_id="b-1") is True
    # Two long ids sharing a 64-character prefix stay two batches.
    long_a, long_b = "x" * 64 + "a", "x" * 64 + "b"
    assert svc.log_batch(project, rid, metrics_=rows[:1], batch_id=long_a) is True
    assert svc.log_batch(project, rid, metrics_=rows[:1], batch_id=long_b) is True
    with services.db.read() as conn:
        n = conn.execute(
            select(func.sum(metric_chunks.c.points)).where(metric_chunks.c.run_id == rid)
        ).scalar_one()
    assert n == 13


# -- runs and lifecycle -----------------------------------------------------------------------


def test_status_changes_set_and_clear_end_time(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    assert svc.get_run(project, rid).end_time is None
    done = svc.update_run(project, rid, RunUpdate(status=RunStatus.FINISHED))
    assert done.status == RunStatus.FINISHED and done.end_time is not None
    resumed = svc.update_run(project, rid, RunUpdate(status=RunStatus.RUNNING))
    assert resumed.status == RunStatus.RUNNING and resumed.end_time is None
    renamed = svc.update_run(project, rid, RunUpdate(name="renamed"))
    assert renamed.name == "renamed" and renamed.status == RunStatus.RUNNING


def test_a_deleted_run_refuses_logging_until_restored(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    svc.log_batch(project, rid, metrics_=[("m", 1.0, 0, 1)])
    svc.delete_run(project, rid)
    with pytest.raises(InvalidArgument) as info:
        svc.log_batch(project, rid, metrics_=[("m", 2.0, 1, 2)])
    assert _field(info) == "run_id"
    # What was logged stays readable while the run is deleted.
    assert svc.get_metric_history(project, rid, "m").values == [1.0]
    svc.restore_run(project, rid)
    svc.log_batch(project, rid, metrics_=[("m", 2.0, 1, 2)])
    assert svc.get_metric_history(project, rid, "m").values == [1.0, 2.0]


def test_a_parent_run_must_be_in_the_same_project(
    svc: TrackingService, services, project: str, exp_id: str
) -> None:
    other_project = f"{project}-o"
    services.projects.ensure_project(other_project)
    other_exp = svc.create_experiment(other_project, ExperimentCreate(name="exp")).id
    foreign = _run(svc, other_project, other_exp)
    with pytest.raises(NotFound) as info:
        _run(svc, project, exp_id, parent_run_id=foreign)
    assert _field(info) == "parent_run_id"
    with pytest.raises(NotFound) as info:
        _run(svc, project, other_exp)  # nor can an experiment of another project hold it
    assert _field(info) == "experiment_id"


def test_experiment_tags_and_description_update(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    svc.update_experiment(project, exp_id, ExperimentUpdate(tags={"a": "1", "b": "2"}))
    exp = svc.update_experiment(project, exp_id, ExperimentUpdate(description="d", tags={"a": "3"}))
    assert exp.tags == {"a": "3", "b": "2"}
    assert exp.description == "d"
    assert exp.name == "exp"


def test_restore_brings_back_only_runs_deleted_with_the_experiment(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    with_exp = _run(svc, project, exp_id)
    before = _run(svc, project, exp_id)
    svc.delete_run(project, before)
    svc.delete_experiment(project, exp_id)
    # Deleting again changes nothing (the first deletion time is what restore matches).
    first = svc.get_experiment(project, exp_id).deleted_at
    assert svc.delete_experiment(project, exp_id).deleted_at == first
    svc.restore_experiment(project, exp_id)
    assert svc.get_run(project, with_exp).lifecycle == Lifecycle.active
    assert svc.get_run(project, before).lifecycle == Lifecycle.deleted
    assert svc.restore_experiment(project, exp_id).lifecycle == Lifecycle.active  # idempotent


# -- purge and garbage collection -------------------------------------------------------------


def test_purge_keeps_a_blob_that_a_deleted_but_unpurged_run_still_holds(
    svc: TrackingService, project: str, exp_id: str, tmp_path: Path
) -> None:
    data = os.urandom(2000)
    digest = hashlib.sha256(data).hexdigest()
    f = _blob(tmp_path, data)
    a, b = _run(svc, project, exp_id), _run(svc, project, exp_id)
    svc.log_artifact(project, a, f)
    svc.log_artifact(project, b, f)
    svc.delete_run(project, a)
    svc.delete_run(project, b)
    report = svc.purge(project, run_ids=[a])
    assert (report.runs_purged, report.blobs_deleted) == (1, 0)
    assert svc.store.exists(digest)  # b can still be restored, with its bytes
    svc.restore_run(project, b)
    assert svc.store.read_bytes(digest) == data
    svc.delete_run(project, b)
    report = svc.purge(project, run_ids=[b])
    assert (report.runs_purged, report.blobs_deleted, report.bytes_freed) == (1, 1, len(data))
    assert not svc.store.exists(digest)


def test_purge_keeps_a_blob_shared_with_another_project(
    svc: TrackingService, services, project: str, exp_id: str, tmp_path: Path
) -> None:
    data = os.urandom(1500)
    digest = hashlib.sha256(data).hexdigest()
    f = _blob(tmp_path, data)
    other = f"{project}-o"
    services.projects.ensure_project(other)
    theirs = _run(svc, other, svc.create_experiment(other, ExperimentCreate(name="e")).id)
    mine = _run(svc, project, exp_id)
    svc.log_artifact(project, mine, f)
    svc.log_artifact(other, theirs, f)
    svc.delete_run(project, mine)
    assert svc.purge(project, older_than_s=0).blobs_deleted == 0
    assert svc.store.exists(digest)
    # A purge scoped to one project never touches another's deleted runs.
    svc.delete_run(other, theirs)
    assert svc.purge(project, run_ids=[theirs]).runs_purged == 0
    assert svc.get_run(other, theirs).lifecycle == Lifecycle.deleted
    assert svc.purge(other, run_ids=[theirs]).blobs_deleted == 1
    assert not svc.store.exists(digest)


def test_purge_removes_every_row_of_a_run(
    services, svc: TrackingService, project: str, exp_id: str, tmp_path: Path
) -> None:
    from shipyard.tracking import tables

    rid = _run(svc, project, exp_id, tags={"t": "1"})
    svc.log_batch(project, rid, metrics_=[("m", 1.0, 0, 1)], params=[("p", "1")], batch_id="once")
    svc.log_artifact(project, rid, _blob(tmp_path, os.urandom(100)))
    from shipyard.tracking.schemas import DatasetInput

    svc.log_inputs(project, rid, [DatasetInput(name="d", digest="abc")])
    svc.delete_run(project, rid)
    assert svc.purge(project, run_ids=[rid]).runs_purged == 1
    with services.db.read() as conn:
        for table in (
            tables.metric_chunks,
            tables.latest_metrics,
            tables.run_params,
            tables.run_tags,
            tables.artifacts,
            tables.run_inputs,
            tables.metric_batches,
        ):
            n = conn.execute(
                select(func.count()).select_from(table).where(table.c.run_id == rid)
            ).scalar_one()
            assert n == 0, table.name
    with pytest.raises(NotFound):
        svc.get_run(project, rid)


def test_purge_of_an_experiment_takes_its_runs_and_frees_their_blobs(
    svc: TrackingService, project: str, exp_id: str, tmp_path: Path
) -> None:
    data = os.urandom(1200)
    digest = hashlib.sha256(data).hexdigest()
    runs = [_run(svc, project, exp_id) for _ in range(3)]
    svc.log_artifact(project, runs[0], _blob(tmp_path, data))
    svc.delete_run(project, runs[2])  # deleted on its own before: still the experiment's
    svc.delete_experiment(project, exp_id)
    report = svc.purge(project, experiment_ids=[exp_id])
    assert (report.experiments_purged, report.runs_purged) == (1, 3)
    assert (report.blobs_deleted, report.bytes_freed) == (1, len(data))
    assert not svc.store.exists(digest)
    with pytest.raises(NotFound):
        svc.get_experiment(project, exp_id)


def test_purge_by_age_leaves_recent_deletions_and_active_things(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    active = _run(svc, project, exp_id)
    deleted = _run(svc, project, exp_id)
    svc.delete_run(project, deleted)
    assert svc.purge(project, older_than_s=3600).runs_purged == 0
    assert svc.purge(project).runs_purged == 0  # the default restore window
    report = svc.purge(project, older_than_s=0)
    assert (report.runs_purged, report.experiments_purged) == (1, 0)
    assert svc.get_run(project, active).lifecycle == Lifecycle.active
    assert svc.purge(project, older_than_s=0).runs_purged == 0  # nothing left: a no-op


def test_purge_when_a_blob_is_already_gone_from_the_store(
    svc: TrackingService, project: str, exp_id: str, tmp_path: Path
) -> None:
    data = os.urandom(700)
    digest = hashlib.sha256(data).hexdigest()
    rid = _run(svc, project, exp_id)
    svc.log_artifact(project, rid, _blob(tmp_path, data))
    svc.store.delete(digest)  # lost by hand, or by an earlier interrupted purge
    svc.delete_run(project, rid)
    report = svc.purge(project, run_ids=[rid])
    assert (report.runs_purged, report.blobs_deleted, report.bytes_freed) == (1, 0, 0)


def test_purging_a_run_in_a_live_experiment_leaves_the_experiment(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    svc.delete_run(project, rid)
    report = svc.purge(project, run_ids=[rid], experiment_ids=[exp_id])  # exp is not deleted
    assert (report.runs_purged, report.experiments_purged) == (1, 0)
    assert svc.get_experiment(project, exp_id).lifecycle == Lifecycle.active


# -- compare ----------------------------------------------------------------------------------


def test_compare_refuses_too_few_or_too_many_runs(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        svc.compare_runs(project, [])
    assert _field(info) == "run_ids"
    rid = _run(svc, project, exp_id)
    with pytest.raises(InvalidArgument) as info:
        svc.compare_runs(project, [rid] * 101)
    assert _field(info) == "run_ids"
    # The same id twice is one run.
    assert [r.id for r in svc.compare_runs(project, [rid, rid]).runs] == [rid]
