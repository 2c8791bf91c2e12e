"""The job worker: claims queued jobs, runs each attempt on an Executor, and reports back.

One thread drives every job this worker holds. For each attempt it submits one task per rank
(``shipyard.jobs.launcher:run_job`` with the arguments of the job contract), then, a few times a
second: copies new output of each task into the job's log, logs the metrics that the job's
``metric_definitions`` find in complete lines, renews the lease, honours stop requests and the
job's ``max_runtime_s``, and when every rank has ended records the outcome: completed, a retry
(back to the queue, the checkpoint folder kept), or failed/stopped with the reason. An executor
that announces a task's end (``LocalExecutor.add_done_callback``) wakes the loop at once, so a
short job is recorded within milliseconds of its end rather than at the next tick; the job's
last output and the line saying how it ended are written with its outcome, in one transaction.

The same worker runs embedded in ``shipyard server`` (and in a notebook's in-process SDK) and
as ``shipyard worker``. Whichever runs, it also reaps jobs whose worker died (lease expired).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.core.executors import Executor, TaskSpec, TaskState, TaskStatus
from shipyard.core.settings import Settings
from shipyard.core.timeutil import now_ms
from shipyard.jobs import handoff
from shipyard.jobs.schemas import JobStatus
from shipyard.jobs.service import ClaimedJob, JobService
from shipyard.tracking.schemas import MetricRow

log = logging.getLogger("shipyard.jobs")

# What each rank runs. A module constant so that a deployment (or a test) can point workers at
# another launcher with the same arguments and return shape.
LAUNCHER = "shipyard.jobs.launcher:run_job"
# Modules the local executor's fork server imports once, so that an attempt starts in
# milliseconds (see core.executors).
# The launcher's own list names what a job's code reaches first: the in-process SDK, whose
# backend builds the services (SQLAlchemy, every domain) — seconds to import in each task, and
# nothing once the fork server has.
PRELOAD = (
    "shipyard.jobs.launcher",
    "shipyard.jobs.profile",
    "shipyard.server.context",
    "shipyard.sdk.fluent",
    "shipyard.sdk.local",
    # What the store's first statements import lazily: the SQLite driver, and both dialects'
    # INSERT ... ON CONFLICT (core.db.dialect_insert imports the two).
    "sqlite3",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
    "fsspec.implementations.local",
    "statistics",
    "psutil",
)

_READ_MAX = 1 << 20  # at most this much of a task's log per rank per tick
_TASK_FIELDS = {f.name for f in dataclasses.fields(TaskSpec)}


@dataclass
class _Rank:
    rank: int
    task_id: str
    log_path: str | None = None
    offset: int = 0
    partial: str = ""
    status: TaskStatus | None = None


@dataclass
class _Attempt:
    job: ClaimedJob
    ranks: list[_Rank]
    deadline: float | None  # monotonic; None: no max_runtime_s
    regexes: list[tuple[str, re.Pattern[str]]]
    marked_running: bool = False
    # Seen running, not yet written: written with the next copy of its log (one transaction).
    running_unsaved: bool = False
    # Why this worker is ending the attempt early: stop | timeout | failed | lost | shutdown.
    ending: str | None = None
    stop_reason: str | None = None
    metric_steps: dict[str, int] = field(default_factory=dict)


class JobWorker:
    """Runs jobs from the queue on ``executor``. ``start()`` runs the loop in a daemon thread,
    ``run()`` in the calling thread (``shipyard worker``); ``stop()`` ends it, giving the jobs it
    holds back to the queue (their attempt not counted) so another worker resumes them."""

    def __init__(
        self,
        service: JobService,
        executor: Executor,
        settings: Settings,
        *,
        owner: str | None = None,
        slots: int | None = None,
        run_jobs: bool = True,
        tick_s: float = 0.1,
        idle_poll_s: float = 0.5,
    ) -> None:
        self.service = service
        self.executor = executor
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.slots = slots or executor.slots
        self.run_jobs = run_jobs
        self.tick_s = tick_s
        self.idle_poll_s = idle_poll_s
        self.lease_ms = int(settings.job_lease_s * 1000)
        self.target = LAUNCHER
        self._active: dict[str, _Attempt] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_beat = 0.0
        self._last_stop_check = 0.0
        self._last_reap = 0.0
        self._last_poll = float("-inf")
        # An executor that says when a task ends (LocalExecutor) wakes the loop at once; with
        # another (Ray), the loop sees it at its next tick.
        self._on_done = getattr(executor, "add_done_callback", None)

    # -- lifecycle -----------------------------------------------------------------------------

    def _task_done(self, task_id: str) -> None:
        """From the executor's thread: a task ended; settle it now rather than at the next
        tick (only a wake-up: the loop's thread does the work)."""
        self._wake.set()

    def start(self) -> None:
        """Start the loop in a daemon thread (once; later calls only wake it)."""
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self.run, name="job-worker", daemon=True)
                self._thread.start()
        self._wake.set()

    def wake(self) -> None:
        """Look at the queue now (a job was just submitted in this process)."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the loop; the jobs held go back to the queue without counting the attempt."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    @property
    def busy_slots(self) -> int:
        return sum(a.job.slots for a in self._active.values())

    def run(self) -> None:
        """The loop: until ``stop()`` (or SIGTERM/SIGINT when run by ``shipyard worker``)."""
        if self._on_done is not None:
            self._on_done(self._task_done)
        try:
            while not self._stopping.is_set():
                try:
                    self._tick()
                except Exception:  # a store outage must not end the worker: the lease covers
                    log.exception("job worker: tick failed")
                    time.sleep(1.0)
                wait = self.tick_s if self._active else self.idle_poll_s
                if self._wake.wait(wait):
                    self._wake.clear()
                    self._last_poll = float("-inf")
        finally:
            remove = getattr(self.executor, "remove_done_callback", None)
            if self._on_done is not None and remove is not None:
                remove(self._task_done)
            self._shutdown()

    def serve_forever(self) -> None:
        """Run in this thread until SIGTERM or SIGINT (``shipyard worker``)."""

        def _term(*_: object) -> None:
            self._stopping.set()
            self._wake.set()

        previous = {s: signal.signal(s, _term) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.run()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # -- one tick ------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        if self._active:
            # Settle first: a job is marked running before the first line of its log is copied.
            self._settle()
            self._pump_all()
            self._check_stops(now)
            if now - self._last_beat >= max(0.2, self.settings.job_lease_s / 3):
                self._heartbeat()
                self._last_beat = now
        if now - self._last_reap >= max(0.5, min(5.0, self.settings.job_lease_s / 2)):
            self._last_reap = now
            for jid in self.service.reap():
                log.warning("job %s: its worker stopped heartbeating; settled", jid)
        if self.run_jobs:
            self._claim_more()

    def _claim_more(self) -> None:
        now = time.monotonic()
        if self._active and now - self._last_poll < self.idle_poll_s:
            return  # busy: look at the queue at the idle pace, or when woken
        self._last_poll = now
        while not self._stopping.is_set():
            free = self.slots - self.busy_slots
            if not self.service.has_queued(free, self.slots):
                return
            job = self.service.claim(
                self.owner, free, self.lease_ms, self.slots, note=self._starting_note
            )
            if job is None:
                return
            self._start_attempt(job)

    # -- starting an attempt ----------------------------------------------------------------

    def _env(self, job: ClaimedJob) -> dict[str, str]:
        s = self.settings
        env = dict(job.spec.environment)
        if s.jobs_tracking_uri:
            env["SHIPYARD_TRACKING_URI"] = s.jobs_tracking_uri
        else:
            env["SHIPYARD_HOME"] = str(s.home)
            env["SHIPYARD_DATABASE_URL"] = s.database_url
            env["SHIPYARD_ARTIFACT_ROOT"] = s.artifact_root
            if s.artifact_storage_options:
                import orjson

                env["SHIPYARD_ARTIFACT_STORAGE_OPTIONS"] = orjson.dumps(
                    s.artifact_storage_options
                ).decode()
            env.pop("SHIPYARD_TRACKING_URI", None)
        env["SHIPYARD_PROJECT"] = job.project
        env["SHIPYARD_RUN_ID"] = job.run_id
        # A job that submits jobs leaves running them to the workers, not to itself.
        env["SHIPYARD_JOB_WORKERS_EMBEDDED"] = "false"
        return env

    def _rendezvous(self) -> tuple[str, int]:
        """Rank 0's address for instance_count > 1: this machine for the local executor."""
        from shipyard.core.executors import LocalExecutor

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if isinstance(self.executor, LocalExecutor):
            return "127.0.0.1", port
        try:
            return socket.gethostbyname(socket.gethostname()), port
        except OSError:
            return "127.0.0.1", port

    def _remaining_s(self, job: ClaimedJob) -> float | None:
        """What is left of the job's ``max_runtime_s`` (None: no limit)."""
        if job.spec.max_runtime_s is None:
            return None
        return job.spec.max_runtime_s - job.runtime_ms / 1000

    def _starting_note(self, job: ClaimedJob) -> str | None:
        """The log line that an attempt starts, written with the claim; none for an attempt
        that cannot start (``_start_attempt`` says why)."""
        remaining_s = self._remaining_s(job)
        if (remaining_s is not None and remaining_s <= 0) or job.slots > self.executor.slots:
            return None
        world = job.spec.instance_count
        return f"attempt {job.attempt} of {job.max_attempts} starting on {self.owner}" + (
            f" ({world} instances)" if world > 1 else ""
        )

    def _start_attempt(self, job: ClaimedJob) -> None:
        spec = job.spec
        svc = self.service
        remaining_s: float | None = None
        if spec.max_runtime_s is not None:
            remaining_s = spec.max_runtime_s - job.runtime_ms / 1000
            if remaining_s <= 0:
                svc.note(job.id, job.attempt, f"max_runtime_s ({spec.max_runtime_s:g} s) used up")
                svc.finish_attempt(
                    job.id,
                    self.owner,
                    status=JobStatus.failed,
                    failure_reason=f"ran past max_runtime_s ({spec.max_runtime_s:g} s)",
                )
                return
        if job.slots > self.executor.slots:
            reason = (
                f"resources: the job needs {job.slots} CPUs at once (cpus x instance_count); "
                f"this executor has {self.executor.slots}"
            )
            svc.note(job.id, job.attempt, reason)
            svc.finish_attempt(job.id, self.owner, status=JobStatus.failed, failure_reason=reason)
            return
        job_dir = Path(self.settings.home) / "jobs" / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        addr, port = self._rendezvous()
        env = self._env(job)
        spec_json = spec.model_dump(mode="json")
        world = spec.instance_count
        # The "attempt n of m starting" line was written with the claim (_starting_note).
        ranks: list[_Rank] = []
        try:
            for rank in range(world):
                kw: dict[str, Any] = {
                    "target": self.target,
                    "args": {
                        "job_id": job.id,
                        "run_id": job.run_id,
                        "project": job.project,
                        "attempt": job.attempt,
                        "rank": rank,
                        "world_size": world,
                        "master_addr": addr,
                        "master_port": port,
                        "spec": spec_json,
                        "job_dir": str(job_dir),
                        # Its last metrics and report come back with its result, stored with
                        # how the attempt ended (``_store_handoff``).
                        "handoff": True,
                    },
                    "name": f"job-{job.id}-{rank}",
                    "env": env,
                    "cpus": spec.resources.cpus,
                    "timeout_s": remaining_s,
                }
                if "memory_gb" in _TASK_FIELDS:
                    kw["memory_gb"] = spec.resources.memory_gb
                if "gpus" in _TASK_FIELDS:
                    kw["gpus"] = spec.resources.gpus
                task_id = self.executor.submit(TaskSpec(**kw))
                status = self.executor.status(task_id)
                ranks.append(_Rank(rank, task_id, log_path=status.log_path))
        except Exception as exc:
            for r in ranks:
                self._cancel_async(r.task_id)
            reason = f"could not start: {exc}"
            svc.note(job.id, job.attempt, reason)
            svc.finish_attempt(job.id, self.owner, status=JobStatus.failed, failure_reason=reason)
            return
        deadline = None
        if remaining_s is not None:
            # The executor enforces the limit on each task; this is the backstop for a task that
            # waited in the executor's queue or an executor that cannot kill.
            deadline = time.monotonic() + remaining_s + 5.0
        self._active[job.id] = _Attempt(
            job=job,
            ranks=ranks,
            deadline=deadline,
            regexes=[(m.name, re.compile(m.regex)) for m in spec.metric_definitions],
        )

    # -- while it runs ---------------------------------------------------------------------

    def _read_new(self, r: _Rank) -> str:
        if r.log_path and os.path.exists(r.log_path):
            with open(r.log_path, "rb") as f:
                f.seek(r.offset)
                data = f.read(_READ_MAX)
            # Never split a UTF-8 character between two reads.
            cut = len(data)
            if len(data) == _READ_MAX:
                while cut > 0 and (data[cut - 1] & 0xC0) == 0x80:
                    cut -= 1
                if cut > 0 and data[cut - 1] >= 0xC0:
                    cut -= 1
            r.offset += cut
            return data[:cut].decode("utf-8", "replace")
        try:
            text = self.executor.logs(r.task_id)
        except Exception:
            return ""
        new = text[r.offset :]
        r.offset = len(text)
        return new

    def _collect(self, a: _Attempt) -> tuple[list[tuple[int, int | None, str]], list[MetricRow]]:
        """The output of each rank since the last call, and the metrics its lines give."""
        entries: list[tuple[int, int | None, str]] = []
        metrics: list[MetricRow] = []
        for r in a.ranks:
            text = self._read_new(r)
            if not text:
                continue
            entries.append((a.job.attempt, r.rank, text))
            if a.regexes and r.rank == 0:
                lines = (r.partial + text).split("\n")
                r.partial = lines.pop()
                if len(r.partial) > 65536:  # a "line" with no end: give up on it
                    r.partial = ""
                self._match(a, lines, metrics)
        return entries, metrics

    def _log_metrics(self, a: _Attempt, metrics: list[MetricRow]) -> None:
        if metrics:
            try:
                self.service.log_metrics(a.job.project, a.job.run_id, metrics)
            except Exception as exc:  # a bad value must not stop the job
                log.warning("job %s: could not log parsed metrics: %s", a.job.id, exc)

    def _pump(self, a: _Attempt) -> None:
        entries, metrics = self._collect(a)
        if entries or a.running_unsaved:
            self.service.append_logs(
                a.job.id, entries, running_owner=self.owner if a.running_unsaved else None
            )
            a.running_unsaved = False
        self._log_metrics(a, metrics)

    @staticmethod
    def _match(a: _Attempt, lines: list[str], out: list[MetricRow]) -> None:
        ts = now_ms()
        for line in lines:
            for name, rx in a.regexes:
                for m in rx.finditer(line):
                    try:
                        value = float(m.group(1))
                    except (TypeError, ValueError):
                        continue
                    step = a.metric_steps.get(name, 0)
                    a.metric_steps[name] = step + 1
                    out.append((name, None if value != value else value, step, ts))

    def _pump_all(self) -> None:
        for a in list(self._active.values()):
            try:
                self._pump(a)
            except Exception:
                log.exception("job %s: could not copy its log", a.job.id)

    def _check_stops(self, now: float) -> None:
        if now - self._last_stop_check >= 0.25:
            self._last_stop_check = now
            asked = self.service.stop_requests(list(self._active))
            for jid, reason in asked.items():
                self._end_early(self._active[jid], "stop", reason)
        for a in self._active.values():
            if a.deadline is not None and now > a.deadline:
                self._end_early(a, "timeout")

    def _heartbeat(self) -> None:
        beats = self.service.heartbeat(self.owner, list(self._active), self.lease_ms)
        for jid, beat in beats.items():
            a = self._active[jid]
            if not beat.held:
                self._end_early(a, "lost")
            elif beat.stop_requested:
                self._end_early(a, "stop", beat.stop_reason)

    def _end_early(self, a: _Attempt, why: str, reason: str | None = None) -> None:
        if a.ending is not None and why != "lost":
            return
        a.ending = why
        a.stop_reason = reason
        for r in a.ranks:
            if r.status is None or not r.status.state.final:
                self._cancel_async(r.task_id)

    def _cancel_async(self, task_id: str) -> None:
        # Executor.cancel waits out the task's grace period: never on the loop's thread.
        threading.Thread(
            target=self._cancel_quietly, args=(task_id,), name="job-cancel", daemon=True
        ).start()

    def _cancel_quietly(self, task_id: str) -> None:
        with contextlib.suppress(Exception):
            self.executor.cancel(task_id)

    def _settle(self) -> None:
        for jid, a in list(self._active.items()):
            for r in a.ranks:
                if r.status is None or not r.status.state.final:
                    r.status = self.executor.status(r.task_id)
            states = [r.status.state for r in a.ranks if r.status is not None]
            if not a.marked_running and all(s != TaskState.QUEUED for s in states):
                # Written with the next copy of its log (``_pump``, just after), or with how
                # it ended when it is already over.
                a.marked_running = a.running_unsaved = True
            if a.ending is None and any(
                s in (TaskState.FAILED, TaskState.CANCELLED) for s in states
            ):
                # One rank failed: the others would wait for it forever (a rendezvous).
                failed = [r for r in a.ranks if r.status and r.status.state == TaskState.FAILED]
                if failed and _is_timeout(failed[0].status):
                    self._end_early(a, "timeout")
                else:
                    self._end_early(a, "failed")
            if all(s.final for s in states):
                # Its last output goes in with how it ended: one transaction.
                tail, metrics = self._collect(a)
                self._log_metrics(a, metrics)
                del self._active[jid]
                self._last_poll = float("-inf")  # a slot is free: look at the queue now
                self._finish(a, tail)

    # -- when it ends --------------------------------------------------------------------------

    def _finish(self, a: _Attempt, tail: list[tuple[int, int | None, str]] | None = None) -> None:
        """Record how the attempt ended, with ``tail`` (its output not yet in the job's log)
        and what its processes handed back (``_store_handoff``): one transaction, so one
        durable commit between a job's last line of code and its waiter hearing it ended."""
        with self.service.db.together():
            self._finish_in(a, tail)

    def _finish_in(self, a: _Attempt, tail: list[tuple[int, int | None, str]] | None) -> None:
        job, svc = a.job, self.service
        tail = tail or []
        for r in a.ranks:
            forget = getattr(self.executor, "forget", None)
            if forget is not None:
                with contextlib.suppress(Exception):
                    forget(r.task_id)
        handoff_error = self._store_handoff(a)
        if a.ending in ("lost", "shutdown"):
            svc.append_logs(job.id, tail)
        if a.ending == "lost":
            svc._given_back(job.id)  # how it ends is another process's to write
            svc.note(job.id, job.attempt, "this worker lost the job's lease; it stopped its tasks")
            return
        if a.ending == "shutdown":
            svc.requeue(job.id, self.owner, note=f"worker {self.owner} shut down; job re-queued")
            return
        statuses = [r.status for r in a.ranks if r.status is not None]
        rank0 = a.ranks[0].status
        result = rank0.result if rank0 is not None and isinstance(rank0.result, dict) else {}
        report = result.get("report") if isinstance(result.get("report"), dict) else None
        model_path = result.get("model_artifact_path")
        if report is None:
            report = svc.read_report(job.project, job.run_id)
        model_path = model_path if isinstance(model_path, str) else None
        if a.ending == "stop":
            svc.finish_attempt(
                job.id,
                self.owner,
                status=JobStatus.stopped,
                report=report,
                model_artifact_path=model_path,
                logs=tail,
                note=f"stopped: {a.stop_reason or 'on request'}",
            )
            return
        if a.ending == "timeout":
            reason = f"ran past max_runtime_s ({job.spec.max_runtime_s:g} s)"
            svc.finish_attempt(
                job.id,
                self.owner,
                status=JobStatus.failed,
                failure_reason=reason,
                report=report,
                model_artifact_path=model_path,
                logs=tail,
                note=f"attempt {job.attempt} {reason}; job failed",
            )
            return
        if statuses and all(s.state == TaskState.SUCCEEDED for s in statuses) and not handoff_error:
            svc.finish_attempt(
                job.id,
                self.owner,
                status=JobStatus.completed,
                report=report,
                model_artifact_path=model_path,
                logs=tail,
                note=f"attempt {job.attempt} completed",
            )
            return
        reason = handoff_error or _failure(a)
        retry = job.attempt < job.max_attempts
        svc.finish_attempt(
            job.id,
            self.owner,
            status=JobStatus.failed,
            retry=retry,
            failure_reason=f"attempt {job.attempt}: {reason}" if retry else reason,
            report=report,
            model_artifact_path=model_path,
            logs=tail,
            note=f"attempt {job.attempt} failed: {reason}"
            + (f"; retrying (attempt {job.attempt + 1} of {job.max_attempts})" if retry else ""),
        )
        if retry:
            self._wake.set()

    def _store_handoff(self, a: _Attempt) -> str | None:
        """Store what each rank's process handed back with its result (``handoff``): its last
        metric batches and its report, before the attempt is marked ended, so that whoever
        sees it ended finds them. Returns why that failed, which fails the attempt (as a
        failure to send them from the job's process did)."""
        job = a.job
        for r in a.ranks:
            result = r.status.result if r.status is not None else None
            if not isinstance(result, dict) or not job.run_id:
                continue
            try:
                handoff.store(
                    self.service.db, self.service.tracking, job.project, job.run_id, result
                )
            except Exception as exc:
                where = f"rank {r.rank}: " if len(a.ranks) > 1 else ""
                return f"{where}storing the attempt's last metrics and report failed: {exc}"
        return None

    def _shutdown(self) -> None:
        """Give back what this worker holds: cancel the tasks, re-queue the jobs."""
        for a in self._active.values():
            a.ending = "shutdown"
        threads = []
        for a in self._active.values():
            for r in a.ranks:
                t = threading.Thread(target=self._cancel_quietly, args=(r.task_id,), daemon=True)
                t.start()
                threads.append(t)
        for t in threads:
            t.join(30)
        for jid, a in list(self._active.items()):
            with contextlib.suppress(Exception):
                for r in a.ranks:
                    r.status = self.executor.status(r.task_id)
                self._pump(a)
                self._finish(a)
            del self._active[jid]


def _is_timeout(status: TaskStatus | None) -> bool:
    return bool(status and status.error and status.error.get("type") == "Timeout")


def _failure(a: _Attempt) -> str:
    """Why the attempt failed, in one line: the first failed rank's error."""
    for r in a.ranks:
        s = r.status
        if s is None or s.state != TaskState.FAILED:
            continue
        err = s.error or {}
        kind = err.get("type") or "Error"
        msg = err.get("message") or (f"exit code {s.exit_code}" if s.exit_code else "failed")
        where = f"rank {r.rank}: " if len(a.ranks) > 1 else ""
        return f"{where}{kind}: {msg}"[:4000]
    return "a task was cancelled"
