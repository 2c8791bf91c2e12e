"""Keeping endpoints' model servers running: the process side of ``EndpointService``.

Each endpoint is one process (``serving.process``), watched by one supervisor at a time through
a lease in the database (``endpoints.owner``, ``lease_expires_at``):

- a start waits until the server answers ``/v2/health/ready``: ``InService``, or ``Failed``
  with the process's last words (a port taken meanwhile is retried on another);
- a process of ours that dies is recorded (``restarts``, an ``exited`` event) and started again
  on the same port; one that keeps dying (``CRASH_LOOP``) is ``Failed``;
- when the Shipyard that held an endpoint ends, its lease runs out (or it hands it back), and
  the next supervisor adopts the process if it still answers, or starts it again. So
  ``shipyard server`` stops its endpoints on shutdown and its successor restarts them, while a
  notebook's endpoints outlive the notebook.

Every write that reports on a start is made only while this supervisor still holds the
endpoint, so a supervisor that lost it (shutting down, or adopted away) cannot overwrite what the
new one reports.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.db import Database
from shipyard.core.errors import NotFound, ShipyardError, Unavailable
from shipyard.core.ids import new_id
from shipyard.core.timeutil import now_ms
from shipyard.projects.service import ProjectService
from shipyard.serving import deployments
from shipyard.serving.process import (
    CONFIG_NAME,
    Cancelled,
    RuntimeProcess,
    drop_invoke_key,
    ensure_invoke_key,
    free_port,
    port_is_free,
    write_json_atomic,
)
from shipyard.serving.schemas import EndpointSpec, EndpointStatus
from shipyard.serving.tables import endpoint_events, endpoints

if TYPE_CHECKING:  # imported where used: an idle server need not hold it (5 MB)
    import httpx

log = logging.getLogger("shipyard.serving")

S = EndpointStatus
# Statuses in which the process should be running (the supervisor keeps it so).
RUNNING = (S.creating.value, S.in_service.value, S.updating.value)
LEASE_MS = 15_000
CRASH_LOOP = (5, 60.0)  # this many restarts within this many seconds: give up (Failed)


@dataclass
class _Slot:
    """What this process knows about one endpoint it supervises."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    proc: RuntimeProcess | None = None
    busy: bool = False  # a start, reload or stop is under way: the supervisor keeps off
    restarts: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=CRASH_LOOP[0])
    )


