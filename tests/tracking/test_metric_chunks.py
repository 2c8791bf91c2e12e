"""The metric history stored in chunks (``tracking/chunks.py``, table ``metric_chunks``), on SQLite
and PostgreSQL: whatever the batches, a history reads back exactly as the one-row-per-point table
gave it, ordered by step, then timestamp, then the order the points were logged in.

Every history is checked against a plain model of that rule (``_expected``), over batches built
to trip a wrong read: several chunks per key, keys interleaved in a batch (in a repeating
pattern and shuffled), steps going back across chunks, duplicate steps with tied timestamps,
NaN, None and infinities.
"""

from __future__ import annotations

import math
import random
import sys
from typing import Any

import pytest
from sqlalchemy import select

from shipyard.core.errors import InvalidArgument
from shipyard.tracking import chunks, tables
from shipyard.tracking.schemas import ExperimentCreate, RunCreate, RunStatus
from shipyard.tracking.service import RunRecord, TrackingService

BIG = sys.float_info.max
Point = tuple[str, float | None, int, int]  # key, value, step, timestamp


@pytest.fixture
def svc(services, project: str) -> TrackingService:  # type: ignore[no-untyped-def]
    services.projects.ensure_project(project)
    return services.tracking  # type: ignore[no-any-return]


@pytest.fixture
def exp_id(svc: TrackingService, project: str) -> str:
    return svc.create_experiment(project, ExperimentCreate(name="chunks")).id


def _run(svc: TrackingService, project: str, exp_id: str) -> str:
    return svc.create_run(project, RunCreate(experiment_id=exp_id)).id


