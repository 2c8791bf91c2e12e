"""The job queue as workers see it: claim a job, renew its lease, copy its log, record how an
attempt ended, and reap the jobs of workers that died.

Mixed into ``JobService`` (the only code that queries the jobs tables). These calls take job ids,
not projects: a worker serves every project of its metadata store. Each change a worker makes is
conditional on the lease still being its own, so a worker that lost its lease (reaped while it
was stalled) can never overwrite what the reaper decided.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.errors import NotFound
from shipyard.core.timeutil import ms_to_dt, now_ms
from shipyard.jobs.schemas import JobCreate, JobStatus
from shipyard.jobs.tables import job_logs, jobs
from shipyard.tracking.schemas import MetricRow, RunStatus, RunUpdate

if TYPE_CHECKING:
    from shipyard.core.db import Database
    from shipyard.projects.service import ProjectService
    from shipyard.tracking.service import TrackingService

Q, S, R = JobStatus.queued.value, JobStatus.starting.value, JobStatus.running.value
_RUN_STATUS = {
    JobStatus.completed: RunStatus.FINISHED,
    JobStatus.failed: RunStatus.FAILED,
    JobStatus.stopped: RunStatus.KILLED,
}
LOST_WORKER = "the worker running it stopped heartbeating"
# How many recently ended job ids a process remembers for ``JobService.wait_for_end``.
ENDED_MEMORY = 4096
# One log chunk holds at most this much text; a larger read is split.
MAX_CHUNK = 64 * 1024


@dataclass
class ClaimedJob:
    """What a worker needs to run one attempt of a job it holds the lease of."""

    id: str
    project: str
    name: str
    spec: JobCreate
    run_id: str
    attempt: int
    max_attempts: int
    runtime_ms: int
    slots: int


@dataclass
class Heartbeat:
    held: bool  # False: the lease is no longer ours (reaped); stop running the job
    stop_requested: bool
    stop_reason: str | None


# The queued jobs a worker with ``free`` of its ``total`` slots could take: those that fit, and
# those larger than the whole executor (claimed to be failed with the reason: left queued, they
# would wait forever). Built once: a worker asks several times per job it runs.
_FITS = (jobs.c.slots <= bindparam("free")) | (jobs.c.slots > bindparam("total"))
_ANY_FITTING = select(jobs.c.id).where(jobs.c.status == Q, _FITS).limit(1)
_OLDEST_FITTING = (
    select(jobs)
    .where(jobs.c.status == Q, _FITS)
    .order_by(jobs.c.created_at, jobs.c.id)
    .limit(1)
    .with_for_update(skip_locked=True)
)


def _fit_params(free_slots: int, total_slots: int | None) -> dict[str, int]:
    return {"free": free_slots, "total": total_slots if total_slots is not None else 2**31 - 1}


class QueueMixin:
    db: Database
    projects: ProjectService
    tracking: TrackingService
    lease_ms: int
    # Jobs this process saw become final (oldest first), and a condition notified each time:
    # what lets a caller in this process (a tuning job's coordinator) react at once.
    _ended: dict[str, None]
    _ended_cv: threading.Condition
    # Jobs a worker in this process claimed and has not given back: how they end is written
    # here, so a waiter here is woken (``wait_for_end``) and need not poll the store often.
    _held_here: set[str]

    def held_here(self, job_ids: Collection[str | None]) -> bool:
        """Whether every one of ``job_ids`` is held by a worker in this process: its end (or
        its return to the queue) will wake ``wait_for_end`` here."""
        with self._ended_cv:
            return all(j is not None and j in self._held_here for j in job_ids)

    def _given_back(self, job_id: str) -> None:
        self.db.after_commit(lambda: self._note_given_back(job_id))

    def _note_given_back(self, job_id: str) -> None:
        with self._ended_cv:
            self._held_here.discard(job_id)
            self._ended_cv.notify_all()

    def _job_ended(self, job_id: str) -> None:
        """Record that ``job_id`` became final here (once the write has committed)."""
        self.db.after_commit(lambda: self._note_ended(job_id))

    def _note_ended(self, job_id: str) -> None:
        with self._ended_cv:
            self._ended[job_id] = None
            self._held_here.discard(job_id)
            while len(self._ended) > ENDED_MEMORY:
                del self._ended[next(iter(self._ended))]
            self._ended_cv.notify_all()

    def has_queued(self, free_slots: int, total_slots: int | None = None) -> bool:
        """A cheap read before the write that claims: is there a job this worker could take?"""
        with self.db.read() as conn:
            return (
                conn.execute(_ANY_FITTING, _fit_params(free_slots, total_slots)).first() is not None
            )

    def claim(
        self,
        owner: str,
        free_slots: int,
        lease_ms: int | None = None,
        total_slots: int | None = None,
        note: Callable[[ClaimedJob], str | None] | None = None,
    ) -> ClaimedJob | None:
        """Take the oldest queued job that fits in ``free_slots`` (or can never fit in
        ``total_slots``, to be failed): ``starting``, its lease ours,
        its attempt counted. Two workers never take the same job (PostgreSQL skips rows another
        transaction has locked; SQLite's write transaction holds the whole database).
        ``note(job)`` may give a line for the job's log, written in the same transaction."""
        now = now_ms()
        lease = lease_ms if lease_ms is not None else self.lease_ms
        with self.db.write() as conn:
            row = conn.execute(_OLDEST_FITTING, _fit_params(free_slots, total_slots)).first()
            if row is None:
                return None
            conn.execute(
                update(jobs)
                .where(jobs.c.id == row.id)
                .values(
                    status=S,
                    attempt=row.attempt + 1,
                    lease_owner=owner,
                    lease_expires_at=now + lease,
                    attempt_started_at=now,
                    started_at=row.started_at or now,
                    updated_at=now,
                )
            )
            job = ClaimedJob(
                id=row.id,
                project=self.projects.project_name(row.project_id),
                name=row.name,
                spec=JobCreate.model_validate_json(row.spec),
                run_id=row.run_id,
                attempt=row.attempt + 1,
                max_attempts=row.max_attempts,
                runtime_ms=int(row.runtime_ms or 0),
                slots=row.slots,
            )
            line = note(job) if note is not None else None
            if line:
                _insert_line(conn, job.id, job.attempt, line)
        with self._ended_cv:
            self._held_here.add(job.id)
        return job

    def mark_running(self, job_id: str, owner: str) -> None:
        with self.db.write() as conn:
            _mark_running(conn, job_id, owner)

    def heartbeat(
        self, owner: str, job_ids: Sequence[str], lease_ms: int | None = None
    ) -> dict[str, Heartbeat]:
        """Renew the leases this worker holds; say for each job whether it is still ours and
        whether a stop was asked for."""
        if not job_ids:
            return {}
        now = now_ms()
        lease = lease_ms if lease_ms is not None else self.lease_ms
        with self.db.write() as conn:
            conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.lease_owner == owner,
                    jobs.c.status.in_([S, R]),
                )
                .values(lease_expires_at=now + lease)
            )
            rows = conn.execute(
                select(
                    jobs.c.id,
                    jobs.c.lease_owner,
                    jobs.c.status,
                    jobs.c.stop_requested,
                    jobs.c.stop_reason,
                ).where(jobs.c.id.in_(list(job_ids)))
            ).all()
        found = {r.id: r for r in rows}
        out = {}
        for jid in job_ids:
            r = found.get(jid)
            held = r is not None and r.lease_owner == owner and r.status in (S, R)
            out[jid] = Heartbeat(
                held=held,
                stop_requested=bool(r.stop_requested) if r is not None else True,
                stop_reason=r.stop_reason if r is not None else None,
            )
        return out

    def stop_requests(self, job_ids: Sequence[str]) -> dict[str, str | None]:
        """The jobs among ``job_ids`` that were asked to stop (or deleted), with the reason."""
        if not job_ids:
            return {}
        with self.db.read() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.stop_requested, jobs.c.stop_reason).where(
                    jobs.c.id.in_(list(job_ids))
                )
            ).all()
        found = {r.id: r for r in rows}
        return {
            jid: (found[jid].stop_reason if jid in found else "the job was deleted")
            for jid in job_ids
            if jid not in found or found[jid].stop_requested
        }

    def append_logs(
        self,
        job_id: str,
        entries: Sequence[tuple[int, int | None, str]],
        running_owner: str | None = None,
    ) -> None:
        """Append ``(attempt, rank, text)`` chunks to the job's log, numbered in order. With
        ``running_owner``, the job goes from ``starting`` to ``running`` (if that worker holds
        it) in the same transaction, before its lines are seen."""
        if not entries and running_owner is None:
            return
        for tries in range(3):
            try:
                with self.db.write() as conn:
                    if running_owner is not None:
                        _mark_running(conn, job_id, running_owner)
                    _insert_chunks(conn, job_id, entries)
                return
            except IntegrityError:
                # Another writer (a stop, the reaper) numbered a line at the same moment.
                if tries == 2:
                    raise

    def _system_line(self, job_id: str, attempt: int, text: str) -> None:
        with contextlib.suppress(IntegrityError):  # the job was deleted meanwhile
            self.append_logs(job_id, [(attempt, None, f"shipyard: {text}\n")])

    def log_metrics(self, project: str, run_id: str, rows: Sequence[MetricRow]) -> None:
        if rows:
            self.tracking.log_batch(project, run_id, metrics_=rows)

    def read_report(self, project: str, run_id: str) -> dict[str, Any] | None:
        """The ``report.json`` artifact the launcher left on the run, if any."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.tracking.download_artifacts(project, run_id, "report.json", tmp)
                data = orjson.loads(path.read_bytes())
        except (NotFound, OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def finish_attempt(
        self,
        job_id: str,
        owner: str,
        *,
        status: JobStatus,
        retry: bool = False,
        failure_reason: str | None = None,
        report: dict[str, Any] | None = None,
        model_artifact_path: str | None = None,
        note: str | None = None,
        logs: Sequence[tuple[int, int | None, str]] = (),
    ) -> JobStatus | None:
        """Record how an attempt ended: a final ``status``, or (``retry``) back to the queue for
        the next attempt, with the last of its output (``logs``, as ``append_logs`` takes) and
        ``note`` (a line of Shipyard's own) in the job's log, in the same transaction. Returns
        the status written, or None when the lease was no longer ours (the job was reaped; what
        the reaper wrote stands; ``logs`` are appended all the same)."""
        new = JobStatus.queued if retry else status
        row = self._held(job_id, owner)
        if row is None:
            self._given_back(job_id)
            with contextlib.suppress(IntegrityError):  # the job was deleted meanwhile
                self.append_logs(job_id, logs)
            return None
        now = now_ms()
        values: dict[str, Any] = {
            "status": new.value,
            "failure_reason": failure_reason,
            "lease_owner": None,
            "lease_expires_at": None,
            "runtime_ms": int(row.runtime_ms or 0)
            + max(0, now - int(row.attempt_started_at or now)),
            "attempt_started_at": None,
            "updated_at": now,
        }
        if report is not None:
            values["report"] = orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        if model_artifact_path is not None:
            values["model_artifact_path"] = model_artifact_path
        if new.final:
            values["ended_at"] = now
        for tries in range(3):
            try:
                with self.db.write() as conn:
                    n = conn.execute(
                        update(jobs)
                        .where(
                            jobs.c.id == job_id,
                            jobs.c.lease_owner == owner,
                            jobs.c.status.in_([S, R]),
                        )
                        .values(**values)
                    ).rowcount
                    if n and new.final and row.run_id:
                        # In the same commit: whoever sees the job final finds its run ended
                        # too (a deleted run is no reason to fail: the job's status is what
                        # matters).
                        self.tracking.end_run_in(
                            conn, row.project_id, row.run_id, _RUN_STATUS[new], now
                        )
                    # Its last output, then the line that tells how it ended: one insert.
                    ours = [(row.attempt, None, _own_line(note))] if n and note else []
                    _insert_chunks(conn, job_id, [*logs, *ours])
                break
            except IntegrityError:
                # Another writer (a stop) numbered a line at the same moment.
                if tries == 2:
                    raise
        if n and new.final:
            self._job_ended(job_id)
        else:
            self._given_back(job_id)
        return new if n else None

    def _held(self, job_id: str, owner: str) -> Any:
        """The job's row if ``owner`` holds its lease, else None."""
        with self.db.read() as conn:
            row = conn.execute(
                select(jobs).where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
            ).first()
        return row if row is not None and row.status in (S, R) else None

    def requeue(self, job_id: str, owner: str, note: str | None = None) -> bool:
        """Give a job back to the queue without counting the attempt (this worker is shutting
        down). A stop asked for meanwhile makes it ``stopped`` instead."""
        self._given_back(job_id)
        row = self._held(job_id, owner)
        if row is None:
            return False
        stopped = bool(row.stop_requested)
        if stopped:
            self._end_run(self.projects.project_name(row.project_id), row.run_id, JobStatus.stopped)
        now = now_ms()
        values: dict[str, Any] = {
            "status": Q,
            "attempt": max(0, row.attempt - 1),
            "lease_owner": None,
            "lease_expires_at": None,
            "attempt_started_at": None,
            "runtime_ms": int(row.runtime_ms or 0)
            + max(0, now - int(row.attempt_started_at or now)),
            "updated_at": now,
        }
        if stopped:
            values.update(status=JobStatus.stopped.value, attempt=row.attempt, ended_at=now)
        with self.db.write() as conn:
            n = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status.in_([S, R]))
                .values(**values)
            ).rowcount
            if n and note:
                _insert_line(conn, job_id, row.attempt, note)
        if n and stopped:
            self._job_ended(job_id)
        return bool(n)

    def reap(self) -> list[str]:
        """Settle every job whose lease ran out (its worker died): retried while attempts remain,
        else failed (stopped, if a stop was asked for). Returns the ids settled."""
        now = now_ms()
        with self.db.read() as conn:
            expired = conn.execute(
                select(jobs)
                .where(jobs.c.status.in_([S, R]), jobs.c.lease_expires_at < now)
                .order_by(jobs.c.created_at)
                .limit(1000)
            ).all()
        return [row.id for row in expired if self._reap_one(row, now) is not None]

    def _reap_one(self, row: Any, now: int) -> JobStatus | None:
        if row.stop_requested:
            new, reason = JobStatus.stopped, None
        elif row.attempt < row.max_attempts:
            new, reason = JobStatus.queued, f"attempt {row.attempt}: {LOST_WORKER}"
        else:
            new, reason = JobStatus.failed, LOST_WORKER
        if new.final:
            self._end_run(self.projects.project_name(row.project_id), row.run_id, new)
        # What the lost attempt ran: until its last heartbeat.
        last_beat = int(row.lease_expires_at) - self.lease_ms
        ran = max(0, last_beat - int(row.attempt_started_at)) if row.attempt_started_at else 0
        values: dict[str, Any] = {
            "status": new.value,
            "failure_reason": reason,
            "lease_owner": None,
            "lease_expires_at": None,
            "attempt_started_at": None,
            "runtime_ms": int(row.runtime_ms or 0) + ran,
            "updated_at": now,
        }
        if new.final:
            values["ended_at"] = now
        then = "retrying" if new == JobStatus.queued else f"job {new.value}"
        with self.db.write() as conn:
            n = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == row.id,
                    jobs.c.status.in_([S, R]),
                    jobs.c.lease_owner == row.lease_owner,
                    jobs.c.lease_expires_at < now,
                )
                .values(**values)
            ).rowcount
            if n:
                _insert_line(
                    conn, row.id, row.attempt, f"attempt {row.attempt} lost: {LOST_WORKER}; {then}"
                )
        if n and new.final:
            self._job_ended(row.id)
        return new if n else None

    def note(self, job_id: str, attempt: int, text: str) -> None:
        """Write one line of Shipyard's own into the job's log."""
        self._system_line(job_id, attempt, text)

    def _end_run(self, project: str, run_id: str | None, status: JobStatus) -> None:
        if not run_id:
            return
        # A deleted run is no reason to fail: the job's own status is what matters.
        with contextlib.suppress(NotFound):
            self.tracking.update_run(
                project, run_id, RunUpdate(status=_RUN_STATUS[status], end_time=ms_to_dt(now_ms()))
            )


