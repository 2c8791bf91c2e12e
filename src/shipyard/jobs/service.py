"""Training jobs: the queue in the metadata store, and what the API and the workers do with it.

The only module (with ``jobs.queue``, mixed in) that queries the jobs tables. ``submit`` records
a job ``queued`` (with its run, so the job has somewhere to log from its first line) and wakes
this process's worker; a worker (``jobs.worker``) claims it with a lease, runs its attempts and
records how each ended through the queue's ``claim``/``heartbeat``/``finish_attempt``. ``stop`` is a request written on the
job, so it reaches the worker wherever it runs. ``reap`` settles jobs whose worker stopped
heartbeating: retried while attempts remain, else failed, never left running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.db import Database
from shipyard.core.errors import AlreadyExists, Conflict, NotFound
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.schemas import validate
from shipyard.core.timeutil import ms_to_dt, now_ms
from shipyard.jobs.queue import (
    LOST_WORKER,
    ClaimedJob,
    Heartbeat,
    Q,
    QueueMixin,
    R,
    S,
    _insert_line,
)
from shipyard.jobs.schemas import (
    Job,
    JobCreate,
    JobLogChunk,
    JobLogs,
    JobsPublic,
    JobStatus,
)
from shipyard.jobs.tables import job_logs, jobs
from shipyard.projects.service import ProjectService
from shipyard.tracking.schemas import ExperimentCreate, RunCreate
from shipyard.tracking.service import TrackingService

log = logging.getLogger("shipyard.jobs")

__all__ = ["LOST_WORKER", "ClaimedJob", "Heartbeat", "JobService"]

# The columns of a job's row that a new job does not set.
_UNSET = {
    "failure_reason": None,
    "report": None,
    "model_artifact_path": None,
    "lease_owner": None,
    "lease_expires_at": None,
    "attempt_started_at": None,
    "started_at": None,
    "ended_at": None,
}


class JobService(QueueMixin):
    def __init__(
        self,
        db: Database,
        projects: ProjectService,
        tracking: TrackingService,
        *,
        lease_s: float = 30.0,
    ) -> None:
        self.db = db
        self.projects = projects
        self.tracking = tracking
        self.lease_ms = int(lease_s * 1000)
        # Called after a submit: wakes (and on first use starts) this process's worker.
        self.on_submit: Callable[[], object] | None = None
        self._ended = {}
        self._ended_cv = threading.Condition()
        self._held_here = set()
        # Experiment ids by (project, name): every job's run goes into one.
        self._experiments: dict[tuple[str, str], str] = {}

    # -- the API -------------------------------------------------------------------------------

    def submit(
        self,
        project: str,
        body: JobCreate,
        created_by: str | None = None,
        *,
        also: Callable[[Connection, str, str], object] | None = None,
    ) -> Job:
        """Queue a job and create its run. The same ``idempotency_key`` in a project returns the
        job made first, whatever the rest of the body says. Raises ``NotFound`` for a missing
        project; the schema has already refused bad fields.

        ``also(conn, job_id, run_id)`` writes the caller's own rows in the same transaction (a
        tuning job's trial rows): called only when this call makes the job, not when an earlier
        one with the same key is returned."""
        pid = self.projects.project_id(project)
        # A key used before is found by the insert below (the key is unique per project): no
        # read first, which every new job would pay.
        if body.algorithm:
            # A built-in algorithm's hyperparameters are known: refuse a bad one now, naming
            # it, rather than after the job waited in the queue.
            from shipyard.jobs.algorithms import validate_hyperparameters

            validate_hyperparameters(body.algorithm, body.hyperparameters)
        job_id = new_id()
        name = body.name or f"{body.display_name()}-{job_id[-6:]}"
        tags = {**body.tags, "shipyard.job_id": job_id, "shipyard.job_name": name}
        if body.tuning_job_id:
            tags["shipyard.tuning_job_id"] = body.tuning_job_id
        params = [(k, _param(v)) for k, v in body.hyperparameters.items()]
        for fresh in (False, True):
            exp_id = self._experiment(project, body.experiment, fresh=fresh)
            run_body = validate(RunCreate, experiment_id=exp_id, name=name[:256], tags=tags)
            try:
                values = self._insert(
                    pid, project, job_id, name, body, run_body, params, created_by, also
                )
                break
            except IntegrityError:
                # The key was used before (or is being, at this moment): that job, whose run
                # and rows stand (this call's were not kept).
                found = self._by_key(pid, body.idempotency_key) if body.idempotency_key else None
                if found is None:
                    raise
                return self.get(project, found)
            except NotFound as exc:
                # The remembered experiment id is gone (purged): look it up again, once.
                if fresh or (exc.details or {}).get("field") != "experiment_id":
                    raise
                self._experiments.pop((project, body.experiment), None)
        if self.on_submit is not None:
            self.on_submit()
        # As written (a worker may have claimed it since: ``get`` says so).
        return self._public(project, SimpleNamespace(**values, **_UNSET))

    def _insert(
        self,
        pid: str,
        project: str,
        job_id: str,
        name: str,
        body: JobCreate,
        run_body: RunCreate,
        params: list[tuple[str, str]],
        created_by: str | None,
        also: Callable[[Connection, str, str], object] | None,
    ) -> dict[str, Any]:
        """The run, its params and the job: one commit (a job is never seen without its run).
        Returns the job's row as written."""
        with self.db.write() as conn:
            now = now_ms()
            run = self.tracking.create_run_in(
                conn, pid, project, run_body, created_by=created_by, params=params
            )
            values: dict[str, Any] = {
                "id": job_id,
                "project_id": pid,
                "name": name,
                "status": Q,
                "spec": body.model_dump_json(),
                "slots": body.resources.cpus * body.instance_count,
                "run_id": run.id,
                "experiment_id": run_body.experiment_id,
                "attempt": 0,
                "max_attempts": body.retries + 1,
                "stop_requested": False,
                "idempotency_key": body.idempotency_key,
                "tuning_job_id": body.tuning_job_id,
                "runtime_ms": 0,
                "created_by": created_by,
                "created_at": now,
                "updated_at": now,
            }
            conn.execute(jobs.insert().values(**values))
            if also is not None:
                also(conn, job_id, run.id)
        return values

    def _experiment(self, project: str, name: str, fresh: bool = False) -> str:
        """The id of the project's experiment ``name`` (made if missing), remembered."""
        key = (project, name)
        if not fresh and key in self._experiments:
            return self._experiments[key]
        exp_id = self._experiment_id(project, name)
        if len(self._experiments) > 1000:
            self._experiments.clear()
        self._experiments[key] = exp_id
        return exp_id

    def _experiment_id(self, project: str, name: str) -> str:
        try:
            return self.tracking.get_experiment_by_name(project, name).id
        except NotFound:
            try:
                return self.tracking.create_experiment(
                    project, validate(ExperimentCreate, name=name)
                ).id
            except AlreadyExists:
                return self.tracking.get_experiment_by_name(project, name).id

    def _by_key(self, pid: str, key: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(  # type: ignore[no-any-return]
                select(jobs.c.id).where(jobs.c.project_id == pid, jobs.c.idempotency_key == key)
            ).scalar_one_or_none()

    def get(self, project: str, job_id: str) -> Job:
        """Raises ``NotFound`` for a job not in this project."""
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            row = conn.execute(
                select(jobs).where(jobs.c.id == job_id, jobs.c.project_id == pid)
            ).first()
        if row is None:
            raise NotFound(f"job {job_id!r} not found in project {project!r}", {"field": "job_id"})
        return self._public(project, row)

    def get_many(self, project: str, job_ids: Collection[str]) -> dict[str, Job]:
        """The project's jobs among ``job_ids``, by id, in one query (a missing one is absent)."""
        if not job_ids:
            return {}
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            rows = conn.execute(
                select(jobs).where(jobs.c.project_id == pid, jobs.c.id.in_(list(job_ids)))
            ).all()
        return {r.id: self._public(project, r) for r in rows}

    def list(
        self,
        project: str,
        *,
        status: JobStatus | Sequence[JobStatus] | None = None,
        tuning_job_id: str | None = None,
        page_token: str | None = None,
        max_results: int = 100,
    ) -> JobsPublic:
        """Newest first. ``status`` is one status or several; ``count`` is the total matching."""
        pid = self.projects.project_id(project)
        check_page_size(max_results)
        offset = decode_page_token(page_token)
        cond = [jobs.c.project_id == pid]
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            cond.append(jobs.c.status.in_([JobStatus(s).value for s in wanted]))
        if tuning_job_id is not None:
            cond.append(jobs.c.tuning_job_id == tuning_job_id)
        q = (
            select(jobs)
            .where(*cond)
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .offset(offset)
            .limit(max_results + 1)
        )
        with self.db.read() as conn:
            rows = conn.execute(q).all()
            count = conn.execute(select(func.count()).select_from(jobs).where(*cond)).scalar_one()
        return JobsPublic(
            data=[self._public(project, r) for r in rows[:max_results]],
            count=int(count),
            next_page_token=next_token(offset, max_results, len(rows)),
        )

    def stop(self, project: str, job_id: str, reason: str | None = None) -> Job:
        """Stop a job: a queued one is ``stopped`` at once; a running one is asked to stop and
        its worker ends its tasks (``stop_requested`` until then). A final job is returned as it
        is."""
        job = self.get(project, job_id)
        if job.status.final:
            return job
        now = now_ms()
        with self.db.write() as conn:
            n = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == Q)
                .values(
                    status=JobStatus.stopped.value,
                    stop_requested=True,
                    stop_reason=reason,
                    failure_reason=None,
                    ended_at=now,
                    updated_at=now,
                )
            ).rowcount
            if n:
                note = f"stopped before it started: {reason or 'on request'}"
                _insert_line(conn, job_id, job.attempt, note)
            else:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status.in_([S, R]))
                    .values(stop_requested=True, stop_reason=reason, updated_at=now)
                )
        if n:
            self._end_run(project, job.run_id, JobStatus.stopped)
            self._job_ended(job_id)
        return self.get(project, job_id)

    def wait(
        self, project: str, job_id: str, timeout_s: float | None = None, poll_s: float = 0.1
    ) -> Job:
        """Until the job is final or ``timeout_s`` passed; return it either way. A job that
        ends in this process is seen at once; one that another process ends, within
        ``poll_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get(project, job_id)
            if job.status.final or (deadline is not None and time.monotonic() >= deadline):
                return job
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            self.wait_for_end([job_id], max(0.0, left))

    def wait_for_end(
        self,
        job_ids: Collection[str | None],
        timeout_s: float,
        stop: threading.Event | None = None,
    ) -> bool:
        """Block until one of ``job_ids`` has become final in this process (its worker, a
        stop or the reaper here wrote it), ``stop`` is set, or ``timeout_s`` passed. Returns
        True when one of them ended. Jobs that another process ends are not seen: a caller
        polls the store between waits (``timeout_s`` is its poll interval)."""
        wanted = {j for j in job_ids if j}
        deadline = time.monotonic() + timeout_s
        with self._ended_cv:
            while True:
                if any(j in self._ended for j in wanted):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return False
                # In slices when there is a stop event to watch as well.
                self._ended_cv.wait(min(left, 0.05) if stop is not None else left)

    def logs(self, project: str, job_id: str, after_seq: int = 0, limit: int = 1000) -> JobLogs:
        """The log chunks after ``after_seq``, oldest first. ``done`` is True once the job is
        final and nothing more is left to read: a follower stops there."""
        job = self.get(project, job_id)  # first: chunks written before a final status are seen
        check_page_size(limit)
        with self.db.read() as conn:
            rows = conn.execute(
                select(job_logs)
                .where(job_logs.c.job_id == job_id, job_logs.c.seq > after_seq)
                .order_by(job_logs.c.seq)
                .limit(limit)
            ).all()
        chunks = [
            JobLogChunk(
                seq=r.seq,
                attempt=r.attempt,
                rank=r.rank,
                data=r.data,
                created_at=ms_to_dt(r.created_at),
            )
            for r in rows
        ]
        return JobLogs(
            data=chunks,
            next_seq=chunks[-1].seq if chunks else after_seq,
            done=job.status.final and len(rows) < limit,
            status=job.status,
        )

    def delete(self, project: str, job_id: str) -> None:
        """Delete a final job and its log (its run stays). Raises ``Conflict`` for an active
        job: stop it first."""
        job = self.get(project, job_id)
        if not job.status.final:
            raise Conflict(
                f"job {job_id} is {job.status.value}: stop it before deleting it",
                {"field": "job_id", "status": job.status.value},
            )
        with self.db.write() as conn:
            conn.execute(job_logs.delete().where(job_logs.c.job_id == job_id))
            conn.execute(jobs.delete().where(jobs.c.id == job_id))

    def _public(self, project: str, row: Any) -> Job:
        return Job(
            id=row.id,
            project=project,
            name=row.name,
            status=JobStatus(row.status),
            run_id=row.run_id,
            experiment_id=row.experiment_id,
            attempt=row.attempt,
            attempts=row.max_attempts,
            failure_reason=row.failure_reason,
            stop_requested=bool(row.stop_requested),
            report=orjson.loads(row.report) if row.report else None,
            model_artifact_path=row.model_artifact_path,
            worker=row.lease_owner,
            runtime_s=self._runtime_ms(row) / 1000,
            spec=JobCreate.model_validate_json(row.spec),
            tuning_job_id=row.tuning_job_id,
            created_by=row.created_by,
            created_at=ms_to_dt(row.created_at),
            updated_at=ms_to_dt(row.updated_at),
            started_at=ms_to_dt(row.started_at),
            ended_at=ms_to_dt(row.ended_at),
        )

    @staticmethod
    def _runtime_ms(row: Any) -> int:
        ms = int(row.runtime_ms or 0)
        if row.status in (S, R) and row.attempt_started_at:
            ms += max(0, now_ms() - int(row.attempt_started_at))
        return ms


def _param(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)
