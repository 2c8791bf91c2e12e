"""Batch transform: plan a job into shards, drive them through an executor, resume what is left.

The only module (with ``inference.asynchronous``) that queries the inference tables.

A job is driven by a coordinator thread in the process that created or resumed it (the server,
or the CLI or notebook when no server is used). The coordinator holds the job's lease, renews
it while it works, submits shards to the executor a few at a time, records each shard as it
ends, and writes the manifest when every shard succeeded. A stop is a request recorded on the
job (``STOPPING``), so it reaches the coordinator wherever it runs; the coordinator cancels its
running shards and leaves them ``PENDING`` for a resume. A job whose lease ran out (its process
died) is shown ``FAILED`` and can be resumed by any process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.db import Database
from shipyard.core.errors import Conflict, InvalidArgument, NotFound
from shipyard.core.executors import Executor
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.threads import Coordinators
from shipyard.core.timeutil import ms_to_dt, now_ms
from shipyard.inference import data
from shipyard.inference.coordinator import Coordinator
from shipyard.inference.resolve import ModelResolver, PinnedModel
from shipyard.inference.schemas import (
    BatchJobCreate,
    BatchJobPublic,
    BatchJobsPublic,
    BatchJobStatus,
    BatchProgress,
    BatchShardPublic,
    ShardStatus,
)
from shipyard.inference.tables import batch_jobs, batch_shards
from shipyard.projects.service import ProjectService

log = logging.getLogger("shipyard.inference")

ACTIVE = (BatchJobStatus.PENDING, BatchJobStatus.RUNNING, BatchJobStatus.STOPPING)


class BatchService:
    def __init__(
        self,
        db: Database,
        projects: ProjectService,
        resolver: ModelResolver,
        executor: Executor,
        *,
        home: Path,
        restrict_paths: bool,
        lease_s: float = 30.0,
        poll_s: float = 0.1,
    ) -> None:
        self.db = db
        self.projects = projects
        self.resolver = resolver
        self.executor = executor
        self.home = home
        # With auth on, a caller may read and write only under <home>/batch/<project>/.
        self.restrict_paths = restrict_paths
        self.lease_ms = int(lease_s * 1000)
        self.poll_s = poll_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._coordinators = Coordinators()

    # -- paths ---------------------------------------------------------------------------------

    def data_root(self, project: str) -> Path:
        return self.home / "batch" / project

    def _path(self, project: str, raw: str, field: str) -> Path:
        """Normalise once, then check the path stays inside the caller's scope (DESIGN.md 2)."""
        if "\x00" in raw:
            raise InvalidArgument.for_field(field, "must not contain NUL")
        p = Path(raw).expanduser()
        if self.restrict_paths:
            root = self.data_root(project).resolve()
            resolved = (root / p).resolve() if not p.is_absolute() else p.resolve()
            if not resolved.is_relative_to(root):
                raise InvalidArgument.for_field(
                    field, f"must be inside this project's batch folder {root}", root=str(root)
                )
            return resolved
        if not p.is_absolute():
            raise InvalidArgument.for_field(field, f"expected an absolute path, got {raw!r}")
        return p.resolve()

    # -- create --------------------------------------------------------------------------------

    def create_job(
        self, project: str, body: BatchJobCreate, created_by: str | None = None
    ) -> BatchJobPublic:
        """Plan and start a job. Raises ``InvalidArgument`` naming the field (a missing input
        column, an unknown join column, a non-empty output folder), ``NotFound`` for an unknown
        model, ``Conflict`` when an active job writes to the same folder."""
        pid = self.projects.project_id(project)
        if body.idempotency_key:
            found = self._by_key(pid, body.idempotency_key)
            if found is not None:
                return self.get_job(project, found)
        src = self._path(project, body.input, "input")
        if not src.is_file():
            raise InvalidArgument.for_field("input", f"no such file: {src}")
        out = self._path(project, body.output, "output")
        if out.exists() and not out.is_dir():
            raise InvalidArgument.for_field("output", f"exists and is not a folder: {out}")
        fmt = body.input_format.value if body.input_format else data.detect_format(str(src))
        pinned = self.resolver.resolve(project, body.model)
        plan = self._plan(src, fmt, body, pinned)
        self._prepare_output(out, body.overwrite, body.format.value)
        now = now_ms()
        job_id = new_id()
        try:
            with self.db.write() as conn:
                busy = conn.execute(
                    select(batch_jobs.c.id).where(
                        batch_jobs.c.output_path == str(out),
                        batch_jobs.c.status.in_([s.value for s in ACTIVE]),
                        batch_jobs.c.lease_expires_at >= now,
                    )
                ).first()
                if busy is not None:
                    raise Conflict(
                        f"output: job {busy.id} is writing to {out}; stop it or choose another folder",
                        {"field": "output", "job_id": busy.id},
                    )
                conn.execute(
                    batch_jobs.insert().values(
                        id=job_id,
                        project_id=pid,
                        status=BatchJobStatus.PENDING.value,
                        model_uri=pinned.uri,
                        model_name=pinned.name,
                        model_version=pinned.version,
                        input_path=str(src),
                        input_format=fmt,
                        output_path=str(out),
                        output_format=body.format.value,
                        plan=orjson.dumps(plan["stored"]).decode(),
                        join_columns=orjson.dumps(body.join_columns).decode()
                        if body.join_columns
                        else None,
                        join_all=body.join_all,
                        parallelism=body.parallelism,
                        retries=body.retries,
                        trust_code=body.trust_code,
                        shards_total=len(plan["shards"]),
                        rows_total=plan["rows"],
                        idempotency_key=body.idempotency_key,
                        owner=self.owner,
                        lease_expires_at=now + self.lease_ms,
                        created_by=created_by,
                        started_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
                conn.execute(
                    batch_shards.insert(),
                    [
                        {
                            "job_id": job_id,
                            "shard_index": i,
                            "status": ShardStatus.PENDING.value,
                            "start_row": r.start_row,
                            "stop_row": r.stop_row,
                            "start_byte": r.start_byte,
                            "stop_byte": r.stop_byte,
                            "attempts": 0,
                            "output_file": data.shard_file(i, body.format.value),
                        }
                        for i, r in enumerate(plan["shards"])
                    ],
                )
        except IntegrityError:
            # The same idempotency key, submitted twice at once: the other one was recorded.
            found = self._by_key(pid, body.idempotency_key) if body.idempotency_key else None
            if found is None:
                raise
            return self.get_job(project, found)
        self._start(job_id)
        return self.get_job(project, job_id)

    def _by_key(self, pid: str, key: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(  # type: ignore[no-any-return]
                select(batch_jobs.c.id).where(
                    batch_jobs.c.project_id == pid, batch_jobs.c.idempotency_key == key
                )
            ).scalar_one_or_none()

    def _plan(
        self, src: Path, fmt: str, body: BatchJobCreate, pinned: PinnedModel
    ) -> dict[str, Any]:
        from shipyard.models.format import TensorSpec, read_manifest

        signature = read_manifest(pinned.path).signature
        plan = data.plan_input(src, fmt, body.shards or self.executor.slots)
        if plan.rows == 0 or not plan.shards:
            raise InvalidArgument.for_field("input", f"{src.name} has no rows")
        columns = plan.columns
        if not isinstance(signature.inputs, TensorSpec):
            for c in signature.column_names or []:
                if c not in columns:
                    raise InvalidArgument.for_field(
                        "input",
                        f"missing column {c!r}, which the model needs "
                        f"(the input has: {', '.join(columns[:20])})",
                        column=c,
                    )
        outputs = [c.name for c in signature.outputs] or ["prediction"]
        join = list(columns) if body.join_all else list(body.join_columns or [])
        seen: set[str] = set()
        for c in join:
            if c not in columns:
                raise InvalidArgument.for_field(
                    "join_columns", f"no column {c!r} in the input", column=c
                )
            if c in seen:
                raise InvalidArgument.for_field("join_columns", f"{c!r} is listed twice")
            seen.add(c)
            if c in outputs:
                raise InvalidArgument.for_field(
                    "join_columns",
                    f"the input column {c!r} has the name of a prediction column; "
                    "list the columns to join instead",
                    column=c,
                )
        stored = {
            "columns": columns,
            "header_end": plan.header_end,
            "csv_schema": plan.csv_schema,
            "outputs": outputs,
            "join": join,
            "model_path": str(pinned.path) if pinned.name is None else None,
        }
        return {"stored": stored, "shards": plan.shards, "rows": plan.rows}

    def _prepare_output(self, out: Path, overwrite: bool, fmt: str) -> None:
        if out.is_dir():
            existing = [p.name for p in out.iterdir()]
            if existing and not overwrite:
                raise InvalidArgument.for_field(
                    "output",
                    f"the folder {out} is not empty ({len(existing)} entries); choose another "
                    "or pass overwrite to replace earlier results",
                )
            # Only what a batch job writes is removed; anything else in the folder stays.
            for name in existing:
                ours = name == data.MANIFEST or (
                    name.startswith(("part-", ".part-"))
                    and name.endswith((".parquet", ".csv", ".tmp"))
                )
                if ours and (out / name).is_file():
                    (out / name).unlink()
        out.mkdir(parents=True, exist_ok=True)

    # -- read ----------------------------------------------------------------------------------

    def get_job(self, project: str, job_id: str) -> BatchJobPublic:
        pid = self.projects.project_id(project)
        self._expire(pid, job_id)
        with self.db.read() as conn:
            row = conn.execute(
                select(batch_jobs).where(batch_jobs.c.id == job_id, batch_jobs.c.project_id == pid)
            ).first()
            if row is None:
                raise NotFound(f"batch job {job_id} not found in project {project}")
            shards = conn.execute(
                select(batch_shards)
                .where(batch_shards.c.job_id == job_id)
                .order_by(batch_shards.c.shard_index)
            ).all()
        return self._public(project, row, shards, with_shards=True)

    def list_jobs(
        self,
        project: str,
        *,
        status: BatchJobStatus | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> BatchJobsPublic:
        pid = self.projects.project_id(project)
        check_page_size(page_size)
        offset = decode_page_token(page_token)
        self._expire(pid, None)
        q = select(batch_jobs).where(batch_jobs.c.project_id == pid)
        if status is not None:
            q = q.where(batch_jobs.c.status == status.value)
        q = q.order_by(batch_jobs.c.created_at.desc(), batch_jobs.c.id.desc())
        with self.db.read() as conn:
            rows = conn.execute(q.offset(offset).limit(page_size + 1)).all()
            ids = [r.id for r in rows[:page_size]]
            shards = (
                conn.execute(select(batch_shards).where(batch_shards.c.job_id.in_(ids))).all()
                if ids
                else []
            )
        by_job: dict[str, list[Any]] = {}
        for s in shards:
            by_job.setdefault(s.job_id, []).append(s)
        return BatchJobsPublic(
            data=[
                self._public(project, r, by_job.get(r.id, []), with_shards=False)
                for r in rows[:page_size]
            ],
            next_page_token=next_token(offset, page_size, len(rows)),
        )

    def _public(
        self, project: str, row: Any, shards: Sequence[Any], *, with_shards: bool
    ) -> BatchJobPublic:
        done = [s for s in shards if s.status == ShardStatus.SUCCEEDED.value]
        rows_done = sum(s.rows or 0 for s in done)
        rate = None
        if row.started_at is not None:
            recent = sum(
                s.rows or 0
                for s in done
                if s.finished_at is not None and s.finished_at >= row.started_at
            )
            end = row.finished_at or now_ms()
            if end > row.started_at:
                rate = round(recent / ((end - row.started_at) / 1000), 1)
        total = max(row.rows_total, 1)
        progress = BatchProgress(
            shards_total=row.shards_total,
            shards_done=len(done),
            shards_running=sum(1 for s in shards if s.status == ShardStatus.RUNNING.value),
            shards_failed=sum(1 for s in shards if s.status == ShardStatus.FAILED.value),
            rows_total=row.rows_total,
            rows_done=rows_done,
            rows_per_s=rate,
            fraction=min(1.0, rows_done / total),
        )
        out = Path(row.output_path)
        return BatchJobPublic(
            id=row.id,
            project=project,
            status=BatchJobStatus(row.status),
            model=row.model_uri,
            model_name=row.model_name,
            model_version=row.model_version,
            input=row.input_path,
            input_format=row.input_format,
            output=row.output_path,
            format=row.output_format,
            join_columns=orjson.loads(row.join_columns) if row.join_columns else None,
            join_all=row.join_all,
            parallelism=row.parallelism,
            retries=row.retries,
            progress=progress,
            error=row.error,
            manifest=str(out / data.MANIFEST)
            if row.status == BatchJobStatus.SUCCEEDED.value
            else None,
            created_by=row.created_by,
            started_at=ms_to_dt(row.started_at),
            finished_at=ms_to_dt(row.finished_at),
            created_at=ms_to_dt(row.created_at),
            updated_at=ms_to_dt(row.updated_at),
            shards=[
                BatchShardPublic(
                    index=s.shard_index,
                    status=ShardStatus(s.status),
                    start_row=s.start_row,
                    stop_row=s.stop_row,
                    attempts=s.attempts,
                    rows=s.rows,
                    output_file=s.output_file,
                    output_bytes=s.output_bytes,
                    error=s.error,
                    log_path=s.log_path,
                    started_at=ms_to_dt(s.started_at),
                    finished_at=ms_to_dt(s.finished_at),
                )
                for s in sorted(shards, key=lambda s: s.shard_index)
            ]
            if with_shards
            else None,
        )

    def _expire(self, pid: str, job_id: str | None) -> None:
        """Jobs whose coordinator stopped renewing its lease are over: a ``STOPPING`` one is
        ``STOPPED``, any other ``FAILED``, and their running shards ``FAILED``."""
        now = now_ms()
        cond = [
            batch_jobs.c.project_id == pid,
            batch_jobs.c.status.in_([s.value for s in ACTIVE]),
            batch_jobs.c.lease_expires_at < now,
        ]
        if job_id is not None:
            cond.append(batch_jobs.c.id == job_id)
        with self.db.read() as conn:
            lost = conn.execute(select(batch_jobs.c.id, batch_jobs.c.status).where(*cond)).all()
        if not lost:
            return
        with self.db.write() as conn:
            for j in lost:
                stopping = j.status == BatchJobStatus.STOPPING.value
                n = conn.execute(
                    update(batch_jobs)
                    .where(*cond, batch_jobs.c.id == j.id)
                    .values(
                        status=(
                            BatchJobStatus.STOPPED if stopping else BatchJobStatus.FAILED
                        ).value,
                        error=None
                        if stopping
                        else "the process running this job stopped answering (its lease "
                        f"expired); resume it with `shipyard batch resume {j.id}`",
                        owner=None,
                        finished_at=now,
                        updated_at=now,
                    )
                ).rowcount
                if n:
                    conn.execute(
                        update(batch_shards)
                        .where(
                            batch_shards.c.job_id == j.id,
                            batch_shards.c.status == ShardStatus.RUNNING.value,
                        )
                        .values(
                            status=(ShardStatus.PENDING if stopping else ShardStatus.FAILED).value,
                            error=None if stopping else "interrupted: its coordinator was lost",
                            finished_at=now,
                        )
                    )

    # -- stop, resume, delete --------------------------------------------------------------------

    def _row(self, conn: Connection, pid: str, job_id: str) -> Any:
        row = conn.execute(
            select(batch_jobs).where(batch_jobs.c.id == job_id, batch_jobs.c.project_id == pid)
        ).first()
        if row is None:
            raise NotFound(f"batch job {job_id} not found")
        return row

    def stop_job(self, project: str, job_id: str) -> BatchJobPublic:
        """Ask the job's coordinator to stop; running shards are cancelled and left to resume.
        Stopping a stopped or failed job is a no-op; stopping one that succeeded is a
        ``Conflict``."""
        pid = self.projects.project_id(project)
        self._expire(pid, job_id)
        with self.db.write() as conn:
            row = self._row(conn, pid, job_id)
            status = BatchJobStatus(row.status)
            if status == BatchJobStatus.SUCCEEDED:
                raise Conflict(f"batch job {job_id} already succeeded", {"status": status})
            if status in (BatchJobStatus.PENDING, BatchJobStatus.RUNNING):
                conn.execute(
                    update(batch_jobs)
                    .where(batch_jobs.c.id == job_id)
                    .values(status=BatchJobStatus.STOPPING.value, updated_at=now_ms())
                )
        self._coordinators.stop(job_id)
        return self.get_job(project, job_id)

    def resume_job(self, project: str, job_id: str) -> BatchJobPublic:
        """Run the shards that have not succeeded (and any whose output file went missing).
        Raises ``Conflict`` for a job that succeeded or is still running."""
        pid = self.projects.project_id(project)
        self._expire(pid, job_id)
        now = now_ms()
        with self.db.write() as conn:
            row = self._row(conn, pid, job_id)
            status = BatchJobStatus(row.status)
            if status == BatchJobStatus.SUCCEEDED:
                raise Conflict(f"batch job {job_id} already succeeded; nothing to resume")
            if status in ACTIVE:
                raise Conflict(
                    f"batch job {job_id} is {status.value.lower()}; stop it before resuming",
                    {"status": status},
                )
            out = Path(row.output_path)
            for s in conn.execute(
                select(batch_shards).where(
                    batch_shards.c.job_id == job_id,
                    batch_shards.c.status == ShardStatus.SUCCEEDED.value,
                )
            ).all():
                f = out / (s.output_file or "")
                if not f.is_file() or f.stat().st_size != s.output_bytes:
                    conn.execute(
                        update(batch_shards)
                        .where(
                            batch_shards.c.job_id == job_id,
                            batch_shards.c.shard_index == s.shard_index,
                        )
                        .values(status=ShardStatus.PENDING.value, rows=None)
                    )
            conn.execute(
                update(batch_shards)
                .where(
                    batch_shards.c.job_id == job_id,
                    batch_shards.c.status != ShardStatus.SUCCEEDED.value,
                )
                .values(status=ShardStatus.PENDING.value, error=None)
            )
            n = conn.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == job_id, batch_jobs.c.status == row.status)
                .values(
                    status=BatchJobStatus.PENDING.value,
                    owner=self.owner,
                    lease_expires_at=now + self.lease_ms,
                    error=None,
                    started_at=now,
                    finished_at=None,
                    updated_at=now,
                )
            ).rowcount
            if n != 1:  # pragma: no cover - a concurrent resume won the race
                raise Conflict(f"batch job {job_id} was resumed by someone else")
        self._start(job_id)
        return self.get_job(project, job_id)

    def delete_job(self, project: str, job_id: str) -> None:
        """Forget a job (its output files stay). Raises ``Conflict`` while it runs."""
        pid = self.projects.project_id(project)
        self._expire(pid, job_id)
        with self.db.write() as conn:
            row = self._row(conn, pid, job_id)
            if row.status in [s.value for s in ACTIVE]:
                raise Conflict(f"batch job {job_id} is {row.status.lower()}; stop it first")
            conn.execute(delete(batch_shards).where(batch_shards.c.job_id == job_id))
            conn.execute(delete(batch_jobs).where(batch_jobs.c.id == job_id))

    # -- the coordinator -------------------------------------------------------------------------

    def _start(self, job_id: str) -> None:
        if not self._coordinators.start(
            job_id, f"batch-{job_id}", lambda ev: self._drive_safely(job_id, ev)
        ):
            if self._coordinators.closed:
                raise Conflict("this Shipyard is shutting down; resume the job later")
            raise Conflict(f"batch job {job_id} is already being run here")

    def _drive_safely(self, job_id: str, stop: threading.Event) -> None:
        coordinator = Coordinator(self, job_id, stop)
        try:
            coordinator.run()
        except Exception as exc:
            log.exception("batch job %s: coordinator failed", job_id)
            coordinator.cancel_running(requeue=False)
            now = now_ms()
            with self.db.write() as conn:
                conn.execute(
                    update(batch_shards)
                    .where(
                        batch_shards.c.job_id == job_id,
                        batch_shards.c.status == ShardStatus.RUNNING.value,
                    )
                    .values(status=ShardStatus.FAILED.value, error="interrupted", finished_at=now)
                )
                conn.execute(
                    update(batch_jobs)
                    .where(batch_jobs.c.id == job_id, batch_jobs.c.owner == self.owner)
                    .values(
                        status=BatchJobStatus.FAILED.value,
                        error=f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}",
                        owner=None,
                        finished_at=now,
                        updated_at=now,
                    )
                )

    def wait_idle(self, timeout_s: float | None = None) -> None:
        """Wait for this process's coordinators to end (tests, shutdown)."""
        self._coordinators.wait(timeout_s)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the jobs this process drives (each left ``STOPPED``, ready to resume)."""
        ids = self._coordinators.close()
        if ids:
            now = now_ms()
            with self.db.write() as conn:
                conn.execute(
                    update(batch_jobs)
                    .where(
                        batch_jobs.c.id.in_(ids),
                        batch_jobs.c.status.in_(
                            [BatchJobStatus.PENDING.value, BatchJobStatus.RUNNING.value]
                        ),
                    )
                    .values(status=BatchJobStatus.STOPPING.value, updated_at=now)
                )
            self._coordinators.stop_all()
        self.wait_idle(timeout_s)
