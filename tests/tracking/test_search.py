"""The run search language and its query, on SQLite and PostgreSQL.

One small world of runs is written straight into the tables once per backend; each test asks a
search and asserts the exact runs, in order, by their labels.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from shipyard.core.db import Database
from shipyard.core.errors import InvalidArgument
from shipyard.projects.tables import projects
from shipyard.tracking.search import (
    MAX_KEYS,
    Comparison,
    OrderKey,
    build_search_query,
    parse_filter,
    parse_order_by,
)
from shipyard.tracking.tables import experiments, latest_metrics, run_params, run_tags, runs

# label: (number, experiment, status, start_time, end_time, lifecycle, parent, params, tags,
# metrics). The number orders the ids, so "id DESC" ties are predictable. None as a metric is NaN.
RUNS: dict[str, tuple[Any, ...]] = {
    "alpha": (
        1, "e1", "FINISHED", 1000, 2000, "active", None,
        {"model": "lr", "lr": "0.1", "lr.init": "0.5", "epochs": "10"},
        {"team": "Vision", "data set": "mnist", "note": "100x_sure"},
        {"acc": 0.9, "loss": 0.1, "val loss": 0.2},
    ),
    "Beta": (
        2, "e1", "FINISHED", 2000, 3000, "active", None,
        {"model": "rf", "lr": "0.01", "epochs": "9"},
        {"team": "vision"},
        {"acc": 0.7, "loss": 0.3},
    ),
    "gamma": (
        3, "e1", "FAILED", 3000, 3500, "active", None,
        {"model": "lr", "lr": "0.001"},
        {"team": "nlp", "data set": "MNIST-large", "note": "a*b?[c]"},
        {"acc": 0.5, "loss": None},
    ),
    "delta": (
        4, "e2", "RUNNING", 4000, None, "active", "alpha",
        {"model": "xgb"},
        {"note": "axxbyc"},
        {"acc": -1.5},
    ),
    "alpha_2": (
        5, "e2", "KILLED", 5000, 5500, "active", None,
        {"model": "lr"},
        {"team": "Vision"},
        {"loss": 0.05},
    ),
    "epsilon": (
        6, "e1", "FINISHED", 3000, 4000, "deleted", None,
        {"model": "lr"},
        {},
        {"acc": 0.7},
    ),
    "zeta": (
        7, "e2", "FINISHED", 3000, 3100, "active", None,
        {"model": "lr"},
        {"note": "100%_sure"},
        {"acc": 0.7},
    ),
}  # fmt: skip
# In the other project, so never seen by a search of the first one.
OTHER = ("q-alpha", 8, "e3", {"model": "lr"}, {"acc": 0.99})

DEFAULT_ORDER = ["alpha_2", "delta", "zeta", "gamma", "Beta", "alpha"]


@dataclass
class World:
    db: Database
    project: str
    other_project: str
    experiments: dict[str, str]
    ids: dict[str, str]  # label -> run id

    def search(
        self,
        filter: str | None = None,
        order_by: list[str] | None = None,
        *,
        project: str | None = None,
        experiments: list[str] | None = None,
        lifecycle: str = "active",
        limit: int = 100,
        offset: int = 0,
    ) -> list[str]:
        query = build_search_query(
            project_id=project or self.project,
            experiment_ids=None
            if experiments is None
            else [self.experiments.get(e, e) for e in experiments],
            filter=filter,
            order_by=order_by,
            lifecycle=lifecycle,
            limit=limit,
            offset=offset,
        )
        labels = {v: k for k, v in self.ids.items()}
        with self.db.read() as conn:
            return [labels[i] for i in conn.execute(query).scalars()]


def _write_world(db: Database) -> World:
    tok = uuid.uuid4().hex[:8]
    pid, qid = f"p{tok}", f"q{tok}"
    exps = {"e1": f"{tok}e1", "e2": f"{tok}e2", "e3": f"{tok}e3"}
    ids = {label: f"{tok}r{spec[0]:02d}" for label, spec in RUNS.items()}
    ids[OTHER[0]] = f"{tok}r{OTHER[1]:02d}"
    stamp = {"created_at": 0, "updated_at": 0}
    with db.write() as conn:
        conn.execute(
            insert(projects),
            [{"id": pid, "name": pid, **stamp}, {"id": qid, "name": qid, **stamp}],
        )
        conn.execute(
            insert(experiments),
            [
                {"id": exps[e], "project_id": qid if e == "e3" else pid, "name": e, **stamp}
                for e in exps
            ],
        )
        run_rows, param_rows, tag_rows, metric_rows = [], [], [], []
        specs = [(label, *spec) for label, spec in RUNS.items()]
        specs.append((OTHER[0], OTHER[1], "e3", "FINISHED", 1000, 2000, "active", None,
                      OTHER[3], {}, OTHER[4]))  # fmt: skip
        for label, _n, exp, status, start, end, lifecycle, parent, params, tags, mets in specs:
            rid = ids[label]
            run_rows.append(
                {
                    "id": rid,
                    "project_id": qid if exp == "e3" else pid,
                    "experiment_id": exps[exp],
                    "parent_run_id": ids[parent] if parent else None,
                    "name": label.removeprefix("q-"),
                    "status": status,
                    "start_time": start,
                    "end_time": end,
                    "lifecycle": lifecycle,
                    **stamp,
                }
            )
            param_rows += [{"run_id": rid, "key": k, "value": v} for k, v in params.items()]
            tag_rows += [{"run_id": rid, "key": k, "value": v} for k, v in tags.items()]
            metric_rows += [
                {"run_id": rid, "key": k, "value": v, "step": 0, "timestamp": 0}
                for k, v in mets.items()
            ]
        conn.execute(insert(runs), run_rows)
        conn.execute(insert(run_params), param_rows)
        conn.execute(insert(run_tags), tag_rows)
        conn.execute(insert(latest_metrics), metric_rows)
    return World(db, pid, qid, exps, ids)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('search') / 'shipyard.db'}"
    else:
        # conftest's pg_url: a fresh database with a random name, dropped after the session.
        url = request.getfixturevalue("pg_url")
    db = Database(url)
    db.ensure_schema(True)
    yield _write_world(db)
    db.dispose()


# -- parsing ----------------------------------------------------------------------------------


def test_empty_filter_has_no_comparisons() -> None:
    assert parse_filter(None) == []
    assert parse_filter("  \n ") == []


def test_parse_filter_reads_each_part() -> None:
    text = (
        "metrics.`val loss` <= -1.5e-3 and params.\"lr.init\" = 'it''s' AND tags.team != \"V\" "
        "AND run_name LIKE 'a%' AND attributes.id IN ('x', 'y') AND status not in ('KILLED') "
        "AND start_time >= '1970-01-01T00:00:01.001Z' AND end_time < 5 AND params.epochs = 10 "
        "AND METRICS.acc == 1 AND metric.acc <> 2 AND param.p.q/r-s = 'x'"
    )
    assert parse_filter(text) == [
        Comparison("metric", "val loss", "<=", -1.5e-3),
        Comparison("param", "lr.init", "=", "it's"),
        Comparison("tag", "team", "!=", "V"),
        Comparison("attribute", "name", "LIKE", "a%"),
        Comparison("attribute", "run_id", "IN", ("x", "y")),
        Comparison("attribute", "status", "NOT IN", ("KILLED",)),
        Comparison("attribute", "start_time", ">=", 1001),
        Comparison("attribute", "end_time", "<", 5),
        Comparison("param", "epochs", "=", "10"),
        Comparison("metric", "acc", "=", 1),
        Comparison("metric", "acc", "!=", 2),
        Comparison("param", "p.q/r-s", "=", "x"),
    ]


def test_parse_filter_without_spaces_around_operators() -> None:
    assert parse_filter("metrics.acc>=-1 AND params.m='x'") == [
        Comparison("metric", "acc", ">=", -1),
        Comparison("param", "m", "=", "x"),
    ]


def test_parse_order_by() -> None:
    assert parse_order_by(None) == []
    assert parse_order_by(
        ["metrics.acc DESC", "params.lr", "start_time asc", "run_name", "attributes.id DESC",
         "tags.`my tag`  Desc "]
    ) == [
        OrderKey("metric", "acc", False),
        OrderKey("param", "lr", True),
        OrderKey("attribute", "start_time", True),
        OrderKey("attribute", "name", True),
        OrderKey("attribute", "run_id", False),
        OrderKey("tag", "my tag", False),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "position", "token", "says"),
    [
        ("metrics.acc >", 13, "", "expected a quoted string or a number"),
        ("metrics.acc > 0.5 OR params.model = 'lr'", 18, "OR", "OR is not supported"),
        ("foo = 1", 0, "foo", "unknown attribute 'foo': expected one of status, name"),
        ("attributes.bogus = 'x'", 11, "bogus", "unknown attribute 'bogus'"),
        ("bogus.x = 1", 0, "bogus", "unknown prefix 'bogus'"),
        ("metrics = 1", 0, "metrics", "expected '.' and a key after 'metrics'"),
        ("params.lr < 5", 12, "5", "quote the value"),
        ("params.model = lr", 15, "lr", "quote text values"),
        ("metrics.acc > 'high'", 14, "'high'", "expected a number"),
        ("metrics.acc LIKE '0.%'", 17, "'0.%'", "LIKE works on strings"),
        ("start_time ILIKE '1%'", 17, "'1%'", "ILIKE works on strings"),
        ("params.lr ILIKE 5", 16, "5", "needs a quoted pattern"),
        ("metrics.`val loss > 1", 8, "`val", "unterminated quoted key"),
        ("status = 'FINISHED", 9, "'FINISHED", "unterminated string"),
        ("metrics.acc ~ 1", 12, "~", "expected an operator"),
        ("params.model NOT LIKE 'x'", 17, "LIKE", "expected IN after NOT"),
        ("metrics.acc > 1 AND", 19, "", "expected a comparison after AND"),
        ("metrics.acc > 1 AND  ", 21, "", "expected a comparison after AND"),
        ("metrics.acc > 1 metrics.loss < 2", 16, "metrics.loss", "expected AND"),
        ("params.a:b = 'x'", 8, ":", "quote a key that contains it"),
        ("params.model IN 'lr'", 16, "'lr'", "expected '('"),
        ("params.model IN ()", 17, ")", "at least one value"),
        ("params.model IN ('a' 'b')", 21, "'b')", "expected ',' or ')'"),
        ("start_time > 'yesterday'", 13, "'yesterday'", "ISO 8601"),
        ("metrics.acc > 0.5x", 14, "0.5x", "expected a quoted string or a number"),
        ("metrics.acc > 1e999", 14, "1e999", "finite"),
        ("tags.t LIKE 'a\\'", 12, "'a\\'", "lone backslash"),
        ("= 1", 0, "=", "expected metrics.<key>"),
    ],
)
def test_parse_errors_name_what_was_expected_and_where(
    text: str, position: int, token: str, says: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_filter(text)
    err = info.value
    assert err.details == {"field": "filter", "position": position, "token": token}
    assert err.message.startswith("filter: ")
    assert says in err.message
    assert f"at position {position}" in err.message


@pytest.mark.parametrize(
    ("items", "index", "position", "token", "says"),
    [
        (["metrics.acc DOWN"], 0, 12, "DOWN", "expected ASC, DESC"),
        (["name", "bogus"], 1, 0, "bogus", "unknown attribute 'bogus'"),
        (["metrics.acc DESC extra"], 0, 17, "extra", "expected the end of the item"),
        ([""], 0, 0, "", "expected metrics.<key>"),
        (["metrics.acc > 1"], 0, 12, ">", "expected ASC, DESC"),
    ],
)
def test_order_by_errors(
    items: list[str], index: int, position: int, token: str, says: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_order_by(items)
    err = info.value
    assert err.details == {
        "field": "order_by",
        "index": index,
        "position": position,
        "token": token,
    }
    assert says in err.message


def test_too_many_keys_is_refused() -> None:
    text = " AND ".join(f"metrics.m{i} > 0" for i in range(MAX_KEYS + 1))
    with pytest.raises(InvalidArgument, match="at most"):
        build_search_query(
            project_id="p", experiment_ids=None, filter=text, order_by=None, limit=1, offset=0
        )


def test_bad_filter_lifecycle_and_offset_are_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        build_search_query(
            project_id="p", experiment_ids=None, filter="acc > 1", order_by=None, limit=1, offset=0
        )
    assert info.value.details == {"field": "filter", "position": 0, "token": "acc"}
    kw: dict[str, Any] = {"project_id": "p", "experiment_ids": None, "filter": None}
    with pytest.raises(InvalidArgument) as info:
        build_search_query(**kw, order_by=None, lifecycle="gone", limit=1, offset=0)
    assert info.value.details["field"] == "lifecycle"
    with pytest.raises(InvalidArgument) as info:
        build_search_query(**kw, order_by=None, limit=1, offset=-1)
    assert info.value.details["field"] == "offset"


# -- searching --------------------------------------------------------------------------------


def test_no_filter_is_default_order(world: World) -> None:
    assert world.search() == DEFAULT_ORDER
    assert world.search("", []) == DEFAULT_ORDER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.acc > 0.5", ["zeta", "Beta", "alpha"]),
        ("metrics.acc >= 0.5", ["zeta", "gamma", "Beta", "alpha"]),
        ("metrics.acc < 0.5", ["delta"]),
        ("metrics.acc <= 0.5", ["delta", "gamma"]),
        ("metrics.acc = 0.7", ["zeta", "Beta"]),
        ("metrics.acc == 0.7", ["zeta", "Beta"]),
        ("metrics.acc > 5e-1", ["zeta", "Beta", "alpha"]),
        ("metrics.acc > -2", ["delta", "zeta", "gamma", "Beta", "alpha"]),
        ("metrics.acc = -1.5", ["delta"]),
        # Runs without the metric never match, not even !=.
        ("metrics.acc != 0.7", ["delta", "gamma", "alpha"]),
        ("metrics.acc IN (0.9, -1.5)", ["delta", "alpha"]),
        ("metrics.acc NOT IN (0.7, 0.9)", ["delta", "gamma"]),
        # gamma's loss is NaN: it matches no comparison.
        ("metrics.loss != 0.3", ["alpha_2", "alpha"]),
        ("metrics.loss > -1", ["alpha_2", "Beta", "alpha"]),
        ("metrics.`val loss` < 1", ["alpha"]),
        ('metrics."val loss" < 1', ["alpha"]),
        ("metrics.missing > 0", []),
    ],
)
def test_metric_comparisons(world: World, text: str, expected: list[str]) -> None:
    assert world.search(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params.model = 'lr'", ["alpha_2", "zeta", "gamma", "alpha"]),
        ('params.model = "lr"', ["alpha_2", "zeta", "gamma", "alpha"]),
        ("params.model != 'lr'", ["delta", "Beta"]),
        ("params.model IN ('rf', \"xgb\")", ["delta", "Beta"]),
        ("params.model NOT IN ('lr')", ["delta", "Beta"]),
        # Strings compare character by character.
        ("params.lr < '0.01'", ["gamma"]),
        ("params.lr >= '0.01'", ["Beta", "alpha"]),
        ("params.lr <= '0.01'", ["gamma", "Beta"]),
        ("params.lr > '0.01'", ["alpha"]),
        ("params.epochs > '10'", ["Beta"]),
        # An unquoted number compares with its text as written.
        ("params.epochs = 10", ["alpha"]),
        ("params.epochs = 10.0", []),
        ("params.epochs IN (9, 10)", ["Beta", "alpha"]),
        ("params.\"lr.init\" = '0.5'", ["alpha"]),
        ("params.`lr.init` = '0.5'", ["alpha"]),
        ("params.lr.init = '0.5'", ["alpha"]),
        ("params.model LIKE 'l%'", ["alpha_2", "zeta", "gamma", "alpha"]),
        ("params.model like 'L%'", []),
        ("params.model ilike 'L%'", ["alpha_2", "zeta", "gamma", "alpha"]),
    ],
)
def test_param_comparisons(world: World, text: str, expected: list[str]) -> None:
    assert world.search(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tags.team = 'Vision'", ["alpha_2", "alpha"]),
        ("tags.team != 'Vision'", ["gamma", "Beta"]),
        ("tags.team LIKE 'V%'", ["alpha_2", "alpha"]),
        ("tags.team ILIKE 'V%'", ["alpha_2", "Beta", "alpha"]),
        ("tags.team ILIKE 'VISION'", ["alpha_2", "Beta", "alpha"]),
        ("tags.team LIKE '%i_ion'", ["alpha_2", "Beta", "alpha"]),
        ("tags.team LIKE 'vision'", ["Beta"]),
        ("tags.`data set` ILIKE '%mnist%'", ["gamma", "alpha"]),
        ("tags.`data set` LIKE '%mnist%'", ["alpha"]),
        # % and _ are wildcards; a backslash makes them literal.
        ("tags.note LIKE '100%'", ["zeta", "alpha"]),
        ("tags.note LIKE '100\\%%'", ["zeta"]),
        ("tags.note LIKE '100_\\_sure'", ["zeta", "alpha"]),
        ("tags.note LIKE '100\\%\\_sure'", ["zeta"]),
        ("tags.note ILIKE '100\\%\\_SURE'", ["zeta"]),
        # GLOB's own wildcards are plain characters in a LIKE pattern.
        ("tags.note LIKE 'a*b?[c]'", ["gamma"]),
        ("tags.note LIKE 'a%'", ["delta", "gamma"]),
        ("tags.note LIKE 'a%]'", ["gamma"]),
        ("tags.team IN ('nlp', 'vision')", ["gamma", "Beta"]),
        ("tags.team NOT IN ('nlp', 'vision')", ["alpha_2", "alpha"]),
    ],
)
def test_tag_comparisons(world: World, text: str, expected: list[str]) -> None:
    assert world.search(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status = 'FINISHED'", ["zeta", "Beta", "alpha"]),
        ("Status = 'FINISHED'", ["zeta", "Beta", "alpha"]),
        ("attributes.status IN ('FAILED', 'KILLED')", ["alpha_2", "gamma"]),
        ("status != 'RUNNING'", ["alpha_2", "zeta", "gamma", "Beta", "alpha"]),
        ("status = 'finished'", []),
        ("name = 'alpha'", ["alpha"]),
        ("run_name LIKE 'alpha%'", ["alpha_2", "alpha"]),
        ("name LIKE 'alpha_%'", ["alpha_2"]),
        ("name LIKE 'beta'", []),
        ("name ILIKE 'beta'", ["Beta"]),
        ("attr.name < 'alpha'", ["Beta"]),
        ("start_time >= 3000", ["alpha_2", "delta", "zeta", "gamma"]),
        ("start_time < '1970-01-01T00:00:03Z'", ["Beta", "alpha"]),
        ("start_time = '1970-01-01T01:00:03+01:00'", ["zeta", "gamma"]),
        ("start_time <= '1970-01-01 00:00:02'", ["Beta", "alpha"]),
        ("start_time IN (1000, '1970-01-01T00:00:02Z')", ["Beta", "alpha"]),
        ("end_time > 3000", ["alpha_2", "zeta", "gamma"]),
        # A running run has no end_time: it matches no comparison on it.
        ("end_time != 0", ["alpha_2", "zeta", "gamma", "Beta", "alpha"]),
        ("experiment_id = '{e2}'", ["alpha_2", "delta", "zeta"]),
        ("attributes.experiment_id != '{e2}'", ["gamma", "Beta", "alpha"]),
        ("run_id = '{alpha}'", ["alpha"]),
        ("id IN ('{alpha}', '{zeta}', '{q-alpha}')", ["zeta", "alpha"]),
        ("attributes.run_id NOT IN ('{alpha}', '{zeta}')", ["alpha_2", "delta", "gamma", "Beta"]),
        ("parent_run_id = '{alpha}'", ["delta"]),
        ("parent_run_id != 'nobody'", ["delta"]),
    ],
)
def test_attribute_comparisons(world: World, text: str, expected: list[str]) -> None:
    names = {**world.ids, **world.experiments}
    assert world.search(text.format(**names)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.acc > 0.5 AND params.model = 'lr'", ["zeta", "alpha"]),
        ("metrics.acc > 0.5 and params.model = 'lr' And tags.team ILIKE 'vision'", ["alpha"]),
        ("metrics.acc > 0 AND metrics.acc < 0.8", ["zeta", "gamma", "Beta"]),
        ("params.model = 'lr' AND status = 'FINISHED' AND start_time > 1000", ["zeta"]),
        ("metrics.loss < 1 AND metrics.acc > 0", ["Beta", "alpha"]),
        ("  metrics.acc>0.5\n\tAND\nparams.model='lr'  ", ["zeta", "alpha"]),
    ],
)
def test_and_chains(world: World, text: str, expected: list[str]) -> None:
    assert world.search(text) == expected


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        # Ties (Beta and zeta at 0.7) fall back to start_time DESC; alpha_2 lacks acc: last.
        (["metrics.acc DESC"], ["alpha", "zeta", "Beta", "gamma", "delta", "alpha_2"]),
        (["metrics.acc ASC"], ["delta", "gamma", "zeta", "Beta", "alpha", "alpha_2"]),
        (["metrics.acc"], ["delta", "gamma", "zeta", "Beta", "alpha", "alpha_2"]),
        # NaN (gamma) and missing (delta, zeta) sort last in either direction, default order.
        (["metrics.loss ASC"], ["alpha_2", "alpha", "Beta", "delta", "zeta", "gamma"]),
        (["metrics.loss DESC"], ["Beta", "alpha", "alpha_2", "delta", "zeta", "gamma"]),
        (["params.lr"], ["gamma", "Beta", "alpha", "alpha_2", "delta", "zeta"]),
        (["params.lr DESC"], ["alpha", "Beta", "gamma", "alpha_2", "delta", "zeta"]),
        # Code-point order on both backends: "Vision" < "nlp" < "vision".
        (["tags.team"], ["alpha_2", "alpha", "gamma", "Beta", "delta", "zeta"]),
        (["tags.team DESC"], ["Beta", "gamma", "alpha_2", "alpha", "delta", "zeta"]),
        (["name"], ["Beta", "alpha", "alpha_2", "delta", "gamma", "zeta"]),
        (["run_name DESC"], ["zeta", "gamma", "delta", "alpha_2", "alpha", "Beta"]),
        # start_time ties (zeta, gamma) fall back to id DESC.
        (["start_time ASC"], ["alpha", "Beta", "zeta", "gamma", "delta", "alpha_2"]),
        (["start_time DESC"], DEFAULT_ORDER),
        (["end_time DESC"], ["alpha_2", "gamma", "zeta", "Beta", "alpha", "delta"]),
        (["end_time ASC"], ["alpha", "Beta", "zeta", "gamma", "alpha_2", "delta"]),
        (["status", "metrics.acc DESC"], ["gamma", "alpha", "zeta", "Beta", "alpha_2", "delta"]),
        (["id DESC"], ["zeta", "alpha_2", "delta", "gamma", "Beta", "alpha"]),
        (["attributes.run_id"], ["alpha", "Beta", "gamma", "delta", "alpha_2", "zeta"]),
        (["parent_run_id", "name"], ["delta", "Beta", "alpha", "alpha_2", "gamma", "zeta"]),
    ],
)
def test_order_by(world: World, order_by: list[str], expected: list[str]) -> None:
    assert world.search(order_by=order_by) == expected


def test_order_by_a_filtered_key(world: World) -> None:
    assert world.search("metrics.acc > 0", ["metrics.acc"]) == ["gamma", "zeta", "Beta", "alpha"]
    assert world.search("params.model = 'lr'", ["metrics.acc DESC", "params.model"]) == [
        "alpha",
        "zeta",
        "gamma",
        "alpha_2",
    ]
    assert world.search("metrics.acc > 0.5", ["params.lr"]) == ["Beta", "alpha", "zeta"]


@pytest.mark.parametrize(
    "order_by", [None, ["metrics.acc DESC"], ["params.lr"], ["name"], ["end_time"]]
)
def test_pages_cover_the_whole_list(world: World, order_by: list[str] | None) -> None:
    whole = world.search(order_by=order_by)
    pages = [world.search(order_by=order_by, limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 2, 0]
    assert [label for page in pages for label in page] == whole


def test_limit_and_offset(world: World) -> None:
    assert world.search(limit=2) == ["alpha_2", "delta"]
    assert world.search(limit=3, offset=1) == ["delta", "zeta", "gamma"]
    assert world.search(limit=0) == []
    assert world.search(limit=-1) == DEFAULT_ORDER
    assert world.search(limit=-1, offset=4) == ["Beta", "alpha"]
    assert world.search("metrics.acc > 0", limit=2, offset=2) == ["Beta", "alpha"]


def test_count_of_all_matches(world: World) -> None:
    # What the service does for a total: no limit, no order, counted in a subquery.
    query = build_search_query(
        project_id=world.project,
        experiment_ids=None,
        filter="params.model = 'lr'",
        order_by=["metrics.acc DESC"],
        limit=-1,
        offset=0,
    )
    counted = select(func.count()).select_from(query.order_by(None).limit(None).subquery())
    with world.db.read() as conn:
        assert conn.execute(counted).scalar_one() == 4


def test_lifecycle(world: World) -> None:
    assert world.search(lifecycle="deleted") == ["epsilon"]
    assert world.search(lifecycle="all") == [
        "alpha_2",
        "delta",
        "zeta",
        "epsilon",
        "gamma",
        "Beta",
        "alpha",
    ]
    assert world.search("metrics.acc = 0.7", lifecycle="all") == ["zeta", "epsilon", "Beta"]
    assert world.search("metrics.acc = 0.7") == ["zeta", "Beta"]


def test_experiment_scope(world: World) -> None:
    assert world.search(experiments=["e2"]) == ["alpha_2", "delta", "zeta"]
    assert world.search(experiments=["e1"]) == ["gamma", "Beta", "alpha"]
    assert world.search(experiments=["e1", "e2"]) == DEFAULT_ORDER
    assert world.search("metrics.acc > 0", experiments=["e2"]) == ["zeta"]
    assert world.search(experiments=[]) == []
    # Another project's experiment finds nothing here.
    assert world.search(experiments=["e3"]) == []


def test_project_scope(world: World) -> None:
    assert world.search("name = 'alpha'") == ["alpha"]
    assert world.search(project=world.other_project) == ["q-alpha"]
    assert world.search("metrics.acc > 0.95", project=world.other_project) == ["q-alpha"]
    assert world.search("metrics.acc > 0.95") == []
    assert world.search(project="no-such-project") == []


# -- scale ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_search_at_100k_runs(tmp_path: Path) -> None:
    """100,000 runs with 5 params and 5 metrics each on SQLite; prints the median query time.

    The bound is loose on purpose: timing claims live in bench/, this guards against a plan that
    scans everything.
    """
    n = 100_000
    db = Database(f"sqlite:///{tmp_path / 'big.db'}")
    db.ensure_schema(True)
    rng = random.Random(42)
    models = ["lr", "rf", "xgb", "mlp", "svm"]
    rows = [
        (f"r{i:08d}", 1_700_000_000_000 + (i // 3) * 1000, rng.choice(models), rng.random())
        for i in range(n)
    ]
    started = time.perf_counter()
    with db.write() as conn:
        conn.exec_driver_sql("PRAGMA cache_size = -262144")  # 256 MiB, for the index builds
        conn.execute(insert(projects).values(id="p1", name="p1", created_at=0, updated_at=0))
        conn.execute(
            insert(experiments),
            [
                {
                    "id": f"e{i}",
                    "project_id": "p1",
                    "name": f"e{i}",
                    "created_at": 0,
                    "updated_at": 0,
                }
                for i in range(10)
            ],
        )
        # Bulk load the way a restore would: rows first, then the secondary indexes built
        # once by sorting, instead of 500,000 random inserts into each (key, value) index.
        indexes = [*runs.indexes, *run_params.indexes, *latest_metrics.indexes]
        for index in indexes:
            index.drop(conn)
        conn.exec_driver_sql(
            "INSERT INTO runs (id, project_id, experiment_id, name, status, start_time,"
            " lifecycle, created_at, updated_at)"
            " VALUES (?, 'p1', ?, ?, 'FINISHED', ?, 'active', 0, 0)",
            [(rid, f"e{i % 10}", f"run-{i}", start) for i, (rid, start, _, _) in enumerate(rows)],
        )
        conn.exec_driver_sql(
            "INSERT INTO run_params (run_id, key, value) VALUES (?, ?, ?)",
            [(rid, "model", model) for rid, _, model, _ in rows]
            + [(rid, f"p{k}", str(rng.random())) for rid, *_ in rows for k in range(4)],
        )
        conn.exec_driver_sql(
            "INSERT INTO latest_metrics (run_id, key, value, step, timestamp)"
            " VALUES (?, ?, ?, 0, 0)",
            [(rid, "acc", acc) for rid, _, _, acc in rows]
            + [(rid, f"m{k}", rng.random()) for rid, *_ in rows for k in range(4)],
        )
        for index in indexes:
            index.create(conn)
    build_s = time.perf_counter() - started

    query = build_search_query(
        project_id="p1",
        experiment_ids=None,
        filter="metrics.acc > 0.5 AND params.model = 'lr'",
        order_by=["metrics.acc DESC"],
        limit=100,
        offset=0,
    )
    timings = []
    with db.read() as conn:
        for _ in range(21):
            t = time.perf_counter()
            got = list(conn.execute(query).scalars())
            timings.append(time.perf_counter() - t)
    db.dispose()
    median_ms = statistics.median(timings) * 1000
    print(f"\nsearch at {n:,} runs: build {build_s:.1f} s, median {median_ms:.1f} ms")

    wanted = sorted(
        ((acc, start, rid) for rid, start, model, acc in rows if model == "lr" and acc > 0.5),
        reverse=True,
    )
    assert got == [rid for _, _, rid in wanted[:100]]
    assert median_ms < 200
