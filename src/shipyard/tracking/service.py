"""Tracking logic. The only module (with ``tracking.search``) that queries the tracking tables.

Every method takes the project by name and refuses ids that belong to another project with the
same ``NotFound`` as ids that do not exist, so a caller learns nothing outside its scope.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, and_, delete, func, or_, select, update

from shipyard.core.artifacts import ArtifactStore
from shipyard.core.db import Database, dialect_insert
from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.timeutil import dt_to_ms, ms_to_dt, now_ms
from shipyard.projects.service import ProjectService
from shipyard.tracking import search
from shipyard.tracking.artifacts import ArtifactsMixin
from shipyard.tracking.experiments import ExperimentsMixin
from shipyard.tracking.schemas import (
    DatasetInput,
    Lifecycle,
    MetricHistory,
    MetricRow,
    RunComparison,
    RunCreate,
    RunPublic,
    RunsPublic,
    RunStatus,
    RunUpdate,
    SearchRuns,
)
from shipyard.tracking.tables import (
    experiments,
    latest_metrics,
    metric_batches,
    metrics,
    run_inputs,
    run_params,
    run_tags,
    runs,
)

TERMINAL = {RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED}
MAX_KEY = 250
MAX_PARAM = 6000
MAX_TAG = 8000

_ADJECTIVES = [
    "amber",
    "bold",
    "brisk",
    "calm",
    "clever",
    "crisp",
    "eager",
    "fair",
    "gentle",
    "keen",
    "lucid",
    "merry",
    "nimble",
    "proud",
    "quiet",
    "rapid",
    "sharp",
    "steady",
    "swift",
    "vivid",
]  # noqa: E501
_NOUNS = [
    "albatross",
    "badger",
    "beacon",
    "comet",
    "dolphin",
    "falcon",
    "harbor",
    "heron",
    "kestrel",
    "lantern",
    "marlin",
    "otter",
    "petrel",
    "pilot",
    "puffin",
    "schooner",
    "sextant",
    "tern",
    "voyager",
    "wharf",
]  # noqa: E501


_I64_MIN, _I64_END = -(2**63), 2**63
_COPY_SPECIAL = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """A string as one field of PostgreSQL's COPY text format."""
    return value.translate(_COPY_SPECIAL)


class MetricColumns:
    """Metric points held column by column, checked once; what the service writes.

    The columns are plain lists, so a batch of thousands of points is validated with a few
    passes in C (``set``, ``all``, ``sum``, ``min``/``max``) and only a batch that fails the fast
    checks (a null, an int, a bad value) is walked point by point to clean it or to name the
    first offending field.
    """

    __slots__ = ("keys", "latest", "steps", "timestamps", "values")

    def __init__(
        self,
        keys: list[Any],
        values: list[Any],
        steps: list[Any],
        timestamps: list[Any],
        field: Callable[[int, str], str],
    ) -> None:
        n = len(keys)
        for name, col in (("value", values), ("step", steps), ("timestamp", timestamps)):
            if len(col) != n:
                raise InvalidArgument.for_field(
                    field(min(n, len(col)), name),
                    f"expected {n} {name}s, one per key; got {len(col)}",
                )
        self.keys: list[str] = _checked_keys(keys, field)
        self.values: list[float | None] = _checked_values(values, field)
        self.steps: list[int] = _checked_ints(steps, _I64_MIN, field, "step", "a 64-bit integer")
        self.timestamps: list[int] = _checked_ints(
            timestamps, 0, field, "timestamp", "epoch milliseconds"
        )
        self.latest: dict[str, int] = _latest_index(self.keys, self.steps, self.timestamps)

    @classmethod
    def from_rows(cls, rows: Iterable[MetricRow]) -> MetricColumns:
        """Columns from (key, value, step, timestamp) rows; errors name ``metrics[i].field``."""
        rows = list(rows)
        for i, r in enumerate(rows):
            if not isinstance(r, tuple | list) or len(r) != 4:
                raise InvalidArgument.for_field(
                    f"metrics[{i}]", f"expected (key, value, step, timestamp), got {r!r}"
                )
        cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] or [[], [], [], []]
        keys, values, steps, timestamps = cols
        return cls(keys, values, steps, timestamps, field=lambda i, name: f"metrics[{i}].{name}")

    def __len__(self) -> int:
        return len(self.keys)


