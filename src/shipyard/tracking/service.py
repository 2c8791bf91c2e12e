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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, delete, func, select, update

from shipyard.core.artifacts import ArtifactStore
from shipyard.core.db import Database, dialect_insert
from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.timeutil import dt_to_ms, ms_to_dt, now_ms
from shipyard.projects.service import ProjectService
from shipyard.tracking import chunks, search
from shipyard.tracking.artifacts import ArtifactsMixin
from shipyard.tracking.chunks import MetricColumns
from shipyard.tracking.chunks import check_key as _check_key
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
    metric_chunks,
    run_inputs,
    run_params,
    run_tags,
    runs,
)

TERMINAL = {RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED}
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
# A batch id applied once per run (``_claim_batch``): inserts a row only the first time.
_CLAIM_BATCH = (
    "INSERT INTO metric_batches (batch_id, run_id, created_at) VALUES (?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
# The latest value per run and key: a point replaces the stored one when its (step, timestamp)
# is at least as high. The same statement on SQLite and PostgreSQL, sent to the driver as is:
# building it in SQLAlchemy for every batch cost about half a millisecond.
_UPSERT_LATEST = (
    "INSERT INTO latest_metrics (run_id, key, value, step, timestamp) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, step = excluded.step, "
    "timestamp = excluded.timestamp WHERE excluded.step > latest_metrics.step OR "
    "(excluded.step = latest_metrics.step AND excluded.timestamp >= latest_metrics.timestamp)"
)


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


def _insert_chunks(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``metric_chunks`` rows (``chunks.chunk_row``) with the driver's executemany,
    inside the caller's transaction."""
    if not rows:
        return
    cur = _cursor(conn)
    try:
        cur.executemany(_driver_sql(conn, chunks.INSERT_CHUNK), rows)
    finally:
        cur.close()


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
    ) -> None:
        """NotFound unless the run is in the project; InvalidArgument for a deleted run when
        ``active``.

        ``lock`` takes the row ``FOR KEY SHARE`` (PostgreSQL; SQLite's write transaction already
        excludes other writers): a delete of the run waits until this transaction ends, and a
        batch that raced the delete gets NotFound here rather than a foreign-key violation at
        its first insert.
        """
        # Driver SQL: every batch of metrics runs it, and building the statement in SQLAlchemy
        # cost about half a millisecond a call.
        sql = "SELECT lifecycle FROM runs WHERE id = ? AND project_id = ?"
        if lock and conn.dialect.name == "postgresql":
            sql += " FOR KEY SHARE"
        cur = _cursor(conn)
        try:
            cur.execute(_driver_sql(conn, sql), (run_id, pid))
            row = cur.fetchone()
        finally:
            cur.close()
        if row is None:
            raise NotFound(f"run {run_id!r} not found", {"run_id": run_id})
        if active and row[0] != "active":
            raise InvalidArgument.for_field(
                "run_id", f"run {run_id!r} is deleted; restore it first"
            )

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
        values = _run_update_values(body)
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

    def update_run_quietly(self, project: str, run_id: str, body: RunUpdate) -> None:
        """``update_run`` without reading the run back for an answer: one statement (what an
        SDK ending its run asks for, with ``Prefer: return=minimal``)."""
        pid = self.projects.project_id(project)
        values = _run_update_values(body)
        sets = ", ".join(f"{column} = ?" for column in values)
        sql = f"UPDATE runs SET {sets} WHERE id = ? AND project_id = ? RETURNING id"
        with self.db.write(one_statement=True) as conn:
            cur = _cursor(conn)
            try:
                cur.execute(_driver_sql(conn, sql), [*values.values(), run_id, pid])
                updated = cur.fetchall()
            finally:
                cur.close()
        if not updated:
            raise NotFound(f"run {run_id!r} not found", {"run_id": run_id})

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
        # Hashed, not truncated, to fit the column: two long ids sharing a prefix must stay two
        # batches.
        digest = hashlib.sha256(f"{run_id}:{batch_id}".encode()).hexdigest()
        cur = _cursor(conn)
        try:
            cur.execute(_driver_sql(conn, _CLAIM_BATCH), (digest, run_id, now_ms()))
            return bool(cur.rowcount == 1)
        finally:
            cur.close()

    @staticmethod
    def _write_metrics(conn: Connection, run_id: str, m: MetricColumns) -> None:
        """The history as one chunk per key of the batch, then one upsert of the latest value
        per key, which keeps the stored point with the higher (step, timestamp)."""
        _insert_chunks(conn, m.chunk_rows(run_id))
        values, steps, timestamps = m.values, m.steps, m.timestamps
        cur = _cursor(conn)
        try:
            cur.executemany(
                _driver_sql(conn, _UPSERT_LATEST),
                [(run_id, k, values[i], steps[i], timestamps[i]) for k, i in m.latest.items()],
            )
        finally:
            cur.close()

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
        run_rows, param_rows, tag_rows = [], [], []
        chunk_rows: list[tuple[Any, ...]] = []
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
            history: dict[str, tuple[list[int], list[int], list[float | None]]] = {}
            for key, value, step, ts in rec.metrics:
                _check_key(key, "metrics.key")
                if value is not None and not math.isfinite(value):
                    value = None if math.isnan(value) else math.copysign(sys.float_info.max, value)
                h = history.setdefault(key, ([], [], []))
                h[0].append(step)
                h[1].append(ts)
                h[2].append(value)
                cur = latest.get((rid, key))
                if cur is None or (step, ts) >= (cur["step"], cur["timestamp"]):
                    latest[(rid, key)] = {
                        "run_id": rid,
                        "key": key,
                        "step": step,
                        "timestamp": ts,
                        "value": value,
                    }
            chunk_rows += [chunks.chunk_row(rid, key, *h) for key, h in history.items()]
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
            if chunk_rows:
                _insert_chunks(conn, chunk_rows)
                conn.execute(latest_metrics.insert(), list(latest.values()))
        return ids

    def get_metric_history(self, project: str, run_id: str, key: str) -> MetricHistory:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            self._run_check(conn, pid, run_id, active=False)
            stored = conn.execute(
                select(
                    metric_chunks.c.steps_i64,
                    metric_chunks.c.timestamps_i64,
                    metric_chunks.c.values_f64,
                )
                .where(metric_chunks.c.run_id == run_id, metric_chunks.c.key == key)
                .order_by(metric_chunks.c.id)
            ).all()
        steps, timestamps, values = chunks.merge(stored)  # type: ignore[arg-type]
        return MetricHistory(
            run_id=run_id, key=key, steps=steps, timestamps=timestamps, values=values
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
                stored = conn.execute(
                    select(
                        metric_chunks.c.run_id,
                        metric_chunks.c.key,
                        metric_chunks.c.steps_i64,
                        metric_chunks.c.timestamps_i64,
                        metric_chunks.c.values_f64,
                    )
                    .where(
                        metric_chunks.c.run_id.in_([r.id for r in found]),
                        metric_chunks.c.key.in_(keys),
                    )
                    .order_by(metric_chunks.c.run_id, metric_chunks.c.key, metric_chunks.c.id)
                ).all()
                grouped: dict[tuple[str, str], list[tuple[bytes, bytes, bytes]]] = {}
                for rid, key, s, t, v in stored:
                    grouped.setdefault((rid, key), []).append((s, t, v))
                by: dict[tuple[str, str], MetricHistory] = {}
                for (rid, key), parts in grouped.items():
                    steps, timestamps, values = chunks.merge(parts)
                    by[(rid, key)] = MetricHistory(
                        run_id=rid, key=key, steps=steps, timestamps=timestamps, values=values
                    )
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


def _run_update_values(body: RunUpdate) -> dict[str, Any]:
    """The ``runs`` columns a ``RunUpdate`` sets: a terminal status ends the run (now, unless it
    gives its end time), a live one clears the end time."""
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
    return values