def _own_line(text: str) -> str:
    return f"shipyard: {text}\n"


def _insert_line(conn: Connection, job_id: str, attempt: int, text: str) -> None:
    """One line of Shipyard's own in the job's log, inside the caller's transaction (so the line
    is there by the time anyone sees the change it tells of)."""
    _insert_chunks(conn, job_id, [(attempt, None, _own_line(text))])


_LAST_SEQ = select(func.max(job_logs.c.seq)).where(job_logs.c.job_id == bindparam("job_id"))


def _mark_running(conn: Connection, job_id: str, owner: str) -> None:
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status == S)
        .values(status=R, updated_at=now_ms())
    )


def _insert_chunks(
    conn: Connection, job_id: str, entries: Sequence[tuple[int, int | None, str]]
) -> None:
    """``(attempt, rank, text)`` chunks at the end of the job's log, inside the caller's
    transaction; a long text is split into chunks of at most ``MAX_CHUNK``."""
    if not entries:
        return
    now = now_ms()
    seq = int(conn.execute(_LAST_SEQ, {"job_id": job_id}).scalar_one() or 0)
    rows = []
    for attempt, rank, text in entries:
        for i in range(0, len(text), MAX_CHUNK):
            seq += 1
            rows.append(
                {
                    "job_id": job_id,
                    "seq": seq,
                    "attempt": attempt,
                    "rank": rank,
                    "data": text[i : i + MAX_CHUNK],
                    "created_at": now,
                }
            )
    conn.execute(job_logs.insert(), rows)