def _checked_keys(keys: list[Any], field: Callable[[int, str], str]) -> list[str]:
    try:
        distinct = set(keys)
    except TypeError:  # an unhashable key: find it below
        distinct = {None}
    if any(not isinstance(k, str) or not k or len(k) > MAX_KEY for k in distinct):
        for i, k in enumerate(keys):
            _check_key(k, field(i, "key"))
    return keys


def _checked_values(values: list[Any], field: Callable[[int, str], str]) -> list[float | None]:
    # All floats and a finite sum: no NaN, no infinity, nothing to convert (the common case).
    if all(type(v) is float for v in values) and math.isfinite(sum(values)):
        return values
    out: list[float | None] = []
    for i, raw in enumerate(values):
        if raw is None:
            out.append(None)
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InvalidArgument.for_field(
                field(i, "value"), f"expected a number, got {raw!r}"
            ) from None
        if math.isnan(value):
            out.append(None)
        elif math.isinf(value):
            # JSON has no infinity, so every surface would turn it into null (NaN): keep the
            # largest finite float instead, on every backend alike.
            out.append(math.copysign(sys.float_info.max, value))
        else:
            out.append(value)
    return out


def _checked_ints(
    col: list[Any], low: int, field: Callable[[int, str], str], name: str, what: str
) -> list[int]:
    if all(type(x) is int for x in col) and (not col or (min(col) >= low and max(col) < _I64_END)):
        return col
    for i, x in enumerate(col):
        if not isinstance(x, int) or isinstance(x, bool) or not low <= x < _I64_END:
            raise InvalidArgument.for_field(field(i, name), f"expected {what}, got {x!r}")
    return col


def _latest_index(keys: list[str], steps: list[int], timestamps: list[int]) -> dict[str, int]:
    """Per key, the index of its point with the highest (step, timestamp), the later one on a
    tie: the value ``latest_metrics`` keeps."""
    # Steps and timestamps that never go down (a training loop's) make it the last occurrence.
    if steps == sorted(steps) and timestamps == sorted(timestamps):
        return {k: i for i, k in enumerate(keys)}
    latest: dict[str, int] = {}
    for i, k in enumerate(keys):
        j = latest.get(k)
        if j is None or (steps[i], timestamps[i]) >= (steps[j], timestamps[j]):
            latest[k] = i
    return latest


