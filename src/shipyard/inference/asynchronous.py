"""Asynchronous inference: accept a payload, answer with an id at once, predict in the background.

A request is recorded (``QUEUED``) before its id is returned, with its payload in the artifact
store, so an accepted request survives the process that accepted it. A pool of threads in this
process predicts, with loaded models kept in a small LRU cache. A worker claims a request
(``RUNNING`` with a lease) before it starts, so two processes sharing a metadata store never
both answer one; a sweeper re-queues requests whose lease ran out (their process died).

A failure is an answer too: a payload the model cannot take is ``FAILED`` with the error that
names the column, and the user's model raising is ``FAILED`` with its exception.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.artifacts import ArtifactStore
from shipyard.core.db import Database
from shipyard.core.errors import InvalidArgument, NotFound, ShipyardError
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.timeutil import ms_to_dt, now_ms
from shipyard.inference.resolve import ModelCache, ModelResolver
from shipyard.inference.schemas import (
    AsyncInferenceCreate,
    AsyncInferenceError,
    AsyncInferencePublic,
    AsyncInferencesPublic,
    AsyncInferenceStatus,
)
from shipyard.inference.tables import async_inferences as t
from shipyard.projects.service import ProjectService

log = logging.getLogger("shipyard.inference")

Q, R = AsyncInferenceStatus.QUEUED.value, AsyncInferenceStatus.RUNNING.value


class AsyncInferenceService:
    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        projects: ProjectService,
        resolver: ModelResolver,
        cache: ModelCache,
        *,
        workers: int | None = None,
        queued_lease_s: float = 60.0,
        running_lease_s: float = 300.0,
        sweep_s: float = 10.0,
    ) -> None:
        self.db = db
        self.store = store
        self.projects = projects
        self.resolver = resolver
        self.cache = cache
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.queued_lease_ms = int(queued_lease_s * 1000)
        self.running_lease_ms = int(running_lease_s * 1000)
        self.sweep_s = sweep_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker pool and the sweeper (done on first use; a server calls it at
        start-up so that requests accepted by a process that died are answered)."""
        with self._lock:
            if self._pool is not None or self._stop.is_set():
                return
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="async-inference")
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="async-inference-sweeper", daemon=True
            )
            self._sweeper.start()

    def shutdown(self) -> None:
        with self._lock:
            self._stop.set()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _enqueue(self, request_id: str) -> None:
        self.start()
        with self._lock:
            if self._pool is not None:
                self._pool.submit(self._process_safely, request_id)

    def _sweep_loop(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:  # a store outage must not end the sweeper
                log.exception("async inference sweep failed")
            if self._stop.wait(self.sweep_s):
                return

    def sweep(self) -> int:
        """Queue here every request whose lease ran out; return how many."""
        now = now_ms()
        with self.db.read() as conn:
            ids = conn.execute(
                select(t.c.id)
                .where(t.c.status.in_([Q, R]), t.c.lease_expires_at < now)
                .order_by(t.c.created_at)
                .limit(1000)
            ).scalars()
            found = list(ids)
        for rid in found:
            self._enqueue(rid)
        return len(found)

    # -- API -----------------------------------------------------------------------------------

    def submit(
        self, project: str, body: AsyncInferenceCreate, created_by: str | None = None
    ) -> AsyncInferencePublic:
        """Record the request and return it ``QUEUED``. Raises ``NotFound`` for an unknown
        model and ``InvalidArgument`` for a missing payload; a payload the model cannot take is
        reported in the answer (``FAILED``, naming the column), not here."""
        pid = self.projects.project_id(project)
        if body.idempotency_key:
            found = self._by_key(pid, body.idempotency_key)
            if found is not None:
                return self.get(project, found)
        if body.payload is None:
            raise InvalidArgument.for_field("payload", "expected a request body to predict on")
        pinned = self.resolver.resolve(project, body.model)
        digest, _ = self.store.put_bytes(orjson.dumps(body.payload))
        now = now_ms()
        rid = new_id()
        try:
            with self.db.write() as conn:
                conn.execute(
                    t.insert().values(
                        id=rid,
                        project_id=pid,
                        status=Q,
                        model_uri=pinned.pinned_uri,
                        model_name=pinned.name,
                        model_version=pinned.version,
                        input_digest=digest,
                        idempotency_key=body.idempotency_key,
                        owner=self.owner,
                        lease_expires_at=now + self.queued_lease_ms,
                        created_by=created_by,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            found = self._by_key(pid, body.idempotency_key) if body.idempotency_key else None
            if found is None:
                raise
            return self.get(project, found)
        self._enqueue(rid)
        return self.get(project, rid)

    def _by_key(self, pid: str, key: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(  # type: ignore[no-any-return]
                select(t.c.id).where(t.c.project_id == pid, t.c.idempotency_key == key)
            ).scalar_one_or_none()

    def get(self, project: str, request_id: str) -> AsyncInferencePublic:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            row = conn.execute(select(t).where(t.c.id == request_id, t.c.project_id == pid)).first()
        if row is None:
            raise NotFound(f"async inference {request_id} not found in project {project}")
        if row.status in (Q, R):
            self.start()  # a fresh process answers what an earlier one accepted
        return self._public(project, row, with_result=True)

    def list(
        self,
        project: str,
        *,
        status: AsyncInferenceStatus | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> AsyncInferencesPublic:
        pid = self.projects.project_id(project)
        check_page_size(page_size)
        offset = decode_page_token(page_token)
        q = select(t).where(t.c.project_id == pid)
        if status is not None:
            q = q.where(t.c.status == status.value)
        q = q.order_by(t.c.created_at.desc(), t.c.id.desc()).offset(offset).limit(page_size + 1)
        with self.db.read() as conn:
            rows = conn.execute(q).all()
        return AsyncInferencesPublic(
            data=[self._public(project, r, with_result=False) for r in rows[:page_size]],
            next_page_token=next_token(offset, page_size, len(rows)),
        )

    def delete(self, project: str, request_id: str) -> None:
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            n = conn.execute(delete(t).where(t.c.id == request_id, t.c.project_id == pid)).rowcount
        if not n:
            raise NotFound(f"async inference {request_id} not found in project {project}")

    def _public(self, project: str, row: Any, *, with_result: bool) -> AsyncInferencePublic:
        result = None
        if with_result and row.output_digest:
            with self.store.open(row.output_digest) as f:
                result = orjson.loads(f.read())
        return AsyncInferencePublic(
            id=row.id,
            project=project,
            status=AsyncInferenceStatus(row.status),
            model=row.model_uri,
            model_name=row.model_name,
            model_version=row.model_version,
            result=result,
            error=AsyncInferenceError(**orjson.loads(row.error)) if row.error else None,
            rows=row.rows,
            created_by=row.created_by,
            started_at=ms_to_dt(row.started_at),
            finished_at=ms_to_dt(row.finished_at),
            created_at=ms_to_dt(row.created_at),
            updated_at=ms_to_dt(row.updated_at),
        )

    # -- the worker ----------------------------------------------------------------------------

    def _process_safely(self, request_id: str) -> None:
        try:
            self._process(request_id)
        except Exception:  # the store failed under us: the lease brings the request back
            log.exception("async inference %s: could not be processed", request_id)

    def _claim(self, request_id: str) -> Any:
        """Take the request if it is ours to take; return its row, or None."""
        now = now_ms()
        with self.db.write() as conn:
            n = conn.execute(
                update(t)
                .where(
                    t.c.id == request_id,
                    or_(
                        (t.c.status == Q)
                        & ((t.c.owner == self.owner) | (t.c.lease_expires_at < now)),
                        (t.c.status == R) & (t.c.lease_expires_at < now),
                    ),
                )
                .values(
                    status=R,
                    owner=self.owner,
                    lease_expires_at=now + self.running_lease_ms,
                    started_at=now,
                    updated_at=now,
                )
            ).rowcount
            if not n:
                return None
            return conn.execute(select(t).where(t.c.id == request_id)).one()

    def _process(self, request_id: str) -> None:
        row = self._claim(request_id)
        if row is None:
            return
        output_digest = None
        rows = None
        error: dict[str, Any] | None = None
        try:
            from shipyard.inference.worker import output_names
            from shipyard.models.format import parse_records

            project = self.projects.project_name(row.project_id)
            pinned = self.resolver.resolve(project, row.model_uri)
            model = self.cache.get(pinned)
            with self.store.open(row.input_digest) as f:
                payload = orjson.loads(f.read())
            frame = parse_records(payload)
            pred = model.predict(frame)
            outputs = [c.name for c in model.signature.outputs]
            result = {"predictions": pred.tolist(), "outputs": output_names(pred, outputs)}
            output_digest, _ = self.store.put_bytes(
                orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
            )
            rows = len(frame)
        except ShipyardError as exc:
            error = {"code": exc.code, "message": exc.message, "details": exc.details}
        except Exception as exc:  # the user's model raised: their error, reported as theirs
            error = {
                "code": "MODEL_ERROR",
                "message": f"the model raised {type(exc).__name__}: {exc}",
                "details": {"type": type(exc).__name__},
            }
        now = now_ms()
        with self.db.write() as conn:
            conn.execute(
                update(t)
                .where(t.c.id == request_id, t.c.owner == self.owner)
                .values(
                    status=AsyncInferenceStatus.FAILED.value
                    if error
                    else AsyncInferenceStatus.SUCCEEDED.value,
                    output_digest=output_digest,
                    rows=rows,
                    error=orjson.dumps(error).decode() if error else None,
                    owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                )
            )