def _stored(value: float | None) -> float | None:
    """What the store gives back for a logged value."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return math.copysign(BIG, value)
    return value


def _expected(logged: list[Point], key: str) -> tuple[list[int], list[int], list[Any]]:
    """The history of ``key`` by the rule: (step, timestamp, order logged)."""
    mine = [(s, t, i, _stored(v)) for i, (k, v, s, t) in enumerate(logged) if k == key]
    mine.sort(key=lambda p: (p[0], p[1], p[2]))
    return [p[0] for p in mine], [p[1] for p in mine], [p[3] for p in mine]


def _log(svc: TrackingService, project: str, rid: str, batch: list[Point]) -> None:
    keys, values, steps, timestamps = (list(c) for c in zip(*batch, strict=True))
    assert svc.log_metric_columns(project, rid, keys, values, steps, timestamps) is True


def _check(svc: TrackingService, project: str, rid: str, logged: list[Point]) -> None:
    for key in sorted({p[0] for p in logged}):
        h = svc.get_metric_history(project, rid, key)
        steps, timestamps, values = _expected(logged, key)
        assert h.steps == steps, key
        assert h.timestamps == timestamps, key
        assert h.values == values, key


def _chunk_rows(services, rid: str) -> list[Any]:  # type: ignore[no-untyped-def]
    c = tables.metric_chunks.c
    with services.db.read() as conn:
        return list(
            conn.execute(
                select(c.key, c.min_step, c.max_step, c.points)
                .where(c.run_id == rid)
                .order_by(c.id)
            ).all()
        )


def test_a_batch_of_interleaved_keys_is_one_chunk_per_key(  # type: ignore[no-untyped-def]
    services, svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    batch = [
        (f"k{j}", float(s * 10 + j), s, 1000 + s * 10 + j) for s in range(100) for j in range(3)
    ]
    _log(svc, project, rid, batch)
    assert _chunk_rows(services, rid) == [
        ("k0", 0, 99, 100),
        ("k1", 0, 99, 100),
        ("k2", 0, 99, 100),
    ]
    _check(svc, project, rid, batch)
    run = svc.get_run(project, rid)
    assert {k: (m.value, m.step) for k, m in run.metrics.items()} == {
        "k0": (990.0, 99),
        "k1": (991.0, 99),
        "k2": (992.0, 99),
    }


def test_steps_going_back_across_chunks_read_in_step_order(  # type: ignore[no-untyped-def]
    services, svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    logged: list[Point] = []
    # Three batches whose steps overlap and go back: 10..19, then 0..9, then 5..14 again.
    for start, ts in ((10, 3000), (0, 1000), (5, 2000)):
        batch = [(k, float(s) + ts / 10_000, s, ts) for s in range(start, start + 10) for k in "ab"]
        _log(svc, project, rid, batch)
        logged += batch
    rows = _chunk_rows(services, rid)
    assert [(r.key, r.min_step, r.max_step) for r in rows] == [
        ("a", 10, 19),
        ("b", 10, 19),
        ("a", 0, 9),
        ("b", 0, 9),
        ("a", 5, 14),
        ("b", 5, 14),
    ]
    _check(svc, project, rid, logged)
    h = svc.get_metric_history(project, rid, "a")
    assert h.steps[:12] == [0, 1, 2, 3, 4, 5, 5, 6, 6, 7, 7, 8]
    assert h.timestamps[5:7] == [1000, 2000]  # the same step: the earlier timestamp first
    # The latest value is the highest step's, whichever batch came last.
    assert svc.get_run(project, rid).metrics["a"].step == 19


def test_duplicate_steps_and_timestamps_keep_the_order_they_were_logged_in(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    logged: list[Point] = []
    for b in range(4):  # the same (step, timestamp) in every batch and twice within each
        batch: list[Point] = [("m", float(b * 10 + i), 7, 500) for i in range(2)]
        batch += [("m", float(b * 10 + 5), 3, 500 - b)]  # one step, timestamps going down
        _log(svc, project, rid, batch)
        logged += batch
    _check(svc, project, rid, logged)
    h = svc.get_metric_history(project, rid, "m")
    assert h.values[:4] == [35.0, 25.0, 15.0, 5.0]  # step 3, by timestamp 497..500
    assert h.values[4:] == [0.0, 1.0, 10.0, 11.0, 20.0, 21.0, 30.0, 31.0]


def test_nan_none_and_infinity_read_back_in_any_chunk(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    odd = [math.nan, None, math.inf, -math.inf, 0.5, -0.0, BIG, 1e-300]
    logged: list[Point] = []
    for b in range(3):
        batch = [(k, odd[(i + b) % len(odd)], b * 10 + i, 1) for i in range(8) for k in "xy"]
        _log(svc, project, rid, batch)
        logged += batch
    # A batch that is all NaN, and one whose every value is fine but whose sum is not.
    for batch in ([("x", math.nan, 100 + i, 1) for i in range(3)], [("y", BIG, 200, 1)] * 2):
        _log(svc, project, rid, batch)
        logged += batch
    _check(svc, project, rid, logged)
    h = svc.get_metric_history(project, rid, "x")
    assert h.values[:4] == [None, None, BIG, -BIG]
    assert svc.get_run(project, rid).metrics["y"].value == BIG


def test_shuffled_batches_match_the_model(  # type: ignore[no-untyped-def]
    services, svc: TrackingService, project: str, exp_id: str
) -> None:
    """Random batches of keys in no order, steps and timestamps up and down, some values
    missing, through the row path (``log_batch``) and the column path alike."""
    rng = random.Random(8)
    rid = _run(svc, project, exp_id)
    logged: list[Point] = []
    for b in range(12):
        batch: list[Point] = [
            (
                rng.choice(["loss", "acc", "lr", "a/b c"]),
                rng.choice([None, math.nan, rng.random()]) if rng.random() < 0.1 else rng.random(),
                rng.randint(-5, 30),
                rng.randint(0, 4),
            )
            for _ in range(rng.randint(1, 60))
        ]
        if b % 2:
            assert svc.log_batch(project, rid, metrics_=batch) is True
        else:
            _log(svc, project, rid, batch)
        logged += batch
    _check(svc, project, rid, logged)
    stored = sum(r.points for r in _chunk_rows(services, rid))
    assert stored == len(logged)
    # compare_runs reads the same histories, run by run and key by key.
    other = _run(svc, project, exp_id)
    _log(svc, project, other, [("loss", 1.0, 0, 0), ("acc", 2.0, 1, 0), ("loss", 3.0, 0, 0)])
    cmp = svc.compare_runs(project, [rid, other])
    for key, hs in cmp.histories.items():
        for h in hs:
            assert h == svc.get_metric_history(project, h.run_id, key)
    assert [h.run_id for h in cmp.histories["loss"]] == [rid, other]
    assert cmp.histories["loss"][1].values == [1.0, 3.0]


def test_a_retried_batch_adds_no_chunk(  # type: ignore[no-untyped-def]
    services, svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    args: tuple[list[Any], ...] = (["a", "b", "a"], [1.0, 2.0, 3.0], [0, 0, 1], [5, 5, 5])
    assert svc.log_metric_columns(project, rid, *args, batch_id="once") is True
    assert svc.log_metric_columns(project, rid, *args, batch_id="once") is False
    assert [(r.key, r.points) for r in _chunk_rows(services, rid)] == [("a", 2), ("b", 1)]
    assert svc.get_metric_history(project, rid, "a").values == [1.0, 3.0]


def test_a_refused_batch_stores_nothing_and_names_the_point(  # type: ignore[no-untyped-def]
    services, svc: TrackingService, project: str, exp_id: str
) -> None:
    rid = _run(svc, project, exp_id)
    for cols, field in (
        ((["a"] * 5, [1.0, 2.0, 3.0, "x", 5.0], [0, 1, 2, 3, 4], [1] * 5), "values[3]"),
        ((["a"] * 3, [1.0] * 3, [0, True, 2], [1] * 3), "steps[1]"),
        ((["a"] * 3, [1.0] * 3, [0, 1, 2**63], [1] * 3), "steps[2]"),
        ((["a"] * 3, [1.0] * 3, [0, 1, 2], [1, -1, 1]), "timestamps[1]"),
        ((["a", "", "a"], [1.0] * 3, [0, 1, 2], [1] * 3), "keys[1]"),
    ):
        with pytest.raises(InvalidArgument) as err:
            svc.log_metric_columns(project, rid, *cols)  # type: ignore[arg-type]
        assert err.value.details.get("field") == field
    assert _chunk_rows(services, rid) == []


def test_record_runs_stores_each_runs_history_in_chunks(
    svc: TrackingService, project: str, exp_id: str
) -> None:
    logged: list[Point] = [("m", 0.5, 2, 10), ("n", math.nan, 0, 10), ("m", 0.25, 1, 11)]
    logged += [("m", math.inf, 1, 11)]
    (rid,) = svc.record_runs(
        project,
        exp_id,
        [RunRecord("trial", RunStatus.FINISHED, 1, 2, metrics=logged)],  # type: ignore[arg-type]
    )
    _check(svc, project, rid, logged)
    assert svc.get_run(project, rid).metrics["m"].value == 0.5


def test_big_and_negative_steps_survive_packing() -> None:
    steps = [-(2**63), -1, 0, 2**63 - 1]
    values: list[float | None] = [None, -BIG, 0.1, BIG]
    row = chunks.chunk_row("r", "k", steps, [0, 1, 2, 2**62], values)
    assert row[:5] == ("r", "k", -(2**63), 2**63 - 1, 4)
    assert all(len(b) == 32 for b in row[5:])
    assert row[5][:8] == (-(2**63)).to_bytes(8, "little", signed=True)  # little-endian on disk
    assert chunks.merge([row[5:]]) == (steps, [0, 1, 2, 2**62], values)