def _copy_metrics(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert metric points (one dict per point) with PostgreSQL's COPY, inside the caller's
    transaction: several times faster than a multi-row INSERT."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy("COPY metrics (run_id, key, step, timestamp, value) FROM STDIN") as copy:
        for r in rows:
            copy.write_row((r["run_id"], r["key"], r["step"], r["timestamp"], r["value"]))


def _copy_metric_columns(conn: Connection, run_id: str, m: MetricColumns) -> None:
    """``_copy_metrics`` for one run's checked columns, as one block of COPY text built in a
    few list passes: about three times faster than psycopg's ``write_row`` per point."""
    rid = _copy_text(run_id).replace("{", "{{").replace("}", "}}")
    esc = {k: _copy_text(k) for k in m.latest}
    vals = ["\\N" if v is None else repr(v) for v in m.values]
    text = "".join(
        map(
            f"{rid}\t{{}}\t{{}}\t{{}}\t{{}}\n".format,
            [esc[k] for k in m.keys],
            m.steps,
            m.timestamps,
            vals,
        )
    )
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy("COPY metrics (run_id, key, step, timestamp, value) FROM STDIN") as copy:
        copy.write(text)


def _checked_params(params: Iterable[tuple[str, object]]) -> dict[str, str]:
    """Params by key, each checked; the same key twice must carry the same value."""
    prows: dict[str, str] = {}
    for key, pval in params:
        _check_key(key, "params.key")
        v = _check_value(key, pval, MAX_PARAM, "params")
        if key in prows and prows[key] != v:
            raise InvalidArgument.for_field(f"params.{key}", "given twice with different values")
        prows[key] = v
    return prows


def _check_key(key: object, field: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise InvalidArgument.for_field(
            field, f"expected a non-empty string of at most {MAX_KEY} characters, got {key!r}"
        )
    return key


def _check_value(key: str, value: object, limit: int, field: str) -> str:
    if not isinstance(value, str):
        value = str(value)
    if len(value) > limit:
        raise InvalidArgument.for_field(f"{field}.{key}", f"longer than {limit} characters")
    return value


# The columns of ``runs`` that ``_hydrate`` reads, in its order.
_RUN_COLUMNS = (
    "id, project_id, experiment_id, parent_run_id, name, status, start_time, end_time, "
    "lifecycle, created_by, deleted_at, created_at, updated_at"
)
# A new run, written only where its experiment is in the project and active.
_INSERT_RUN = (
    "INSERT INTO runs (id, project_id, experiment_id, parent_run_id, name, status, start_time, "
    "end_time, lifecycle, created_by, created_at, updated_at) "
    "SELECT ?, ?, id, ?, ?, 'RUNNING', ?, NULL, 'active', ?, ?, ? FROM experiments "
    "WHERE id = ? AND project_id = ? AND lifecycle = 'active'"
)
_PARENT_IN_PROJECT = " AND EXISTS (SELECT 1 FROM runs WHERE id = ? AND project_id = ?)"


@functools.cache
def _pipelines_supported() -> bool:
    """Whether psycopg's pipeline mode is there (libpq 14 and later)."""
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def _driver_sql(conn: Connection, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, in the connection's driver's style."""
    return sql.replace("?", "%s") if conn.dialect.name == "postgresql" else sql


def _cursor(conn: Connection) -> Any:
    """A cursor of the driver, inside ``conn``'s transaction: for the few statements on hot
    paths, run without building a SQLAlchemy statement per call."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


@dataclass
class RunRecord:
    """A run that already ended, for ``TrackingService.record_runs``. Times in epoch ms."""

    name: str
    status: RunStatus
    start_time: int
    end_time: int
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricRow] = field(default_factory=list)


@functools.cache
def _runs_adapter() -> TypeAdapter[list[RunPublic]]:
    """Validates a page of runs in one call (built on first use, not at import)."""
    return TypeAdapter(list[RunPublic])


class TrackingService(ExperimentsMixin, ArtifactsMixin):
    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        projects: ProjectService,
        restore_window_s: int = 30 * 24 * 3600,
    ) -> None:
        self.db = db
        self.store = store
        self.projects = projects
        self.restore_window_s = restore_window_s

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, project: str, body: RunCreate, created_by: str | None = None) -> RunPublic:
        pid = self.projects.project_id(project)
        # A run without tags is one INSERT: on PostgreSQL it then commits by itself.
        with self.db.write(one_statement=not body.tags) as conn:
            return self.create_run_in(conn, pid, project, body, created_by)

    def create_run_in(
        self,
        conn: Connection,
        pid: str,
        project: str,
        body: RunCreate,
        created_by: str | None = None,
        params: Iterable[tuple[str, object]] = (),
    ) -> RunPublic:
        """``create_run`` inside the caller's write transaction ``conn`` (``pid`` is the
        project's id), with its ``params`` logged in the same transaction: for a caller that
        writes its own rows beside the run (a job and its run are one commit)."""
        prows = _checked_params(params)
        now = now_ms()
        rid = new_id()
        start = dt_to_ms(body.start_time) if body.start_time else now
        name = body.name or f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{rid[-3:]}"
        # One statement that inserts the run only where its experiment (and parent) are fit
        # to hold it; only when it inserts nothing is the reason looked up.
        args = [rid, pid, body.parent_run_id, name, start, created_by, now, now]
        args += [body.experiment_id, pid]
        sql = _INSERT_RUN
        if body.parent_run_id is not None:
            sql += _PARENT_IN_PROJECT
            args += [body.parent_run_id, pid]
        cur = _cursor(conn)
        try:
            cur.execute(_driver_sql(conn, sql), args)
            inserted = cur.rowcount
        finally:
            cur.close()
        if inserted != 1:
            self._refuse_run(conn, pid, project, body)
        if body.tags:
            conn.execute(
                run_tags.insert(),
                [{"run_id": rid, "key": k, "value": v} for k, v in body.tags.items()],
            )
        if prows:
            conn.execute(
                run_params.insert(),
                [{"run_id": rid, "key": k, "value": v} for k, v in prows.items()],
            )
        # A new run holds exactly what was just written: no need to read it back.
        return RunPublic(
            id=rid,
            project=project,
            experiment_id=body.experiment_id,
            parent_run_id=body.parent_run_id,
            name=name,
            status=RunStatus.RUNNING,
            start_time=ms_to_dt(start),
            end_time=None,
            lifecycle=Lifecycle.active,
            created_by=created_by,
            params=prows,
            tags=dict(body.tags),
            metrics={},
            inputs=[],
            deleted_at=None,
            created_at=ms_to_dt(now),
            updated_at=ms_to_dt(now),
        )

    @staticmethod
    def _refuse_run(conn: Connection, pid: str, project: str, body: RunCreate) -> None:
        """Raise why a run could not be made in ``body.experiment_id`` (``create_run_in``)."""
        exp = conn.execute(
            select(experiments.c.lifecycle).where(
                experiments.c.id == body.experiment_id, experiments.c.project_id == pid
            )
        ).first()
        if exp is None:
            raise NotFound(
                f"experiment {body.experiment_id!r} not found in project {project!r}",
                {"field": "experiment_id"},
            )
        if exp.lifecycle != "active":
            raise InvalidArgument.for_field(
                "experiment_id", "the experiment is deleted; restore it first"
            )
        raise NotFound(f"parent run {body.parent_run_id!r} not found", {"field": "parent_run_id"})

    def _run_check(
        self, conn: Connection, pid: str, run_id: str, *, active: bool = True, lock: bool = False
    ) -> Any:
        """The run's row, or NotFound; InvalidArgument for a deleted run when ``active``.

        ``lock`` takes the row ``FOR KEY SHARE`` (PostgreSQL; SQLite's write transaction already
        excludes other writers): a delete of the run waits until this transaction ends. Metric
        points rely on it, since their table has no foreign key on PostgreSQL (migration 0007).
        """
        query = select(runs.c.id, runs.c.lifecycle, runs.c.status, runs.c.experiment_id).where(
            runs.c.id == run_id, runs.c.project_id == pid
        )
        if lock:
            query = query.with_for_update(read=True, key_share=True)
        row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"run {run_id!r} not found", {"run_id": run_id})
        if active and row.lifecycle != "active":
            raise InvalidArgument.for_field(
                "run_id", f"run {run_id!r} is deleted; restore it first"
            )
        return row

    def get_run(self, project: str, run_id: str) -> RunPublic:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            found = self._hydrate(conn, pid, [run_id], project)
        if not found:
            raise NotFound(f"run {run_id!r} not found", {"run_id": run_id})
        return found[0]

    def _hydrate(
        self,
        conn: Connection,
        pid: str,
        ids: list[str],
        project: str,
        returning: tuple[str, list[Any]] | None = None,
    ) -> list[RunPublic]:
        """Full runs for ids, in the order given, in five queries whatever their number.
        ``returning``: a statement (driver SQL, arguments) that writes the runs and returns
        their rows as ``_RUN_COLUMNS``, run in place of the first query.

        The hot path of every search page: the queries go straight to the driver (no statement
        building per call) and the page is validated into models in one pass, about three times
        less CPU than building each model and each latest metric one by one.
        """
        if not ids:
            return []
        dbapi = conn.connection.dbapi_connection
        cur = dbapi.cursor()  # type: ignore[union-attr]
        args: list[Any]
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            where, args = "= ANY(%s)", [list(ids)]
        else:
            where, args = f"IN ({','.join('?' * len(ids))})", list(ids)

        def fetch_together(queries: list[tuple[str, list[Any]]]) -> list[list[Any]]:
            # PostgreSQL: the queries go out in one pipeline, one round trip for all of them.
            if not (postgres and _pipelines_supported()):
                out = []
                for sql, a in queries:
                    cur.execute(sql, a)
                    out.append(list(cur.fetchall()))
                return out
            cursors = [dbapi.cursor() for _ in queries]  # type: ignore[union-attr]
            try:
                with dbapi.pipeline():  # type: ignore[union-attr]
                    for c, (sql, a) in zip(cursors, queries, strict=True):
                        c.execute(sql, a)
                return [list(c.fetchall()) for c in cursors]
            finally:
                for c in cursors:
                    c.close()

        # By primary key alone, the project checked here: with the project in the WHERE clause
        # SQLite may pick the (project, start_time) index and scan the whole project.
        first = returning or (f"SELECT {_RUN_COLUMNS} FROM runs WHERE id {where}", args)
        details = [
            (sql.format(where=where), args)
            for sql in (
                "SELECT run_id, key, value FROM run_params WHERE run_id {where}",
                "SELECT run_id, key, value FROM run_tags WHERE run_id {where}",
                "SELECT run_id, key, value, step, timestamp FROM latest_metrics "
                "WHERE run_id {where}",
                "SELECT run_id, name, digest, source, schema, context FROM run_inputs "
                "WHERE run_id {where} ORDER BY created_at",
            )
        ]
        if len(ids) == 1:
            # One run (a run's page, the answer to a change): every query in one go; the
            # details of a run that turns out not to be there are thrown away.
            run_rows, param_rows, tag_rows, metric_rows, input_rows = fetch_together(
                [first, *details]
            )
            rows = {r[0]: r for r in run_rows if r[1] == pid}
        else:
            run_rows = fetch_together([first])[0]
            rows = {r[0]: r for r in run_rows if r[1] == pid}
            if not rows:
                return []
            param_rows, tag_rows, metric_rows, input_rows = fetch_together(details)
        if not rows:
            return []
        params: dict[str, dict[str, str]] = {i: {} for i in rows}
        tags: dict[str, dict[str, str]] = {i: {} for i in rows}
        mets: dict[str, dict[str, dict[str, Any]]] = {i: {} for i in rows}
        inputs: dict[str, list[dict[str, Any]]] = {i: [] for i in rows}
        for rid, key, value in param_rows:
            if rid in params:
                params[rid][key] = value
        for rid, key, value in tag_rows:
            if rid in tags:
                tags[rid][key] = value
        for rid, key, value, step, ts in metric_rows:
            if rid in mets:
                mets[rid][key] = {"value": value, "step": step, "timestamp": ts}
        for rid, name, digest, source, schema, context in input_rows:
            if rid in inputs:
                inputs[rid].append(
                    {
                        "name": name,
                        "digest": digest,
                        "source": source,
                        "schema": json.loads(schema) if schema else None,
                        "context": context,
                    }
                )
        cur.close()
        out = []
        for rid in ids:
            r = rows.get(rid)
            if r is None:
                continue
            out.append(
                {
                    "id": rid,
                    "project": project,
                    "experiment_id": r[2],
                    "parent_run_id": r[3],
                    "name": r[4],
                    "status": r[5],
                    "start_time": ms_to_dt(r[6]),
                    "end_time": ms_to_dt(r[7]),
                    "lifecycle": r[8],
                    "created_by": r[9],
                    "params": params[rid],
                    "tags": tags[rid],
                    "metrics": mets[rid],
                    "inputs": inputs[rid],
                    "deleted_at": ms_to_dt(r[10]),
                    "created_at": ms_to_dt(r[11]),
                    "updated_at": ms_to_dt(r[12]),
                }
            )
        return _runs_adapter().validate_python(out)

    def update_run(self, project: str, run_id: str, body: RunUpdate) -> RunPublic:
        pid = self.projects.project_id(project)
        now = now_ms()
        values: dict[str, Any] = {"updated_at": now}
        if body.name is not None:
            values["name"] = body.name
        if body.status is not None:
            values["status"] = body.status.value
            if body.status in TERMINAL:
                values["end_time"] = dt_to_ms(body.end_time) if body.end_time else now
            else:
                values["end_time"] = None
        elif body.end_time is not None:
            values["end_time"] = dt_to_ms(body.end_time)
        # One statement writes and returns the row (on PostgreSQL it commits by itself); the
        # run's params, tags, metrics and inputs are read beside it for the answer.
        sets = ", ".join(f"{column} = ?" for column in values)
        sql = f"UPDATE runs SET {sets} WHERE id = ? AND project_id = ? RETURNING {_RUN_COLUMNS}"
        with self.db.write(one_statement=True) as conn:
            found = self._hydrate(
                conn,
                pid,
                [run_id],
                project,
                returning=(_driver_sql(conn, sql), [*values.values(), run_id, pid]),
            )
        if not found:
            raise NotFound(f"run {run_id!r} not found", {"run_id": run_id})
        return found[0]

    def end_run_in(
        self, conn: Connection, pid: str, run_id: str, status: RunStatus, end_time_ms: int
    ) -> bool:
        """Set a run's final ``status`` and end time inside the caller's write transaction
        ``conn`` (``pid`` is the project's id), as ``update_run`` does; False when there is no
        such run (``update_run`` raises NotFound there)."""
        if (
            conn.execute(
                select(runs.c.id).where(runs.c.id == run_id, runs.c.project_id == pid)
            ).first()
            is None
        ):
            return False
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(status=status.value, end_time=end_time_ms, updated_at=now_ms())
        )
        return True

    def _set_lifecycle(self, project: str, run_ids: list[str], lifecycle: str) -> None:
        pid = self.projects.project_id(project)
        now = now_ms()
        with self.db.write() as conn:
            for rid in run_ids:
                self._run_check(conn, pid, rid, active=False)
            conn.execute(
                update(runs)
                .where(runs.c.id.in_(run_ids))
                .values(
                    lifecycle=lifecycle,
                    deleted_at=now if lifecycle == "deleted" else None,
                    updated_at=now,
                )
            )

    def delete_run(self, project: str, run_id: str) -> None:
        self._set_lifecycle(project, [run_id], "deleted")

    def restore_run(self, project: str, run_id: str) -> None:
        self._set_lifecycle(project, [run_id], "active")

    def set_tag(self, project: str, run_id: str, key: str, value: str) -> None:
        self.log_batch(project, run_id, tags=[(key, value)])

    def delete_tag(self, project: str, run_id: str, key: str) -> None:
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            self._run_check(conn, pid, run_id)
            n = conn.execute(
                delete(run_tags).where(run_tags.c.run_id == run_id, run_tags.c.key == key)
            ).rowcount
        if not n:
            raise NotFound(f"tag {key!r} not found on run {run_id!r}", {"field": "key"})

    # -- logging ----------------------------------------------------------------------------

    def log_batch(
        self,
        project: str,
        run_id: str,
        *,
        metrics_: Iterable[MetricRow] | MetricColumns = (),
        params: Iterable[tuple[str, object]] = (),
        tags: Iterable[tuple[str, object]] = (),
        batch_id: str | None = None,
    ) -> bool:
        """Log metrics, params and tags in one transaction. Returns False when ``batch_id`` was
        already applied (a retry), True otherwise.

        A param is logged once: the same value again is accepted, a different one is refused.
        """
        pid = self.projects.project_id(project)
        mcols = (
            metrics_ if isinstance(metrics_, MetricColumns) else MetricColumns.from_rows(metrics_)
        )
        prows = _checked_params(params)
        trows: dict[str, str] = {}
        for key, tval in tags:
            _check_key(key, "tags.key")
            trows[key] = _check_value(key, tval, MAX_TAG, "tags")

        with self.db.write() as conn:
            self._run_check(conn, pid, run_id, lock=bool(mcols))
            if batch_id is not None and not self._claim_batch(conn, run_id, batch_id):
                return False
            if prows:
                existing = dict(
                    conn.execute(
                        select(run_params.c.key, run_params.c.value).where(
                            run_params.c.run_id == run_id, run_params.c.key.in_(list(prows))
                        )
                    ).all()
                )
                for k, v in prows.items():
                    if k in existing and existing[k] != v:
                        raise InvalidArgument(
                            f"params.{k}: already logged as {existing[k]!r}, cannot change to {v!r} "
                            "(a param is logged once; use a tag or a metric for values that change)",
                            {"field": f"params.{k}", "logged": existing[k], "given": v},
                        )
                new = [
                    {"run_id": run_id, "key": k, "value": v}
                    for k, v in prows.items()
                    if k not in existing
                ]
                if new:
                    conn.execute(dialect_insert(conn, run_params).on_conflict_do_nothing(), new)
            if trows:
                stmt = dialect_insert(conn, run_tags)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["run_id", "key"], set_={"value": stmt.excluded.value}
                    ),
                    [{"run_id": run_id, "key": k, "value": v} for k, v in trows.items()],
                )
            if mcols:
                self._write_metrics(conn, run_id, mcols)
            if prows or trows:
                conn.execute(update(runs).where(runs.c.id == run_id).values(updated_at=now_ms()))
        return True

    def log_metric_columns(
        self,
        project: str,
        run_id: str,
        keys: list[Any],
        values: list[Any],
        steps: list[Any],
        timestamps: list[Any],
        batch_id: str | None = None,
    ) -> bool:
        """The fast path for metric points sent column by column (what the SDK's buffer sends):
        point ``i`` is ``keys[i]``, ``values[i]`` (None for NaN), ``steps[i]``,
        ``timestamps[i]``. Errors name the column and the index, ``values[3]``. Returns False
        when ``batch_id`` was already applied."""
        cols = MetricColumns(keys, values, steps, timestamps, field=lambda i, n: f"{n}s[{i}]")
        return self.log_batch(project, run_id, metrics_=cols, batch_id=batch_id)

    @staticmethod
    def _claim_batch(conn: Connection, run_id: str, batch_id: str) -> bool:
        """Record ``batch_id`` as applied to the run; False if it already was (a retry)."""
        applied = conn.execute(
            dialect_insert(conn, metric_batches)
            .values(
                # Hashed, not truncated, to fit the column: two long ids sharing a prefix must
                # stay two batches.
                batch_id=hashlib.sha256(f"{run_id}:{batch_id}".encode()).hexdigest(),
                run_id=run_id,
                created_at=now_ms(),
            )
            .on_conflict_do_nothing()
            # Without it SQLAlchemy 2.1 reports -1 for an INSERT on psycopg, and every retried
            # batch would be applied again on PostgreSQL.
            .execution_options(preserve_rowcount=True)
        ).rowcount
        return bool(applied)

    @staticmethod
    def _write_metrics(conn: Connection, run_id: str, m: MetricColumns) -> None:
        """The history (COPY on PostgreSQL, one executemany on SQLite), then one upsert of the
        latest value per key, which keeps the stored point with the higher (step, timestamp)."""
        if conn.dialect.name == "postgresql":
            _copy_metric_columns(conn, run_id, m)
        else:
            # The driver's own executemany: no per-row statement building in SQLAlchemy.
            conn.exec_driver_sql(
                "INSERT INTO metrics (run_id, key, step, timestamp, value) VALUES (?, ?, ?, ?, ?)",
                list(zip(repeat(run_id), m.keys, m.steps, m.timestamps, m.values, strict=False)),
            )
        stmt = dialect_insert(conn, latest_metrics)
        newer = or_(
            stmt.excluded.step > latest_metrics.c.step,
            and_(
                stmt.excluded.step == latest_metrics.c.step,
                stmt.excluded.timestamp >= latest_metrics.c.timestamp,
            ),
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["run_id", "key"],
                set_={
                    "value": stmt.excluded.value,
                    "step": stmt.excluded.step,
                    "timestamp": stmt.excluded.timestamp,
                },
                where=newer,
            ),
            [
                {
                    "run_id": run_id,
                    "key": k,
                    "value": m.values[i],
                    "step": m.steps[i],
                    "timestamp": m.timestamps[i],
                }
                for k, i in m.latest.items()
            ],
        )

    def log_inputs(self, project: str, run_id: str, inputs: list[DatasetInput]) -> None:
        pid = self.projects.project_id(project)
        now = now_ms()
        with self.db.write() as conn:
            self._run_check(conn, pid, run_id)
            for d in inputs:
                conn.execute(
                    dialect_insert(conn, run_inputs)
                    .values(
                        id=new_id(),
                        run_id=run_id,
                        name=d.name,
                        digest=d.digest,
                        source=d.source,
                        schema=json.dumps(d.schema_) if d.schema_ is not None else "",
                        context=d.context,
                        created_at=now,
                    )
                    .on_conflict_do_nothing()
                )

    def record_runs(
        self,
        project: str,
        experiment_id: str,
        records: list[RunRecord],
        created_by: str | None = None,
    ) -> list[str]:
        """Record runs that already ended, with their params, tags and metrics, in one
        transaction; returns their ids in order. For the many short runs of a tuning job's
        in-process trials, where a transaction per run would cost more than the trial."""
        pid = self.projects.project_id(project)
        now = now_ms()
        run_rows, param_rows, tag_rows, metric_rows = [], [], [], []
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        ids = []
        for i, rec in enumerate(records):
            rid = new_id()
            ids.append(rid)
            if rec.status not in TERMINAL:
                raise InvalidArgument.for_field(f"runs[{i}].status", "expected a final status")
            run_rows.append(
                {
                    "id": rid,
                    "project_id": pid,
                    "experiment_id": experiment_id,
                    "parent_run_id": None,
                    "name": rec.name,
                    "status": rec.status.value,
                    "start_time": rec.start_time,
                    "end_time": rec.end_time,
                    "lifecycle": "active",
                    "created_by": created_by,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            for k, v in rec.params.items():
                _check_key(k, "params.key")
                param_rows.append(
                    {"run_id": rid, "key": k, "value": _check_value(k, v, MAX_PARAM, "params")}
                )
            for k, v in rec.tags.items():
                _check_key(k, "tags.key")
                tag_rows.append(
                    {"run_id": rid, "key": k, "value": _check_value(k, v, MAX_TAG, "tags")}
                )
            for key, value, step, ts in rec.metrics:
                _check_key(key, "metrics.key")
                if value is not None and not math.isfinite(value):
                    value = None if math.isnan(value) else math.copysign(sys.float_info.max, value)
                row = {"run_id": rid, "key": key, "step": step, "timestamp": ts, "value": value}
                metric_rows.append(row)
                cur = latest.get((rid, key))
                if cur is None or (step, ts) >= (cur["step"], cur["timestamp"]):
                    latest[(rid, key)] = row
        if not ids:
            return ids
        with self.db.write() as conn:
            exp = conn.execute(
                select(experiments.c.id).where(
                    experiments.c.id == experiment_id, experiments.c.project_id == pid
                )
            ).first()
            if exp is None:
                raise NotFound(
                    f"experiment {experiment_id!r} not found in project {project!r}",
                    {"field": "experiment_id"},
                )
            conn.execute(runs.insert(), run_rows)
            if param_rows:
                conn.execute(run_params.insert(), param_rows)
            if tag_rows:
                conn.execute(run_tags.insert(), tag_rows)
            if metric_rows:
                if conn.dialect.name == "postgresql":
                    _copy_metrics(conn, metric_rows)
                else:
                    conn.execute(metrics.insert(), metric_rows)
                conn.execute(latest_metrics.insert(), list(latest.values()))
        return ids

    def get_metric_history(self, project: str, run_id: str, key: str) -> MetricHistory:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            self._run_check(conn, pid, run_id, active=False)
            rows = conn.execute(
                select(metrics.c.step, metrics.c.timestamp, metrics.c.value)
                .where(metrics.c.run_id == run_id, metrics.c.key == key)
                .order_by(metrics.c.step, metrics.c.timestamp, metrics.c.id)
            ).all()
        return MetricHistory(
            run_id=run_id,
            key=key,
            steps=[r[0] for r in rows],
            timestamps=[r[1] for r in rows],
            values=[r[2] for r in rows],
        )

    # -- search and compare -----------------------------------------------------------------

    def search_runs(
        self, project: str, body: SearchRuns, *, include_count: bool = False
    ) -> RunsPublic:
        pid = self.projects.project_id(project)
        check_page_size(body.page_size)
        self.db.refresh_statistics()
        offset = decode_page_token(body.page_token)
        query = search.build_search_query(
            project_id=pid,
            experiment_ids=body.experiment_ids,
            filter=body.filter,
            order_by=body.order_by,
            lifecycle=body.lifecycle.value,
            limit=body.page_size + 1,
            offset=offset,
        )
        with self.db.read() as conn:
            ids: list[str] = list(conn.execute(query).scalars())  # type: ignore[arg-type]
            data = self._hydrate(conn, pid, ids[: body.page_size], project)
            count = None
            if include_count:
                counted = search.build_search_query(
                    project_id=pid,
                    experiment_ids=body.experiment_ids,
                    filter=body.filter,
                    order_by=None,
                    lifecycle=body.lifecycle.value,
                    limit=-1,
                    offset=0,
                )
                count = conn.execute(
                    select(func.count()).select_from(counted.order_by(None).limit(None).subquery())
                ).scalar_one()
        return RunsPublic(
            data=data, count=count, next_page_token=next_token(offset, body.page_size, len(ids))
        )

    def compare_runs(
        self, project: str, run_ids: list[str], metric_keys: list[str] | None = None
    ) -> RunComparison:
        if not 1 <= len(run_ids) <= 100:
            raise InvalidArgument.for_field("run_ids", "expected 1 to 100 run ids")
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            found = self._hydrate(conn, pid, list(dict.fromkeys(run_ids)), project)
            missing = set(run_ids) - {r.id for r in found}
            if missing:
                raise NotFound(
                    f"runs not found: {', '.join(sorted(missing))}", {"field": "run_ids"}
                )
            keys = sorted(
                metric_keys if metric_keys is not None else {k for r in found for k in r.metrics}
            )
            histories: dict[str, list[MetricHistory]] = {k: [] for k in keys}
            if keys:
                rows = conn.execute(
                    select(
                        metrics.c.run_id,
                        metrics.c.key,
                        metrics.c.step,
                        metrics.c.timestamp,
                        metrics.c.value,
                    )
                    .where(metrics.c.run_id.in_([r.id for r in found]), metrics.c.key.in_(keys))
                    .order_by(
                        metrics.c.run_id,
                        metrics.c.key,
                        metrics.c.step,
                        metrics.c.timestamp,
                        metrics.c.id,
                    )
                ).all()
                by: dict[tuple[str, str], MetricHistory] = {}
                for rid, key, step, ts, value in rows:
                    h = by.get((rid, key))
                    if h is None:
                        h = by[(rid, key)] = MetricHistory(
                            run_id=rid, key=key, steps=[], timestamps=[], values=[]
                        )
                    h.steps.append(step)
                    h.timestamps.append(ts)
                    h.values.append(value)
                for r in found:
                    for k in keys:
                        if (r.id, k) in by:
                            histories[k].append(by[(r.id, k)])
        param_keys = sorted({k for r in found for k in r.params})
        differing = [k for k in param_keys if len({r.params.get(k) for r in found}) > 1]
        return RunComparison(
            runs=found,
            param_keys=param_keys,
            differing_params=differing,
            metric_keys=keys,
            histories=histories,
        )