class Supervisor:
    """The process side of ``EndpointService``: its base class."""

    def __init__(
        self,
        db: Database,
        projects: ProjectService,
        root: Path,
        resolve: deployments.Resolver | None,
        *,
        start_timeout_s: float = 120.0,
        supervise_interval_s: float = 0.5,
        auth: bool = False,
    ) -> None:
        self.db = db
        # With auth on, each endpoint's own port asks for the endpoint's invoke key.
        self.auth = auth
        self.projects = projects
        self.root = root  # <root>/<endpoint id>/: config.json, runtime.log, models/
        self._resolve_fn = resolve
        self.start_timeout_s = start_timeout_s
        self.supervise_interval_s = supervise_interval_s
        self.node = socket.gethostname()[:255]
        # Who holds a lease: this machine, this process, this instance.
        self.owner = f"{self.node[:32]}:{os.getpid()}:{new_id()}"
        self._slots: dict[str, _Slot] = collections.defaultdict(_Slot)
        self._slots_lock = threading.Lock()
        self._http_client: httpx.Client | None = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()  # starts and restarts under way
        self._renewed_at = 0
        self._target_cache: dict[tuple[str, str], tuple[float, str, dict[str, str]]] = {}

    @property
    def _http(self) -> httpx.Client:
        """Made on first use: every process that opens the store builds this service, and most
        (a job's SDK, a CLI command) never call an endpoint."""
        if self._http_client is None:
            import httpx

            self._http_client = httpx.Client(timeout=5.0, trust_env=False)
        return self._http_client

    # -- the supervisor's life ---------------------------------------------------------------

    def start_supervisor(self) -> None:
        """Watch the endpoints' processes from a background thread (idempotent). Called when
        ``shipyard server`` starts (which restarts endpoints left InService) and on the first
        create/start in an SDK process."""
        if self._supervisor is not None and self._supervisor.is_alive():
            return
        self._stop.clear()
        self._supervisor = threading.Thread(
            target=self._supervise, name="shipyard-endpoint-supervisor", daemon=True
        )
        self._supervisor.start()

    def shutdown(self, stop_processes: bool = False) -> None:
        """Stop supervising and hand the endpoints back (the next Shipyard adopts them).

        ``stop_processes`` (``shipyard server`` shutting down) also stops the servers this one
        holds; they stay ``InService`` in the store and start again with the next server."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
            self._supervisor = None
        # Starts under way stop waiting (their processes stay, recorded, for whoever is next).
        deadline = time.monotonic() + 15
        for t in list(self._workers):
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if stop_processes:
            with self.db.read() as conn:
                rows = conn.execute(select(endpoints).where(endpoints.c.owner == self.owner)).all()
            for row in rows:
                slot = self._slot(row.id)
                with slot.lock:
                    self._stop_process(row, slot)
                    self._set(row.id, pid=None, event=("stopped", "stopped with the server"))
        with contextlib.suppress(ShipyardError), self.db.write() as conn:
            conn.execute(
                update(endpoints)
                .where(endpoints.c.owner == self.owner)
                .values(owner=None, lease_expires_at=None)
            )

    # -- what to run -----------------------------------------------------------------------------

    def _resolver(self) -> deployments.Resolver:
        if self._resolve_fn is None:
            raise Unavailable("the model registry is not available in this Shipyard")
        return self._resolve_fn

    def _repin(self, project: str, resolved: dict[str, Any]) -> dict[str, Any]:
        return deployments.repin(self._resolver(), project, resolved)

    def _config_path(self, endpoint_id: str) -> Path:
        return self.root / endpoint_id / CONFIG_NAME

    def _runtime_config(
        self, row: Any, port: int, spec: EndpointSpec, resolved: dict[str, Any]
    ) -> dict[str, Any]:
        endpoint_dir = self.root / row.id
        if self.auth:
            key: str | None = ensure_invoke_key(endpoint_dir)
        else:
            key = None
            drop_invoke_key(endpoint_dir)
        return deployments.runtime_config(row.name, endpoint_dir, port, spec, resolved, key)

    # -- starting and stopping processes ---------------------------------------------------------

    def _in_background(self, target: Callable[..., None], *args: Any, name: str) -> None:
        def run() -> None:
            try:
                target(*args)
            finally:
                self._workers.discard(threading.current_thread())

        t = threading.Thread(target=run, name=name, daemon=True)
        self._workers.add(t)
        t.start()

    def _start_in_background(self, endpoint_id: str) -> None:
        self._in_background(
            self._launch_logged, endpoint_id, name=f"shipyard-endpoint-start-{endpoint_id}"
        )

    def _launch_logged(self, endpoint_id: str, restart: bool = False) -> None:
        try:
            self._launch(endpoint_id, restart=restart)
        except Exception:  # the endpoint is marked Failed; the thread must not die loudly
            log.exception("starting endpoint %s failed", endpoint_id)

    def _launch(self, endpoint_id: str, restart: bool = False) -> None:
        """Start the endpoint's server and wait until it is ready; InService, or Failed with
        the reason. A port taken in the meantime is retried on another."""
        slot = self._slot(endpoint_id)
        with slot.lock:
            slot.busy = True
            try:
                self._launch_locked(endpoint_id, slot, restart)
            finally:
                slot.busy = False

    def _launch_locked(self, endpoint_id: str, slot: _Slot, restart: bool) -> None:
        try:
            row = self._row_by_id(endpoint_id)
        except NotFound:
            return
        if row.owner != self.owner or row.status not in RUNNING:
            return
        spec = EndpointSpec.model_validate_json(row.spec)
        path = self._config_path(row.id)
        error = ""
        for attempt in range(3):
            try:
                project = self.projects.project_name(row.project_id)
                resolved = self._repin(project, orjson.loads(row.config or "{}"))
            except ShipyardError as exc:
                error = f"could not fetch the models: {exc.message}"
                break
            # The same port as before where it frees up (callers keep their URL), else another.
            same = (
                row.port and attempt == 0 and port_is_free(row.port, wait_s=3.0 if restart else 0)
            )
            port = row.port if same else free_port()
            write_json_atomic(path, self._runtime_config(row, port, spec, resolved))
            proc = RuntimeProcess.spawn(path, port)
            slot.proc = proc
            self._set(
                row.id,
                port=port,
                pid=proc.pid,
                node=self.node,
                owned=True,
                event=("started", f"pid {proc.pid} on port {port}"),
            )
            try:
                proc.wait_ready(self._http, self.start_timeout_s, cancel=self._stop)
            except Cancelled:
                return  # shutting down: the process and its pid stay for the next supervisor
            except (RuntimeError, TimeoutError) as exc:
                tail = proc.tail()
                proc.stop(grace_s=2)
                slot.proc = None
                error = f"{exc}" + (f":\n{tail}" if tail else "")
                if "address already in use" in tail.lower() or "errno 98" in tail.lower():
                    continue  # another program took the port between our check and its bind
                break
            # It answers: serving, unless it was deleted or stopped meanwhile.
            current = self._row_by_id_or_none(row.id)
            if current is None or current.status not in RUNNING:
                proc.stop()
                slot.proc = None
                return
            if restart:  # keep saying why it was restarted
                self._set(
                    row.id,
                    status=S.in_service.value,
                    owned=True,
                    event=("restarted", f"serving again at {proc.url} (pid {proc.pid})"),
                )
            else:
                self._set(
                    row.id,
                    status=S.in_service.value,
                    last_error=None,
                    owned=True,
                    event=("ready", f"serving deployment {row.deployment} at {proc.url}"),
                )
            self._target_cache.clear()
            return
        self._set(
            row.id,
            status=S.failed.value,
            last_error=error,
            pid=None,
            owned=True,
            event=("failed", error),
        )

    def _stop_process(self, row: Any, slot: _Slot) -> None:
        proc = slot.proc or RuntimeProcess.adopt(self._config_path(row.id), row.pid, row.port)
        if proc is not None:
            proc.stop()
        slot.proc = None

    # -- watching ----------------------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self.supervise_once()
            except Exception:  # a store hiccup must not end supervision
                log.exception("endpoint supervisor pass failed")
            self._stop.wait(self.supervise_interval_s)

    def supervise_once(self) -> None:
        """One pass: renew this supervisor's leases, adopt endpoints whose supervisor is gone,
        and restart any process of ours that died."""
        now = now_ms()
        if now - self._renewed_at >= LEASE_MS // 3:
            # A write every few seconds, not every pass: SQLite has one writer at a time.
            with self.db.write() as conn:
                conn.execute(
                    update(endpoints)
                    .where(endpoints.c.owner == self.owner)
                    .values(lease_expires_at=now + LEASE_MS)
                )
            self._renewed_at = now
        with self.db.read() as conn:
            rows = conn.execute(
                select(endpoints).where(
                    endpoints.c.status.in_(RUNNING),
                    or_(endpoints.c.node.is_(None), endpoints.c.node == self.node),
                )
            ).all()
        for row in rows:
            if self._stop.is_set():
                return
            if row.owner != self.owner:
                if row.owner is not None and (row.lease_expires_at or 0) > now:
                    continue
                if self._claim(row, now):
                    self._adopt(row)
                continue
            slot = self._slot(row.id)
            if slot.busy or row.status != S.in_service.value:
                continue
            with slot.lock:
                if slot.busy:
                    continue
                proc = slot.proc or RuntimeProcess.adopt(
                    self._config_path(row.id), row.pid, row.port
                )
                code = proc.exit_code() if proc is not None else -1
                if code is None:
                    slot.proc = proc
                    continue
                self._restart(row, slot, code)
        # Reap our children whose endpoint went away (deleted or stopped from elsewhere).
        serving = {r.id for r in rows}
        with self._slots_lock:
            gone = [s for eid, s in self._slots.items() if eid not in serving]
        for slot in gone:
            proc = slot.proc
            if (
                proc is not None
                and proc.popen is not None
                and not slot.busy
                and proc.popen.poll() is not None
            ):
                slot.proc = None

    def _claim(self, row: Any, now: int) -> bool:
        with self.db.write() as conn:
            res = conn.execute(
                update(endpoints)
                .where(
                    endpoints.c.id == row.id,
                    or_(
                        endpoints.c.owner.is_(None),
                        endpoints.c.owner == row.owner,
                    ),
                    or_(
                        endpoints.c.lease_expires_at.is_(None),
                        endpoints.c.lease_expires_at <= now,
                    ),
                )
                .values(owner=self.owner, lease_expires_at=now + LEASE_MS, node=self.node)
            )
        return res.rowcount == 1

    def _adopt(self, row: Any) -> None:
        """Take over an endpoint whose supervisor is gone: keep its process if it still serves
        the current deployment, else start it again."""
        slot = self._slot(row.id)
        with slot.lock:
            proc = RuntimeProcess.adopt(self._config_path(row.id), row.pid, row.port)
            if proc is not None and row.status == S.in_service.value and self._live(proc):
                slot.proc = proc
                self._record(row.id, "adopted", f"pid {proc.pid} on port {proc.port}")
                return
            if proc is not None:
                proc.stop(grace_s=5)
            if row.status == S.updating.value:
                # An update cut off half-way: serve the deployment the store says is current.
                self._set(row.id, status=S.in_service.value)
            reason = "was not running" if proc is None else "did not answer"
            if row.status != S.creating.value:
                self._record(row.id, "restarted", f"the endpoint's server {reason}; starting it")
        self._start_in_background(row.id)

    def _restart(self, row: Any, slot: _Slot, code: int) -> None:
        """A process of ours died: record it and start it again, unless it keeps dying."""
        slot.proc = None
        what = f"exit code {code}" if code >= 0 else f"signal {-code}" if code < -1 else "gone"
        tail = RuntimeProcess(self._config_path(row.id), row.pid or 0, row.port or 0).tail()
        now = time.monotonic()
        slot.restarts.append(now)
        n, window = CRASH_LOOP
        if len(slot.restarts) >= n and now - slot.restarts[0] < window:
            error = f"the model server crashed {n} times in {window:.0f} s ({what}); gave up"
            if tail:
                error += f":\n{tail[-1500:]}"
            self._set(
                row.id, status=S.failed.value, pid=None, last_error=error, event=("failed", error)
            )
            return
        with self.db.write() as conn:
            conn.execute(
                update(endpoints)
                .where(endpoints.c.id == row.id)
                .values(
                    restarts=endpoints.c.restarts + 1,
                    pid=None,
                    last_error=f"the model server exited ({what}) and was restarted",
                    updated_at=now_ms(),
                )
            )
            self._event(conn, row.id, "exited", f"pid {row.pid} exited ({what})", now_ms())
        log.warning("endpoint %s: model server exited (%s); restarting", row.name, what)
        slot.busy = True
        self._in_background(self._relaunch, row.id, name=f"shipyard-endpoint-restart-{row.id}")

    def _relaunch(self, endpoint_id: str) -> None:
        slot = self._slot(endpoint_id)
        try:
            with slot.lock:
                self._launch_locked(endpoint_id, slot, restart=True)
        except Exception:
            log.exception("restarting endpoint %s failed", endpoint_id)
        finally:
            slot.busy = False

    def _live(self, proc: RuntimeProcess) -> bool:
        import httpx

        try:
            return self._http.get(f"{proc.url}/v2/health/live", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    # -- rows and records ------------------------------------------------------------------------

    def _slot(self, endpoint_id: str) -> _Slot:
        with self._slots_lock:
            return self._slots[endpoint_id]

    def _row_by_id(self, endpoint_id: str) -> Any:
        row = self._row_by_id_or_none(endpoint_id)
        if row is None:
            raise NotFound(f"endpoint {endpoint_id!r} not found", {"field": "id"})
        return row

    def _row_by_id_or_none(self, endpoint_id: str) -> Any:
        with self.db.read() as conn:
            return conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id)).first()

    def _set(
        self,
        endpoint_id: str,
        *,
        event: tuple[str, str] | None = None,
        owned: bool = False,
        **values: Any,
    ) -> None:
        """Update the endpoint's row and, in the same transaction, record ``event``
        (kind, message): a reader never sees the status without the reason. ``owned``: only
        while this supervisor holds the endpoint (another may have adopted it meanwhile)."""
        q = update(endpoints).where(endpoints.c.id == endpoint_id)
        if owned:
            q = q.where(endpoints.c.owner == self.owner)
        with self.db.write() as conn:
            res = conn.execute(q.values(updated_at=now_ms(), **values))
            if event is not None and res.rowcount:
                self._event(conn, endpoint_id, event[0], event[1], now_ms())

    def _record(self, endpoint_id: str, kind: str, message: str) -> None:
        with contextlib.suppress(IntegrityError), self.db.write() as conn:
            exists = conn.execute(
                select(endpoints.c.id).where(endpoints.c.id == endpoint_id)
            ).first()
            if exists is not None:
                self._event(conn, endpoint_id, kind, message, now_ms())

    @staticmethod
    def _event(conn: Any, endpoint_id: str, kind: str, message: str, now: int) -> None:
        conn.execute(
            endpoint_events.insert().values(
                id=new_id(),
                endpoint_id=endpoint_id,
                kind=kind,
                message=message[:20_000],
                created_at=now,
                updated_at=now,
            )
        )
