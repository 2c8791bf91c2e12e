"""The coordinator of one batch job: submits its shards to the executor, records each as it
ends, renews the job's lease, obeys a stop, and writes the manifest when every shard succeeded.

It runs in a thread of the process that created or resumed the job (see ``service``), and only
ever writes the job while it owns it (``owner``), so a coordinator that lost its lease to another
process stands down instead of overwriting that process's work.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, select, update

from shipyard.core.executors import TaskSpec, TaskState
from shipyard.core.timeutil import ms_to_dt, now_ms
from shipyard.inference import data
from shipyard.inference.schemas import BatchJobStatus, ShardStatus
from shipyard.inference.tables import batch_jobs, batch_shards

if TYPE_CHECKING:
    from shipyard.inference.service import BatchService

log = logging.getLogger("shipyard.inference")
WORKER = "shipyard.inference.worker:run_shard"


class Coordinator:
    """Drives one job in this process until it succeeds, fails or is stopped."""

    def __init__(self, svc: BatchService, job_id: str, stop: threading.Event) -> None:
        self.svc = svc
        self.db = svc.db
        self.job_id = job_id
        self.stop = stop
        self.running: dict[str, int] = {}  # task id -> shard index
        self.tries: dict[int, int] = {}
        self.columns: list[str] | None = None
        self.done = threading.Event()  # the loop has ended: the heartbeat stops
        self.lost = threading.Event()  # the lease went to another process

    def _job(self) -> Any:
        with self.db.read() as conn:
            return conn.execute(select(batch_jobs).where(batch_jobs.c.id == self.job_id)).one()

    def _set_job(
        self, conn: Connection, if_status: BatchJobStatus | None = None, **values: Any
    ) -> bool:
        """Update the job if this coordinator still owns it (and it is in ``if_status``)."""
        q = update(batch_jobs).where(
            batch_jobs.c.id == self.job_id, batch_jobs.c.owner == self.svc.owner
        )
        if if_status is not None:
            q = q.where(batch_jobs.c.status == if_status.value)
        return bool(conn.execute(q.values(updated_at=now_ms(), **values)).rowcount)

    def _set_shard(self, conn: Connection, index: int, **values: Any) -> None:
        conn.execute(
            update(batch_shards)
            .where(batch_shards.c.job_id == self.job_id, batch_shards.c.shard_index == index)
            .values(**values)
        )

    def run(self) -> None:
        job = self._job()
        plan = orjson.loads(job.plan)
        project = self.svc.projects.project_name(job.project_id)
        if plan.get("model_path"):
            pinned = self.svc.resolver.resolve(project, plan["model_path"])
        else:
            pinned = self.svc.resolver.resolve(
                project, f"models:/{job.model_name}/{job.model_version}"
            )
        with self.db.write() as conn:
            # PENDING -> RUNNING; a job stopped before it started stays STOPPING (the loop below
            # then stops it), and a job someone else took over is left alone.
            if not self._set_job(conn, lease_expires_at=now_ms() + self.svc.lease_ms):
                return
            self._set_job(conn, BatchJobStatus.PENDING, status=BatchJobStatus.RUNNING.value)
            queue = [
                r.shard_index
                for r in conn.execute(
                    select(batch_shards.c.shard_index)
                    .where(
                        batch_shards.c.job_id == self.job_id,
                        batch_shards.c.status != ShardStatus.SUCCEEDED.value,
                    )
                    .order_by(batch_shards.c.shard_index)
                ).all()
            ]
            shards = {
                r.shard_index: r
                for r in conn.execute(
                    select(batch_shards).where(batch_shards.c.job_id == self.job_id)
                ).all()
            }
        base_args = {
            "model_path": str(pinned.path),
            "trust_code": bool(job.trust_code),
            "model_digest": pinned.digest,
            "input_path": job.input_path,
            "input_format": job.input_format,
            "header_end": plan["header_end"],
            "csv_schema": plan["csv_schema"],
            "join_columns": plan["join"],
            "outputs": plan["outputs"],
            "output_dir": job.output_path,
            "output_format": job.output_format,
        }
        beat = threading.Thread(target=self._heartbeat, name=f"lease-{self.job_id}", daemon=True)
        beat.start()
        try:
            self._loop(job, queue, shards, base_args)
        finally:
            self.done.set()
            beat.join()

    def _heartbeat(self) -> None:
        """Renew the lease while this process lives, however long a step of the loop takes
        (the first shard may wait seconds for the executor's fork server to start)."""
        while not self.done.wait(self.svc.lease_ms / 3000):
            try:
                with self.db.write() as conn:
                    renewed = self._set_job(conn, lease_expires_at=now_ms() + self.svc.lease_ms)
            except Exception:  # the store is unavailable: try again; the lease may run out
                log.warning("batch job %s: could not renew the lease", self.job_id, exc_info=True)
                continue
            if not renewed and not self.done.is_set():
                self.lost.set()  # another process took the job over: stand down
                self.stop.set()
                return

    def _loop(
        self, job: Any, queue: list[int], shards: dict[int, Any], base_args: dict[str, Any]
    ) -> None:
        parallelism = job.parallelism or self.svc.executor.slots
        last_check = 0.0
        while True:
            now = time.monotonic()
            if self.lost.is_set():
                self.cancel_running(requeue=False)
                return
            if (self.stop.is_set() and not self.lost.is_set()) or now - last_check >= 0.5:
                last_check = now
                if self._job().status == BatchJobStatus.STOPPING.value:
                    self._stop_now()
                    return
            while queue and len(self.running) < parallelism:
                self._submit(queue.pop(0), shards, base_args)
            for task_id, index in list(self.running.items()):
                st = self.svc.executor.status(task_id)
                if st.state.final:
                    del self.running[task_id]
                    if self._record(index, st, job.retries):
                        queue.append(index)
                    forget = getattr(self.svc.executor, "forget", None)
                    if forget is not None:
                        forget(task_id)
            if not queue and not self.running:
                self._finish(job)
                return
            self.stop.wait(self.svc.poll_s)

    def _submit(self, index: int, shards: dict[int, Any], base: dict[str, Any]) -> None:
        s = shards[index]
        args = {
            **base,
            "start_row": s.start_row,
            "stop_row": s.stop_row,
            "start_byte": s.start_byte,
            "stop_byte": s.stop_byte,
            "output_file": s.output_file,
        }
        task_id = self.svc.executor.submit(
            TaskSpec(target=WORKER, args=args, name=f"batch {self.job_id} shard {index}")
        )
        self.running[task_id] = index
        self.tries[index] = self.tries.get(index, 0) + 1
        st = self.svc.executor.status(task_id)
        with self.db.write() as conn:
            self._set_shard(
                conn,
                index,
                status=ShardStatus.RUNNING.value,
                attempts=batch_shards.c.attempts + 1,
                task_id=task_id,
                log_path=st.log_path,
                error=None,
                started_at=now_ms(),
                finished_at=None,
            )

    def _record(self, index: int, st: Any, retries: int) -> bool:
        """Record a finished shard; True when it should run again."""
        now = now_ms()
        with self.db.write() as conn:
            if st.state == TaskState.SUCCEEDED:
                r = st.result or {}
                self.columns = r.get("columns") or self.columns
                self._set_shard(
                    conn,
                    index,
                    status=ShardStatus.SUCCEEDED.value,
                    rows=r.get("rows"),
                    output_bytes=r.get("bytes"),
                    output_digest=r.get("sha256"),
                    error=None,
                    finished_at=now,
                )
                return False
            err = st.error or {}
            message = err.get("message") or "failed"
            if not err.get("code") and err.get("type") not in (None, "ExitCode"):
                message = f"{err['type']}: {message}"
            if self.tries.get(index, 0) <= retries:
                self._set_shard(conn, index, status=ShardStatus.PENDING.value, error=message)
                return True
            self._set_shard(
                conn, index, status=ShardStatus.FAILED.value, error=message, finished_at=now
            )
            return False

    def cancel_running(self, requeue: bool) -> None:
        """Cancel this job's running tasks (in parallel: each may wait out a grace period);
        with ``requeue``, leave their shards ``PENDING`` for a resume."""
        tasks = list(self.running.items())
        self.running.clear()
        threads = [
            threading.Thread(target=self.svc.executor.cancel, args=(t,), daemon=True)
            for t, _ in tasks
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not requeue:
            return
        for task_id, index in tasks:
            st = self.svc.executor.status(task_id)
            if st.state == TaskState.SUCCEEDED:  # it finished before the cancel landed
                self._record(index, st, 0)
                continue
            with self.db.write() as conn:
                self._set_shard(
                    conn, index, status=ShardStatus.PENDING.value, error=None, finished_at=None
                )

    def _stop_now(self) -> None:
        self.cancel_running(requeue=True)
        with self.db.write() as conn:
            self._set_job(
                conn, status=BatchJobStatus.STOPPED.value, owner=None, finished_at=now_ms()
            )

    def _finish(self, job: Any) -> None:
        with self.db.read() as conn:
            shards = conn.execute(
                select(batch_shards)
                .where(batch_shards.c.job_id == self.job_id)
                .order_by(batch_shards.c.shard_index)
            ).all()
        failed = [s for s in shards if s.status != ShardStatus.SUCCEEDED.value]
        now = now_ms()
        if failed:
            first = failed[0]
            error = (
                f"{len(failed)} of {len(shards)} shards failed; shard {first.shard_index}: "
                f"{first.error}. Fix the cause, then `shipyard batch resume {self.job_id}` "
                "redoes only those shards"
            )
            with self.db.write() as conn:
                self._set_job(
                    conn,
                    status=BatchJobStatus.FAILED.value,
                    error=error,
                    owner=None,
                    finished_at=now,
                )
            return
        rows = sum(s.rows or 0 for s in shards)
        manifest = {
            "job_id": self.job_id,
            "model": {"uri": job.model_uri, "name": job.model_name, "version": job.model_version},
            "input": {"path": job.input_path, "format": job.input_format},
            "format": job.output_format,
            "columns": self.columns or _file_columns(Path(job.output_path), shards[0], job),
            "rows": rows,
            "files": [
                {
                    "file": s.output_file,
                    "shard": s.shard_index,
                    "start_row": s.start_row,
                    "stop_row": s.stop_row,
                    "rows": s.rows,
                    "bytes": s.output_bytes,
                    "sha256": s.output_digest,
                }
                for s in shards
            ],
            "created_at": ms_to_dt(job.created_at).isoformat(),
            "finished_at": ms_to_dt(now).isoformat(),
        }
        data.write_json_atomic(
            Path(job.output_path) / data.MANIFEST,
            orjson.dumps(manifest, option=orjson.OPT_INDENT_2),
        )
        with self.db.write() as conn:
            self._set_job(
                conn,
                status=BatchJobStatus.SUCCEEDED.value,
                rows_total=rows,
                owner=None,
                finished_at=now,
            )


def _file_columns(out: Path, shard: Any, job: Any) -> list[str]:
    """The columns of a shard's output file (when every shard ran before a resume)."""
    import pyarrow.parquet as pq

    path = out / shard.output_file
    if job.output_format == "parquet":
        return list(pq.read_schema(path).names)
    import pyarrow.csv as pcsv

    with pcsv.open_csv(path) as reader:
        return list(reader.schema.names)
