"""Hyperparameter tuning: tuning jobs and their trials. The only module that queries the tuning
tables.

Two kinds of tuning job share the tables and the API:

- ``job``: each trial is a training job (``JobService.submit`` with the sampled
  hyperparameters) and its run. A coordinator thread in the process that created (or adopted)
  the tuning job keeps up to ``max_parallel`` trials running, reads each trial's objective metric
  from its run to feed the pruner, stops pruned trials, and ends the tuning job (see
  ``tuning.coordinator``). It holds a lease; a process that starts (``start``) adopts tuning jobs
  whose lease ran out and resumes them from their trial rows.
- ``function``: each trial is a Python function called in the SDK's process (``sy.tune``),
  which reports finished trials here in batches (``report_trials``); the runs of a batch are
  recorded in one transaction, so a trial costs well under a millisecond of bookkeeping.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.db import Database
from shipyard.core.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.schemas import validate
from shipyard.core.threads import Coordinators
from shipyard.core.timeutil import dt_to_ms, ms_to_dt, now_ms
from shipyard.projects.service import ProjectService
from shipyard.tracking.schemas import ExperimentCreate, MetricRow, RunStatus
from shipyard.tracking.service import RunRecord, TrackingService
from shipyard.tuning import engine
from shipyard.tuning.schemas import (
    BestTrial,
    RegisterBest,
    TrialCounts,
    TrialPublic,
    TrialsReport,
    TrialState,
    TuningJobCreate,
    TuningJobKind,
    TuningJobPublic,
    TuningJobsPublic,
    TuningJobStatus,
)
from shipyard.tuning.tables import tuning_jobs, tuning_trials

if TYPE_CHECKING:
    from shipyard.jobs.service import JobService
    from shipyard.models.schemas import ModelVersionPublic
    from shipyard.models.service import ModelService

log = logging.getLogger("shipyard.tuning")

ACTIVE = (TuningJobStatus.running.value, TuningJobStatus.stopping.value)
DEFAULT_EXPERIMENT = "tuning"
_RUN_STATUS = {
    TrialState.completed: RunStatus.FINISHED,
    TrialState.pruned: RunStatus.KILLED,
    TrialState.stopped: RunStatus.KILLED,
    TrialState.failed: RunStatus.FAILED,
}


def spec_of(row: Any) -> TuningJobCreate:
    return TuningJobCreate.model_validate_json(row.spec)


def config_of(spec: TuningJobCreate) -> engine.SearchConfig:
    return engine.SearchConfig(
        space=dict(spec.space),
        direction=spec.objective.direction,
        strategy=spec.strategy,
        early_stopping=engine.effective_early_stopping(spec.strategy, spec.early_stopping),
        min_resource=spec.min_resource,
        max_resource=spec.max_resource,
        reduction_factor=spec.reduction_factor,
        seed=spec.seed,
    )


def trial_row(r: Any) -> engine.TrialRow:
    return engine.TrialRow(
        number=r.number,
        params=orjson.loads(r.params),
        state=TrialState(r.state),
        value=r.value,
        intermediate_values=_intermediate(r.intermediate_values),
    )


def _intermediate(raw: str | None) -> dict[int, float]:
    if not raw:
        return {}
    return {int(s): float(v) for s, v in orjson.loads(raw)}


def dump_intermediate(values: dict[int, float]) -> str | None:
    if not values:
        return None
    return orjson.dumps([[s, values[s]] for s in sorted(values)]).decode()


class TuningService:
    def __init__(
        self,
        db: Database,
        projects: ProjectService,
        tracking: TrackingService,
        models: ModelService,
        jobs: JobService | None = None,
        *,
        lease_s: float = 30.0,
        # A poll is one query (which trial jobs ended); a trial ended by this process's worker
        # wakes the coordinator at once, so this bounds only the wait for other workers.
        poll_s: float = 0.05,
    ) -> None:
        self.db = db
        self.projects = projects
        self.tracking = tracking
        self.models = models
        self.jobs = jobs
        self.lease_ms = int(lease_s * 1000)
        self.poll_s = poll_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._coordinators = Coordinators()

    # -- create --------------------------------------------------------------------------------

    def create(
        self, project: str, body: TuningJobCreate, created_by: str | None = None
    ) -> TuningJobPublic:
        """Check the search space and start the tuning job. Raises ``InvalidArgument`` naming
        the parameter or field at fault, ``NotFound`` for an unknown warm-start job."""
        pid = self.projects.project_id(project)
        if body.idempotency_key:
            found = self._by_key(pid, body.idempotency_key)
            if found is not None:
                return self.get(project, found)
        engine.check_space(body.space, body.strategy)
        if body.kind == TuningJobKind.job:
            if self.jobs is None:
                raise Conflict("this Shipyard runs no training jobs; tuning trials need them")
            assert body.trial is not None
            clash = sorted(set(body.trial.hyperparameters) & set(body.space))
            if clash:
                raise InvalidArgument.for_field(
                    f"trial.hyperparameters.{clash[0]}",
                    "is also in the search space; give it in one place only",
                )
            if body.trial.tuning_job_id is not None:
                raise InvalidArgument.for_field(
                    "trial.tuning_job_id", "is set by the tuning job; leave it out"
                )
            if body.trial.idempotency_key is not None:
                raise InvalidArgument.for_field(
                    "trial.idempotency_key", "is set per trial by the tuning job; leave it out"
                )
        with self.db.read() as conn:
            for i, wid in enumerate(body.warm_start_from):
                w = conn.execute(
                    select(tuning_jobs.c.id).where(
                        tuning_jobs.c.id == wid, tuning_jobs.c.project_id == pid
                    )
                ).first()
                if w is None:
                    raise NotFound(
                        f"warm_start_from[{i}]: tuning job {wid!r} not found in project "
                        f"{project!r}",
                        {"field": f"warm_start_from[{i}]"},
                    )
        experiment = body.experiment or DEFAULT_EXPERIMENT
        exp_id = self._experiment(project, experiment)
        job_id = new_id()
        name = body.name or f"tuning-{job_id[-6:]}"
        now = now_ms()
        drive = body.kind == TuningJobKind.job
        try:
            with self.db.write() as conn:
                conn.execute(
                    tuning_jobs.insert().values(
                        id=job_id,
                        project_id=pid,
                        name=name,
                        kind=body.kind.value,
                        status=TuningJobStatus.running.value,
                        spec=body.model_dump_json(),
                        objective_metric=body.objective.metric,
                        direction=body.objective.direction.value,
                        max_trials=body.max_trials,
                        max_parallel=body.max_parallel,
                        experiment_id=exp_id,
                        idempotency_key=body.idempotency_key,
                        owner=self.owner if drive else None,
                        # A function job's lease is renewed by the SDK's reports and heartbeats.
                        lease_expires_at=now + self.lease_ms,
                        created_by=created_by,
                        started_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            found = self._by_key(pid, body.idempotency_key) if body.idempotency_key else None
            if found is None:
                raise
            return self.get(project, found)
        if drive:
            self._start(job_id)
        return self.get(project, job_id)

    def _experiment(self, project: str, name: str) -> str:
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
                select(tuning_jobs.c.id).where(
                    tuning_jobs.c.project_id == pid, tuning_jobs.c.idempotency_key == key
                )
            ).scalar_one_or_none()

    # -- read ----------------------------------------------------------------------------------

    def _row(self, conn: Connection, pid: str, tuning_job_id: str) -> Any:
        row = conn.execute(
            select(tuning_jobs).where(
                tuning_jobs.c.id == tuning_job_id, tuning_jobs.c.project_id == pid
            )
        ).first()
        if row is None:
            raise NotFound(f"tuning job {tuning_job_id!r} not found", {"field": "tuning_job_id"})
        return row

    def _expire(self, pid: str, tuning_job_id: str | None) -> None:
        """A function tuning job whose SDK process stopped reporting (its lease ran out: the
        notebook or script died mid-search) is failed, so it never stays running forever."""
        now = now_ms()
        cond = [
            tuning_jobs.c.project_id == pid,
            tuning_jobs.c.kind == TuningJobKind.function.value,
            tuning_jobs.c.status.in_(ACTIVE),
            tuning_jobs.c.lease_expires_at < now,
        ]
        if tuning_job_id is not None:
            cond.append(tuning_jobs.c.id == tuning_job_id)
        with self.db.read() as conn:
            if conn.execute(select(tuning_jobs.c.id).where(*cond).limit(1)).first() is None:
                return
        with self.db.write() as conn:
            conn.execute(
                update(tuning_jobs)
                .where(*cond)
                .values(
                    status=TuningJobStatus.failed.value,
                    failure_reason="the process running sy.tune stopped reporting (it ended "
                    "or was killed); the trials it reported are kept",
                    ended_at=now,
                    updated_at=now,
                )
            )

    def get(self, project: str, tuning_job_id: str, *, with_trials: bool = True) -> TuningJobPublic:
        """The tuning job, its best trial, and (``with_trials``) every trial by number."""
        pid = self.projects.project_id(project)
        self._expire(pid, tuning_job_id)
        with self.db.read() as conn:
            row = self._row(conn, pid, tuning_job_id)
            trials = conn.execute(
                select(tuning_trials)
                .where(tuning_trials.c.tuning_job_id == tuning_job_id)
                .order_by(tuning_trials.c.number)
            ).all()
        return self._public(project, row, trials, with_trials=with_trials)

    def trial_rows(self, tuning_job_id: str) -> list[engine.TrialRow]:
        with self.db.read() as conn:
            return [
                trial_row(r)
                for r in conn.execute(
                    select(tuning_trials).where(tuning_trials.c.tuning_job_id == tuning_job_id)
                ).all()
            ]

    def list(
        self,
        project: str,
        *,
        status: TuningJobStatus | None = None,
        kind: TuningJobKind | None = None,
        name_like: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> TuningJobsPublic:
        """Newest first; ``count`` is the total matching."""
        pid = self.projects.project_id(project)
        check_page_size(page_size)
        self._expire(pid, None)
        offset = decode_page_token(page_token)
        cond = [tuning_jobs.c.project_id == pid]
        if status is not None:
            cond.append(tuning_jobs.c.status == TuningJobStatus(status).value)
        if kind is not None:
            cond.append(tuning_jobs.c.kind == TuningJobKind(kind).value)
        if name_like:
            cond.append(tuning_jobs.c.name.like(name_like))
        q = (
            select(tuning_jobs)
            .where(*cond)
            .order_by(tuning_jobs.c.created_at.desc(), tuning_jobs.c.id.desc())
            .offset(offset)
            .limit(page_size + 1)
        )
        with self.db.read() as conn:
            rows = conn.execute(q).all()
            count = conn.execute(
                select(func.count()).select_from(tuning_jobs).where(*cond)
            ).scalar_one()
            ids = [r.id for r in rows[:page_size]]
            trials = (
                conn.execute(
                    select(tuning_trials).where(tuning_trials.c.tuning_job_id.in_(ids))
                ).all()
                if ids
                else []
            )
        by_job: dict[str, list[Any]] = {}
        for t in trials:
            by_job.setdefault(t.tuning_job_id, []).append(t)
        return TuningJobsPublic(
            data=[
                self._public(project, r, by_job.get(r.id, []), with_trials=False)
                for r in rows[:page_size]
            ],
            count=int(count),
            next_page_token=next_token(offset, page_size, len(rows)),
        )

    def _public(
        self, project: str, row: Any, trials: Sequence[Any], *, with_trials: bool
    ) -> TuningJobPublic:
        spec = spec_of(row)
        counts = TrialCounts(total=len(trials))
        for t in trials:
            setattr(counts, t.state, getattr(counts, t.state) + 1)
        rows = [trial_row(t) for t in trials]
        best_row = engine.best_of(rows, spec.objective.direction)
        best = None
        if best_row is not None and best_row.value is not None:
            src = next(t for t in trials if t.number == best_row.number)
            best = BestTrial(
                number=best_row.number,
                params=best_row.params,
                value=best_row.value,
                run_id=src.run_id,
                job_id=src.job_id,
            )
        return TuningJobPublic(
            id=row.id,
            project=project,
            name=row.name,
            kind=TuningJobKind(row.kind),
            status=TuningJobStatus(row.status),
            objective=spec.objective,
            space=spec.space,
            strategy=spec.strategy,
            early_stopping=engine.effective_early_stopping(spec.strategy, spec.early_stopping),
            max_trials=spec.max_trials,
            max_parallel=spec.max_parallel,
            min_resource=spec.min_resource,
            max_resource=spec.max_resource,
            reduction_factor=spec.reduction_factor,
            seed=spec.seed,
            warm_start_from=spec.warm_start_from,
            trial=spec.trial,
            experiment=spec.experiment or DEFAULT_EXPERIMENT,
            tags=spec.tags,
            trials_count=counts,
            best=best,
            failure_reason=row.failure_reason,
            created_by=row.created_by,
            started_at=ms_to_dt(row.started_at),
            ended_at=ms_to_dt(row.ended_at),
            created_at=ms_to_dt(row.created_at),
            updated_at=ms_to_dt(row.updated_at),
            trials=[
                TrialPublic(
                    number=t.number,
                    params=orjson.loads(t.params),
                    state=TrialState(t.state),
                    value=t.value,
                    intermediate_values=_intermediate(t.intermediate_values),
                    job_id=t.job_id,
                    run_id=t.run_id,
                    error=t.error,
                    started_at=ms_to_dt(t.started_at),
                    ended_at=ms_to_dt(t.ended_at),
                )
                for t in trials
            ]
            if with_trials
            else None,
        )

    def wait(
        self, project: str, tuning_job_id: str, timeout_s: float | None = None, poll_s: float = 0.2
    ) -> TuningJobPublic:
        """Poll until the tuning job is final or ``timeout_s`` passed; return it either way."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get(project, tuning_job_id, with_trials=False)
            if job.status.final or (deadline is not None and time.monotonic() >= deadline):
                return self.get(project, tuning_job_id)
            time.sleep(poll_s)

    # -- function trials (reported by the SDK) ---------------------------------------------------

    def report_trials(
        self,
        project: str,
        tuning_job_id: str,
        body: TrialsReport,
        created_by: str | None = None,
    ) -> TuningJobPublic:
        """Record finished trials of a ``function`` tuning job (and their runs, in one
        transaction), and end the job when ``body.status`` says so. Returns the job without its
        trials: its ``status`` tells the SDK whether someone stopped it meanwhile."""
        pid = self.projects.project_id(project)
        numbers = [t.number for t in body.trials]
        with self.db.read() as conn:
            row = self._row(conn, pid, tuning_job_id)
            # A batch sent again (a retry after a lost answer) is recorded once.
            known = set(
                conn.execute(
                    select(tuning_trials.c.number).where(
                        tuning_trials.c.tuning_job_id == tuning_job_id,
                        tuning_trials.c.number.in_(numbers),
                    )
                ).scalars()
            )
        if row.kind != TuningJobKind.function.value:
            raise InvalidArgument.for_field(
                "tuning_job_id", "trials are reported only for a function tuning job"
            )
        if len(set(numbers)) != len(numbers):
            raise InvalidArgument.for_field("trials", "a trial number is given twice")
        # A job stopped from elsewhere still takes the trials that ran before the SDK saw it.
        ended = TuningJobStatus(row.status) in (TuningJobStatus.completed, TuningJobStatus.failed)
        if ended and set(numbers) - known:
            raise Conflict(
                f"tuning job {tuning_job_id} is {row.status}; it takes no more trials",
                {"status": row.status},
            )
        metric = row.objective_metric
        records, trials = [], []
        now = now_ms()
        for i, t in enumerate(body.trials):
            if t.number in known:
                continue
            if t.state == TrialState.running:
                raise InvalidArgument.for_field(f"trials[{i}].state", "expected a final state")
            if t.value is not None and not math.isfinite(t.value):
                raise InvalidArgument.for_field(f"trials[{i}].value", "expected a finite number")
            start = dt_to_ms(t.started_at) if t.started_at else now
            end = dt_to_ms(t.ended_at) if t.ended_at else now
            points: list[MetricRow] = [
                (metric, v, s, end) for s, v in sorted(t.intermediate_values.items())
            ]
            if t.value is not None and t.state == TrialState.completed:
                last = max(t.intermediate_values, default=-1)
                points.append((metric, t.value, last + 1, end))
            points.extend((k, v, step, end) for k, v, step in t.metrics)
            if t.run_id is None:
                records.append(
                    RunRecord(
                        name=f"{row.name}-{t.number}",
                        status=_RUN_STATUS[t.state],
                        start_time=start,
                        end_time=end,
                        params={k: _param(v) for k, v in t.params.items()},
                        tags={
                            "shipyard.tuning_job_id": tuning_job_id,
                            "shipyard.trial": str(t.number),
                        },
                        metrics=points,
                    )
                )
            trials.append((t, start, end))
        run_ids = iter(
            self.tracking.record_runs(project, row.experiment_id, records, created_by)
            if records
            else []
        )
        values = [
            {
                "tuning_job_id": tuning_job_id,
                "number": t.number,
                "params": orjson.dumps(t.params).decode(),
                "state": t.state.value,
                "value": t.value,
                "intermediate_values": dump_intermediate(t.intermediate_values),
                "job_id": None,
                "run_id": t.run_id or next(run_ids),
                "error": t.error,
                "started_at": start,
                "ended_at": end,
            }
            for t, start, end in trials
        ]
        with self.db.write() as conn:
            if values:
                try:
                    conn.execute(tuning_trials.insert(), values)
                except IntegrityError:  # the same batch, sent twice at the same moment
                    raise Conflict(
                        "a trial with one of these numbers was already reported",
                        {"field": "trials"},
                    ) from None
            if body.status is not None:
                reason = body.failure_reason
                conn.execute(
                    update(tuning_jobs)
                    .where(tuning_jobs.c.id == tuning_job_id, tuning_jobs.c.status.in_(ACTIVE))
                    .values(
                        status=body.status,
                        failure_reason=reason,
                        ended_at=now_ms(),
                        updated_at=now_ms(),
                    )
                )
            else:
                conn.execute(
                    update(tuning_jobs)
                    .where(tuning_jobs.c.id == tuning_job_id)
                    .values(updated_at=now_ms(), lease_expires_at=now_ms() + self.lease_ms)
                )
        return self.get(project, tuning_job_id, with_trials=False)

    # -- stop, register --------------------------------------------------------------------------

    def stop(self, project: str, tuning_job_id: str) -> TuningJobPublic:
        """Stop the search: running trials are stopped (their jobs too) and no more start.
        A final tuning job is returned as it is."""
        pid = self.projects.project_id(project)
        now = now_ms()
        with self.db.write() as conn:
            row = self._row(conn, pid, tuning_job_id)
            final = TuningJobStatus(row.status).final
            function = row.kind == TuningJobKind.function.value
            if not final:
                # A function job's SDK loop sees ``stopped`` at its next report and ends there;
                # a job tuning job's coordinator stops its trials, then marks it stopped.
                status = TuningJobStatus.stopped if function else TuningJobStatus.stopping
                conn.execute(
                    update(tuning_jobs)
                    .where(tuning_jobs.c.id == tuning_job_id)
                    .values(
                        status=status.value,
                        ended_at=now if function else None,
                        updated_at=now,
                    )
                )
            orphan = (row.lease_expires_at or 0) < now
        if final or function:
            return self.get(project, tuning_job_id)
        if not self._coordinators.stop(tuning_job_id) and orphan:
            self.stop_trials(project, tuning_job_id, "the tuning job was stopped")
            self.finish(tuning_job_id, TuningJobStatus.stopped, None, owner=None)
        return self.get(project, tuning_job_id)

    def delete(self, project: str, tuning_job_id: str) -> None:
        """Forget a tuning job and its trial rows (the trials' jobs and runs stay, each with its
        own lifecycle). Raises ``Conflict`` while it runs: stop it first."""
        pid = self.projects.project_id(project)
        self._expire(pid, tuning_job_id)
        with self.db.write() as conn:
            row = self._row(conn, pid, tuning_job_id)
            if row.status in ACTIVE:
                raise Conflict(
                    f"tuning job {tuning_job_id} is {row.status}; stop it first",
                    {"status": row.status},
                )
            conn.execute(
                delete(tuning_trials).where(tuning_trials.c.tuning_job_id == tuning_job_id)
            )
            conn.execute(delete(tuning_jobs).where(tuning_jobs.c.id == tuning_job_id))

    def stop_trials(self, project: str, tuning_job_id: str, reason: str) -> None:
        """Stop every running trial's job and mark the trials stopped."""
        with self.db.read() as conn:
            running = conn.execute(
                select(tuning_trials.c.number, tuning_trials.c.job_id).where(
                    tuning_trials.c.tuning_job_id == tuning_job_id,
                    tuning_trials.c.state == TrialState.running.value,
                )
            ).all()
        for r in running:
            if r.job_id and self.jobs is not None:
                with contextlib.suppress(NotFound):
                    self.jobs.stop(project, r.job_id, reason=reason)
        if running:
            now = now_ms()
            with self.db.write() as conn:
                conn.execute(
                    update(tuning_trials)
                    .where(
                        tuning_trials.c.tuning_job_id == tuning_job_id,
                        tuning_trials.c.state == TrialState.running.value,
                    )
                    .values(state=TrialState.stopped.value, error=reason, ended_at=now)
                )

    def finish(
        self,
        tuning_job_id: str,
        status: TuningJobStatus,
        reason: str | None,
        *,
        owner: str | None,
    ) -> bool:
        """End the tuning job (only while ``owner`` holds it, when given)."""
        now = now_ms()
        q = update(tuning_jobs).where(
            tuning_jobs.c.id == tuning_job_id, tuning_jobs.c.status.in_(ACTIVE)
        )
        if owner is not None:
            q = q.where(tuning_jobs.c.owner == owner)
        with self.db.write() as conn:
            return bool(
                conn.execute(
                    q.values(
                        status=status.value,
                        failure_reason=reason,
                        owner=None,
                        lease_expires_at=None,
                        ended_at=now,
                        updated_at=now,
                    )
                ).rowcount
            )

    def register_best(
        self, project: str, tuning_job_id: str, body: RegisterBest, created_by: str | None = None
    ) -> ModelVersionPublic:
        """Register the best trial's model (its run's ``artifact_path`` folder) as a new
        version of ``body.model_name``. Raises ``Conflict`` when no trial completed yet."""
        from shipyard.models.schemas import ModelVersionCreate

        job = self.get(project, tuning_job_id, with_trials=False)
        if job.best is None or job.best.run_id is None:
            raise Conflict(
                f"tuning job {tuning_job_id} has no completed trial yet; nothing to register",
                {"field": "tuning_job_id"},
            )
        path = body.artifact_path.strip("/")
        return self.models.register_model(
            project,
            body.model_name,
            ModelVersionCreate(
                source=f"runs:/{job.best.run_id}/{path}",
                description=body.description
                or f"best trial {job.best.number} of tuning job {job.name} "
                f"({job.objective.metric}={job.best.value:.6g})",
                tags={
                    "shipyard.tuning_job_id": tuning_job_id,
                    "shipyard.trial": str(job.best.number),
                },
            ),
            created_by=created_by,
        )

    # -- the coordinators --------------------------------------------------------------------------

    def start(self) -> Sequence[str]:
        """Adopt ``job`` tuning jobs nobody drives (their process ended or its lease ran out)
        and resume them from their trial rows. Returns their ids."""
        if self.jobs is None:
            return []
        now = now_ms()
        with self.db.read() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    select(tuning_jobs.c.id).where(
                        tuning_jobs.c.kind == TuningJobKind.job.value,
                        tuning_jobs.c.status.in_(ACTIVE),
                        (tuning_jobs.c.lease_expires_at.is_(None))
                        | (tuning_jobs.c.lease_expires_at < now),
                    )
                ).all()
            ]
        adopted = []
        for jid in ids:
            if self.adopt(jid):
                adopted.append(jid)
        return adopted

    def resume(self, project: str, tuning_job_id: str) -> TuningJobPublic:
        """Drive a ``job`` tuning job in this process when the process that drove it has ended
        (a notebook closed before its search did). Raises ``Conflict`` while another process
        holds it, or when it is over."""
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            row = self._row(conn, pid, tuning_job_id)
        if row.kind != TuningJobKind.job.value:
            raise Conflict(
                "a function tuning job runs in the process that called sy.tune; it cannot be "
                "resumed elsewhere",
                {"field": "tuning_job_id"},
            )
        if row.status not in ACTIVE:
            raise Conflict(f"tuning job {tuning_job_id} is {row.status}", {"status": row.status})
        if tuning_job_id not in self._coordinators and not self.adopt(tuning_job_id):
            raise Conflict(
                f"tuning job {tuning_job_id} is driven by {row.owner} (lease until "
                f"{ms_to_dt(row.lease_expires_at)})",
                {"owner": row.owner},
            )
        return self.get(project, tuning_job_id)

    def adopt(self, tuning_job_id: str) -> bool:
        """Take a tuning job over if nobody holds its lease, and drive it here."""
        now = now_ms()
        with self.db.write() as conn:
            n = conn.execute(
                update(tuning_jobs)
                .where(
                    tuning_jobs.c.id == tuning_job_id,
                    tuning_jobs.c.kind == TuningJobKind.job.value,
                    tuning_jobs.c.status.in_(ACTIVE),
                    (tuning_jobs.c.lease_expires_at.is_(None))
                    | (tuning_jobs.c.lease_expires_at < now),
                )
                .values(owner=self.owner, lease_expires_at=now + self.lease_ms, updated_at=now)
            ).rowcount
        if not n:
            return False
        log.info("tuning job %s: adopted by %s", tuning_job_id, self.owner)
        self._start(tuning_job_id)
        return True

    def _start(self, tuning_job_id: str) -> None:
        """Drive the tuning job in a thread of this process (unless one does, or this service
        is shutting down)."""
        self._coordinators.start(
            tuning_job_id, f"tuning-{tuning_job_id}", lambda ev: self._drive(tuning_job_id, ev)
        )

    def _drive(self, jid: str, stop: threading.Event) -> None:
        from shipyard.tuning.coordinator import Coordinator

        try:
            Coordinator(self, jid, stop).run()
        except Exception as exc:
            log.exception("tuning job %s: coordinator failed", jid)
            try:
                self.finish(
                    jid,
                    TuningJobStatus.failed,
                    f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}",
                    owner=self.owner,
                )
            except Exception:
                log.exception("tuning job %s: could not record the failure", jid)

    def wait_idle(self, timeout_s: float | None = None) -> None:
        """Wait for this process's coordinators to end (tests, shutdown)."""
        self._coordinators.wait(timeout_s)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop driving tuning jobs here and release their leases: they stay ``running`` (their
        trial jobs go on in the job queue) and the next Shipyard to start resumes them."""
        self._coordinators.close()
        self._coordinators.stop_all()
        self.wait_idle(timeout_s)


def _param(v: object) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return repr(v)
    return str(v)
