"""The coordinator of one ``job`` tuning job: it proposes trials, submits each as a training job,
follows their objective metric, stops the ones the pruner gives up on, and ends the tuning job.

It runs in a thread of the process that created or adopted the tuning job, rebuilds the Optuna
study from the trial rows when it starts (so a resumed job picks up where its rows say), and
writes the tuning job only while it holds its lease (``owner``): a coordinator that lost the
lease stands down.

Per poll it reads, for each running trial, the job (its status) and the objective metric's
history from the trial's run; the trial rows that changed are written back in one transaction,
the one that queues the next trial's job when there is one (its row and its job go in together).
The job carries an idempotency key made of the tuning job and the trial number, so a coordinator
that resumes a trial whose row was written without its job id submits the same job again
instead of a second one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select, update

from shipyard.core.errors import NotFound, Unavailable
from shipyard.core.timeutil import now_ms
from shipyard.tuning import engine
from shipyard.tuning.schemas import EarlyStopping, TrialState, TuningJobStatus
from shipyard.tuning.tables import tuning_jobs, tuning_trials

if TYPE_CHECKING:
    from shipyard.tuning.service import TuningService

log = logging.getLogger("shipyard.tuning")
PRUNED_REASON = "pruned by ASHA/Hyperband"
# A tuning job whose first trials all fail is failed at once: the script is likely broken, and
# running the rest would only repeat the error.
FAIL_FAST = 3
# How often a running trial's objective history is read for the pruner: intermediate values
# need no sub-second latency, and each read is a query per trial.
HISTORY_EVERY_S = 0.5
# The longest wait between two looks at the store for trials that ended.
MAX_POLL_S = 0.5


@dataclass
class Running:
    number: int
    params: dict[str, Any]
    job_id: str | None
    run_id: str | None
    intermediate: dict[int, float] = field(default_factory=dict)
    read_at: float = 0.0  # when its metric history was last read (monotonic)
    since: float = field(default_factory=time.monotonic)  # when this process began following it


class Coordinator:
    def __init__(self, svc: TuningService, tuning_job_id: str, stop: threading.Event) -> None:
        self.svc = svc
        self.db = svc.db
        self.tuning_job_id = tuning_job_id
        self.stop = stop
        self.done = threading.Event()
        self.lost = threading.Event()

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        from shipyard.tuning.service import config_of, spec_of, trial_row

        with self.db.read() as conn:
            row = conn.execute(
                select(tuning_jobs).where(tuning_jobs.c.id == self.tuning_job_id)
            ).one()
            rows = conn.execute(
                select(tuning_trials).where(tuning_trials.c.tuning_job_id == self.tuning_job_id)
            ).all()
            warm_rows = (
                conn.execute(
                    select(tuning_trials).where(
                        tuning_trials.c.tuning_job_id.in_(spec_of(row).warm_start_from)
                    )
                ).all()
                if spec_of(row).warm_start_from
                else []
            )
        self.project = self.svc.projects.project_name(row.project_id)
        self.spec = spec_of(row)
        self.name = row.name
        self.created_by = row.created_by
        self.metric = self.spec.objective.metric
        cfg = config_of(self.spec)
        self.search = engine.Search(
            cfg,
            [trial_row(r) for r in rows],
            [trial_row(r) for r in warm_rows],
            name=self.tuning_job_id,
        )
        self.budget = engine.trial_budget(cfg, self.spec.max_trials)
        self.running: dict[int, Running] = {}
        for r in rows:
            if r.state == TrialState.running.value:
                t = trial_row(r)
                self.running[r.number] = Running(
                    r.number, t.params, r.job_id, r.run_id, dict(t.intermediate_values)
                )
        self.finished = [trial_row(r) for r in rows if r.state != TrialState.running.value]
        self.unsaved: list[Running] = []  # proposed, not yet written
        # Row changes for the next turn's write (kept until it succeeds).
        self.pending: list[dict[str, Any]] = []
        beat = threading.Thread(
            target=self._heartbeat, name=f"lease-tuning-{self.tuning_job_id}", daemon=True
        )
        beat.start()
        try:
            self._loop()
        finally:
            self.done.set()
            beat.join()

    def _heartbeat(self) -> None:
        while not self.done.wait(self.svc.lease_ms / 3000):
            try:
                with self.db.write() as conn:
                    n = conn.execute(
                        update(tuning_jobs)
                        .where(
                            tuning_jobs.c.id == self.tuning_job_id,
                            tuning_jobs.c.owner == self.svc.owner,
                        )
                        .values(lease_expires_at=now_ms() + self.svc.lease_ms)
                    ).rowcount
            except Exception:
                log.warning("tuning job %s: could not renew the lease", self.tuning_job_id)
                continue
            if not n and not self.done.is_set():
                self.lost.set()
                self.stop.set()
                return

    def _status(self) -> str | None:
        with self.db.read() as conn:
            return conn.execute(  # type: ignore[no-any-return]
                select(tuning_jobs.c.status).where(
                    tuning_jobs.c.id == self.tuning_job_id,
                    tuning_jobs.c.owner == self.svc.owner,
                )
            ).scalar_one_or_none()

    def _loop(self) -> None:
        last_check = 0.0
        while True:
            if self.lost.is_set():
                return
            now = time.monotonic()
            if self.stop.is_set() or now - last_check >= 1.0:
                last_check = now
                status = self._status()
                if status is None:  # another process holds it now
                    return
                if status == TuningJobStatus.stopping.value:
                    self._flush()  # every submitted job's id is written, so it is stopped
                    self.svc.stop_trials(
                        self.project, self.tuning_job_id, "the tuning job was stopped"
                    )
                    self.svc.finish(
                        self.tuning_job_id, TuningJobStatus.stopped, None, owner=self.svc.owner
                    )
                    return
                if self.stop.is_set():  # this process shuts down: leave it to the next one
                    self._release()
                    return
            try:
                self._step()
                if self._fail_fast():
                    return
            except Unavailable:
                # The store is briefly unavailable (locked, restarting): the rows say where we
                # are, and a trial not yet submitted is submitted at the next poll (same key).
                log.warning("tuning job %s: metadata store unavailable", self.tuning_job_id)
                self.stop.wait(1.0)
                continue
            if not self.running and not self.unsaved and self.search.next_number >= self.budget:
                self._finish()
                return
            # Until the next poll, or at once when a trial's job ends in this process.
            interval = self._interval()
            wait_for_end = getattr(self.svc.jobs, "wait_for_end", None)
            if wait_for_end is not None:
                wait_for_end([r.job_id for r in self.running.values()], interval, self.stop)
            else:
                self.stop.wait(interval)

    def _interval(self) -> float:
        """How long to wait before the next look at the store: ``poll_s`` while the trials are
        young, then a twentieth of the youngest one's age (at most ``MAX_POLL_S``). A trial
        whose job ends in this process is noticed at once anyway (``wait_for_end``); one ended
        by a worker elsewhere costs at most about 5% of its run to notice, and a long search
        does not query the store many times a second for nothing."""
        if not self.running:
            return self.svc.poll_s
        slowest = max(MAX_POLL_S, self.svc.poll_s)
        assert self.svc.jobs is not None
        pruning = self.search.cfg.early_stopping != EarlyStopping.none
        if not pruning and self.svc.jobs.held_here([r.job_id for r in self.running.values()]):
            # Every running trial's job is run by a worker in this process: its end wakes us.
            # The store is looked at for what another process may write (a stop, the reaper).
            # With early stopping, the pace below keeps the pruner's reading of intermediate
            # values timely: a bad trial is stopped while it still has epochs to save.
            return slowest
        youngest = time.monotonic() - max(r.since for r in self.running.values())
        return min(max(self.svc.poll_s, youngest / 20), slowest)

    def _release(self) -> None:
        self._flush()
        with self.db.write() as conn:
            conn.execute(
                update(tuning_jobs)
                .where(
                    tuning_jobs.c.id == self.tuning_job_id,
                    tuning_jobs.c.owner == self.svc.owner,
                )
                .values(owner=None, lease_expires_at=None, updated_at=now_ms())
            )

    # -- trials --------------------------------------------------------------------------------

    def _step(self) -> None:
        """One turn: see which trials ended (``_poll``), propose trials for the free slots, and
        submit their jobs. The trial rows (the new ones, the changed ones, and the new job's id)
        are written in the transaction that queues the job: one commit per trial, and never a
        job without its trial row. With nothing to submit, the changed rows are written alone."""
        self._poll()
        free = self.spec.max_parallel - len(self.running)
        while free > 0 and self.search.next_number < self.budget:
            number, params = self.search.ask()
            r = Running(number, params, None, None)
            self.unsaved.append(r)
            self.running[number] = r
            free -= 1
        waiting = [r for r in self.running.values() if r.job_id is None]
        if not waiting:
            self._flush()
        for r in waiting:  # one that fails is submitted again at the next poll (same key)
            self._submit(r)

    def _flush(self) -> None:
        """Write the proposed trials and the pending row changes, in one transaction."""
        if self.pending or self.unsaved:
            with self.db.write() as conn:
                self._write_rows(conn)
            self._written()

    def _write_rows(self, conn: Any, extra: dict[str, Any] | None = None) -> None:
        """The proposed trials' rows and the pending changes (and ``extra``), in ``conn``."""
        now = now_ms()
        if self.unsaved:
            conn.execute(
                tuning_trials.insert(),
                [
                    {
                        "tuning_job_id": self.tuning_job_id,
                        "number": r.number,
                        "params": orjson.dumps(r.params).decode(),
                        "state": TrialState.running.value,
                        "started_at": now,
                    }
                    for r in self.unsaved
                ],
            )
        for u in [*self.pending, *([extra] if extra else [])]:
            u = dict(u)
            number = u.pop("number")
            conn.execute(
                update(tuning_trials)
                .where(
                    tuning_trials.c.tuning_job_id == self.tuning_job_id,
                    tuning_trials.c.number == number,
                )
                .values(**u)
            )

    def _written(self) -> None:
        self.pending = []
        self.unsaved = []

    def _submit(self, r: Running) -> None:
        from shipyard.jobs.schemas import JobCreate

        assert self.svc.jobs is not None and self.spec.trial is not None
        template = self.spec.trial
        body = template.model_dump(exclude_unset=False)
        body["hyperparameters"] = {**template.hyperparameters, **r.params}
        body["tuning_job_id"] = self.tuning_job_id
        body["idempotency_key"] = f"tuning-{self.tuning_job_id}-{r.number}"
        body["name"] = f"{template.name or self.name}-{r.number}"[:256]
        if "experiment" not in template.model_fields_set:
            body["experiment"] = self.spec.experiment or "tuning"
        body["tags"] = {
            **template.tags,
            "shipyard.tuning_job_id": self.tuning_job_id,
            "shipyard.trial": str(r.number),
        }
        wrote: list[str] = []

        def also(conn: Any, job_id: str, run_id: str) -> None:
            self._write_rows(conn, {"number": r.number, "job_id": job_id, "run_id": run_id})
            wrote.append(job_id)

        job = self.svc.jobs.submit(
            self.project, JobCreate.model_validate(body), created_by=self.created_by, also=also
        )
        r.job_id, r.run_id = job.id, job.run_id
        if job.id in wrote:  # committed with the job (not rolled back for a job made first)
            self._written()
        else:  # the job was made before (a resumed coordinator): its id goes in with the next write
            self.pending.append({"number": r.number, "job_id": job.id, "run_id": job.run_id})

    def _history(self, run_id: str) -> dict[int, float]:
        """The objective metric by step (the last value logged at a step wins)."""
        try:
            h = self.svc.tracking.get_metric_history(self.project, run_id, self.metric)
        except NotFound:
            return {}
        out: dict[int, float] = {}
        for step, value in zip(h.steps, h.values, strict=True):
            if value is not None:
                out[int(step)] = float(value)
        return out

    def _poll(self) -> None:
        """One look at the running trials. Which jobs ended is one query; a trial's metric
        history is read when its job ended, and (with early stopping) every
        ``HISTORY_EVERY_S`` while it runs."""
        assert self.svc.jobs is not None
        for r in self.running.values():
            if r.job_id is None:
                self._submit(r)
        # The running trials' jobs, in one query whatever their number (a deleted one is absent).
        found = self.svc.jobs.get_many(
            self.project, [r.job_id for r in self.running.values() if r.job_id is not None]
        )
        early = self.search.cfg.early_stopping != EarlyStopping.none
        now = time.monotonic()
        updates = self.pending
        for number, r in list(self.running.items()):
            assert r.job_id is not None
            current = found.get(r.job_id)
            ended = current is None or current.status.final
            if not ended and not (early and now - r.read_at >= HISTORY_EVERY_S):
                continue
            r.read_at = now
            job = None
            if ended:
                if current is None:
                    self._end(r, TrialState.failed, None, "its job was deleted", updates)
                    continue
                job = current
                r.run_id = r.run_id or job.run_id
            history = self._history(r.run_id) if r.run_id else {}
            changed = {s: v for s, v in history.items() if r.intermediate.get(s) != v}
            if changed:
                r.intermediate.update(changed)
            prune = bool(changed) and self.search.report(number, history)
            if prune and job is None:
                self.svc.jobs.stop(self.project, r.job_id, reason=PRUNED_REASON)
                last = r.intermediate[max(r.intermediate)]
                self._end(r, TrialState.pruned, last, PRUNED_REASON, updates)
                continue
            if job is not None:
                if job.status.value == "completed":
                    if history:
                        value = history[max(history)]
                        self._end(r, TrialState.completed, value, None, updates)
                    else:
                        self._end(
                            r,
                            TrialState.failed,
                            None,
                            f"the trial's run logged no metric {self.metric!r} (the objective)",
                            updates,
                        )
                else:
                    reason = job.failure_reason or f"its job ended {job.status.value}"
                    self._end(r, TrialState.failed, None, reason, updates)
                continue
            if changed:
                updates.append({"number": number, "intermediate_values": _dump(r.intermediate)})

    def _end(
        self,
        r: Running,
        state: TrialState,
        value: float | None,
        error: str | None,
        updates: list[dict[str, Any]],
    ) -> None:
        self.search.tell(r.number, state, value)
        del self.running[r.number]
        self.finished.append(
            engine.TrialRow(r.number, r.params, state, value, dict(r.intermediate))
        )
        updates.append(
            {
                "number": r.number,
                "state": state.value,
                "value": value,
                "error": error,
                "intermediate_values": _dump(r.intermediate),
                "job_id": r.job_id,
                "run_id": r.run_id,
                "ended_at": now_ms(),
            }
        )

    def _fail_fast(self) -> bool:
        if len(self.finished) > FAIL_FAST * 4:  # past the first trials: no longer a question
            return False
        done = sorted(self.finished, key=lambda t: t.number)
        if any(t.state != TrialState.failed for t in done):
            return False
        first = [t for t in done if t.number < FAIL_FAST]
        if len(first) < min(FAIL_FAST, self.budget):
            return False
        reason = self._first_error()
        self._flush()
        self.svc.stop_trials(self.project, self.tuning_job_id, "the tuning job failed")
        self.svc.finish(
            self.tuning_job_id,
            TuningJobStatus.failed,
            f"the first {len(first)} trials failed; trial 0: {reason}",
            owner=self.svc.owner,
        )
        return True

    def _first_error(self) -> str:
        with self.db.read() as conn:
            return (
                conn.execute(
                    select(tuning_trials.c.error)
                    .where(
                        tuning_trials.c.tuning_job_id == self.tuning_job_id,
                        tuning_trials.c.error.is_not(None),
                    )
                    .order_by(tuning_trials.c.number)
                    .limit(1)
                ).scalar_one_or_none()
                or "failed"
            )

    def _finish(self) -> None:
        best = engine.best_of(self.finished, self.spec.objective.direction)
        if best is None:
            self.svc.finish(
                self.tuning_job_id,
                TuningJobStatus.failed,
                f"no trial completed; trial 0: {self._first_error()}",
                owner=self.svc.owner,
            )
            return
        self.svc.finish(self.tuning_job_id, TuningJobStatus.completed, None, owner=self.svc.owner)


def _dump(values: dict[int, float]) -> str | None:
    from shipyard.tuning.service import dump_intermediate

    return dump_intermediate(values)
