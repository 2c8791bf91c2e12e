"""Endpoints: create, list, update, roll back and delete real-time model servers, and keep them
running. With its base class ``serving.supervisor`` (the process side), the only code that
queries the endpoints tables.

Each endpoint is a process (``python -m shipyard.serving.runtime``, see ``serving.process``) on a
free port of 127.0.0.1, started by the Shipyard that created it: ``shipyard server`` or, with
the in-process SDK backend, the notebook or command itself. Its URL is the fast path for
callers; the main server also passes requests through (``.../endpoints/{name}/invocations``).

- Create resolves every model URI through the registry (``fraud@champion`` -> version 3, a
  local folder), writes the runtime's config, starts the process and reports ``InService``
  once ``/v2/health/ready`` answers (``Failed`` with the process's last words otherwise).
- Update and rollback rewrite the config and ask the running server to reload it: the new
  models are loaded and ready before the old ones drain, so no request fails. Every deployment
  is kept, with its URIs pinned to the versions they resolved to, so a rollback serves exactly
  what was served before even after an alias moved.
- A supervisor thread restarts a process that died, records it (``restarts``, events), and
  gives up (``Failed``) on a crash loop. One supervisor holds an endpoint at a time, through a
  lease in the database: when the Shipyard that held it ends, the next one to look adopts the
  process if it still answers, or starts it again (so ``shipyard server`` brings back, on start,
  the endpoints it stopped on shutdown).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.artifacts import ArtifactStore
from shipyard.core.db import Database
from shipyard.core.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    ShipyardError,
    Unavailable,
)
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.settings import Settings
from shipyard.core.timeutil import ms_to_dt, now_ms
from shipyard.projects.service import ProjectService
from shipyard.serving import deployments
from shipyard.serving import stats as stats_
from shipyard.serving.deployments import Resolver
from shipyard.serving.process import (
    RuntimeProcess,
    ensure_invoke_key,
    invoke_headers,
    write_json_atomic,
)
from shipyard.serving.schemas import (
    DeploymentPublic,
    DeploymentsPublic,
    EndpointCreate,
    EndpointEventPublic,
    EndpointEventsPublic,
    EndpointPublic,
    EndpointSpec,
    EndpointsPublic,
    EndpointStatus,
    EndpointUpdate,
    VariantPublic,
)
from shipyard.serving.supervisor import LEASE_MS, Supervisor, log
from shipyard.serving.tables import endpoint_deployments, endpoint_events, endpoints

if TYPE_CHECKING:  # imported where used: an idle server need not hold it (5 MB)
    import httpx

S = EndpointStatus


# How often complete capture files go from SHIPYARD_HOME to a remote artifact store.
CAPTURE_SHIP_INTERVAL_S = 5.0


class EndpointService(Supervisor):
    """Endpoints of every project in one metadata store (see the module's docstring)."""

    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        projects: ProjectService,
        settings: Settings,
        resolve: Resolver | None = None,
        *,
        start_timeout_s: float = 120.0,
        supervise_interval_s: float = 0.5,
    ) -> None:
        super().__init__(
            db,
            projects,
            settings.home / "endpoints",
            resolve,
            start_timeout_s=start_timeout_s,
            supervise_interval_s=supervise_interval_s,
            auth=settings.auth,
        )
        self.store = store
        self.settings = settings
        self._next_ship = 0.0
        self._ship_lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------------

    def create(
        self, project: str, body: EndpointCreate, created_by: str | None = None
    ) -> EndpointPublic:
        """Register the endpoint and start its server in the background: returns at once with
        status ``Creating`` (``InService`` follows when it answers, or ``Failed``)."""
        spec = body.spec()
        project_id = self.projects.project_id(project)
        with self.db.read() as conn:
            taken = conn.execute(
                select(endpoints.c.id).where(
                    endpoints.c.project_id == project_id, endpoints.c.name == body.name
                )
            ).first()
        if taken is not None:
            raise AlreadyExists(
                f"endpoint {body.name!r} already exists in project {project!r}", {"field": "name"}
            )
        shorthand = body.model is not None
        resolved = self._resolve_spec(project, spec, shorthand=shorthand)
        resolved["capture_dir"] = self._capture_dir(project, body.name) if spec.capture else None
        now = now_ms()
        eid = new_id()
        try:
            with self.db.write() as conn:
                conn.execute(
                    endpoints.insert().values(
                        id=eid,
                        project_id=project_id,
                        name=body.name,
                        status=S.creating.value,
                        spec=_dumps(spec.model_dump(mode="json")),
                        config=_dumps(resolved),
                        deployment=1,
                        host="127.0.0.1",
                        node=self.node,
                        owner=self.owner,
                        lease_expires_at=now + LEASE_MS,
                        restarts=0,
                        created_by=created_by,
                        created_at=now,
                        updated_at=now,
                    )
                )
                self._add_deployment(conn, eid, 1, "create", spec, resolved, created_by, now)
                self._event(
                    conn, eid, "created", f"deployment 1: {deployments.describe(resolved)}", now
                )
        except IntegrityError:
            raise AlreadyExists(
                f"endpoint {body.name!r} already exists in project {project!r}", {"field": "name"}
            ) from None
        self.start_supervisor()
        self._start_in_background(eid)
        return self.get(project, body.name, with_stats=False)

    def get(self, project: str, name: str, *, with_stats: bool = True) -> EndpointPublic:
        row = self._row(project, name)
        stats = self._fetch_stats(row) if with_stats else None
        return self._public(project, row, stats, with_stats)

    def list(
        self,
        project: str,
        *,
        page_size: int = 100,
        page_token: str | None = None,
        with_stats: bool = True,
    ) -> EndpointsPublic:
        check_page_size(page_size)
        offset = decode_page_token(page_token)
        project_id = self.projects.project_id(project)
        where = endpoints.c.project_id == project_id
        with self.db.read() as conn:
            rows = conn.execute(
                select(endpoints)
                .where(where)
                .order_by(endpoints.c.name)
                .limit(page_size + 1)
                .offset(offset)
            ).all()
            count = conn.execute(select(func.count()).select_from(endpoints).where(where)).scalar()
        page = rows[:page_size]
        stats: list[dict[str, Any] | None] = [None] * len(page)
        if with_stats and page:
            with ThreadPoolExecutor(max_workers=min(8, len(page))) as pool:
                stats = list(pool.map(self._fetch_stats, page))
        return EndpointsPublic(
            data=[
                self._public(project, r, s, with_stats) for r, s in zip(page, stats, strict=True)
            ],
            count=int(count or 0),
            next_page_token=next_token(offset, page_size, len(rows)),
        )

    def update(
        self, project: str, name: str, body: EndpointUpdate, created_by: str | None = None
    ) -> EndpointPublic:
        """Serve a new deployment. A running endpoint reloads with no failed request and is
        ``InService`` again when this returns; if the new models fail to load, it keeps serving
        the old ones and this raises with the reason."""
        row = self._row(project, name)
        spec = body.apply(EndpointSpec.model_validate_json(row.spec))
        resolved = self._resolve_spec(project, spec, shorthand=body.model is not None)
        resolved["capture_dir"] = self._capture_dir(project, name) if spec.capture else None
        self._deploy(project, row, spec, resolved, "update", created_by)
        return self.get(project, name)

    def rollback(
        self, project: str, name: str, to: int | None = None, created_by: str | None = None
    ) -> EndpointPublic:
        """Serve an earlier deployment again (default: the one before the current), with the
        model versions it served then."""
        row = self._row(project, name)
        with self.db.read() as conn:
            q = select(endpoint_deployments).where(endpoint_deployments.c.endpoint_id == row.id)
            if to is None:
                q = q.where(endpoint_deployments.c.number < row.deployment).order_by(
                    endpoint_deployments.c.number.desc()
                )
            else:
                q = q.where(endpoint_deployments.c.number == to)
            target = conn.execute(q.limit(1)).first()
        if target is None:
            if to is None:
                raise InvalidArgument.for_field(
                    "to", f"endpoint {name!r} has no deployment before {row.deployment}"
                )
            raise NotFound(f"endpoint {name!r} has no deployment {to}", {"field": "to"})
        if target.number == row.deployment:
            raise InvalidArgument.for_field("to", f"deployment {to} is the one being served")
        spec = EndpointSpec.model_validate_json(target.spec)
        resolved = self._repin(project, orjson.loads(target.config))
        resolved["capture_dir"] = self._capture_dir(project, name) if spec.capture else None
        self._deploy(project, row, spec, resolved, "rollback", created_by, source=target.number)
        return self.get(project, name)

    def delete(self, project: str, name: str) -> None:
        """Stop the endpoint's server and forget the endpoint (its captured data stays)."""
        row = self._row(project, name)
        with self.db.write() as conn:
            conn.execute(
                update(endpoints)
                .where(endpoints.c.id == row.id)
                .values(status=S.deleting.value, updated_at=now_ms())
            )
        slot = self._slot(row.id)
        with slot.lock:
            slot.busy = True
            try:
                self._stop_process(row, slot)
                with self.db.write() as conn:
                    conn.execute(delete(endpoints).where(endpoints.c.id == row.id))
            finally:
                slot.busy = False
        with self._slots_lock:
            self._slots.pop(row.id, None)
        self._target_cache.pop((project, name), None)
        shutil.rmtree(self.root / row.id, ignore_errors=True)

    def stop(self, project: str, name: str) -> EndpointPublic:
        """Stop the server but keep the endpoint (``Stopped``); ``start`` brings it back."""
        row = self._row(project, name)
        if row.status in (S.creating.value, S.updating.value, S.deleting.value):
            raise Conflict(f"endpoint {name!r} is {row.status}; try again when it is done")
        slot = self._slot(row.id)
        with slot.lock:
            slot.busy = True
            try:
                self._stop_process(row, slot)
                self._set(
                    row.id,
                    status=S.stopped.value,
                    pid=None,
                    event=("stopped", "stopped on request"),
                )
            finally:
                slot.busy = False
        self._target_cache.pop((project, name), None)
        return self.get(project, name, with_stats=False)

    def start(self, project: str, name: str) -> EndpointPublic:
        """Start a ``Stopped`` or ``Failed`` endpoint again (``Creating`` until it answers)."""
        row = self._row(project, name)
        if row.status not in (S.stopped.value, S.failed.value):
            raise Conflict(f"endpoint {name!r} is {row.status}, not Stopped or Failed")
        self._set(
            row.id,
            status=S.creating.value,
            owner=self.owner,
            lease_expires_at=now_ms() + LEASE_MS,
            last_error=None,
        )
        self.start_supervisor()
        self._start_in_background(row.id)
        return self.get(project, name, with_stats=False)

    def deployments(self, project: str, name: str) -> DeploymentsPublic:
        row = self._row(project, name)
        with self.db.read() as conn:
            rows = conn.execute(
                select(endpoint_deployments)
                .where(endpoint_deployments.c.endpoint_id == row.id)
                .order_by(endpoint_deployments.c.number.desc())
            ).all()
        out = []
        for d in rows:
            variants, shadow = _variants(EndpointSpec.model_validate_json(d.spec), d.config)
            out.append(
                DeploymentPublic(
                    number=d.number,
                    reason=d.reason,
                    current=d.number == row.deployment,
                    variants=variants,
                    shadow=shadow,
                    created_by=d.created_by,
                    created_at=ms_to_dt(d.created_at),
                )
            )
        return DeploymentsPublic(data=out, count=len(out))

    def events(self, project: str, name: str, limit: int = 100) -> EndpointEventsPublic:
        row = self._row(project, name)
        check_page_size(limit)
        with self.db.read() as conn:
            rows = conn.execute(
                select(endpoint_events)
                .where(endpoint_events.c.endpoint_id == row.id)
                .order_by(endpoint_events.c.created_at.desc(), endpoint_events.c.id.desc())
                .limit(limit)
            ).all()
        return EndpointEventsPublic(
            data=[
                EndpointEventPublic(
                    kind=e.kind, message=e.message, created_at=ms_to_dt(e.created_at)
                )
                for e in rows
            ]
        )

    def target(self, project: str, name: str) -> tuple[str, dict[str, str]]:
        """The base URL of a serving endpoint and the headers a call to it carries (its invoke
        key when auth is on), cached for a second: for the pass-through."""
        key = (project, name)
        hit = self._target_cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1], hit[2]
        row = self._row(project, name)
        if row.port is None or row.status not in (S.in_service.value, S.updating.value):
            raise Unavailable(
                f"endpoint {name!r} is {row.status}, not serving",
                {"field": "name", "status": row.status},
            )
        url = f"http://{row.host}:{row.port}"
        headers = invoke_headers(self.root / row.id)
        self._target_cache[key] = (time.monotonic() + 1.0, url, headers)
        return url, headers

    def invoke_key(self, project: str, name: str) -> str | None:
        """The bearer key the endpoint's own port asks for (None while auth is off)."""
        row = self._row(project, name)
        if not self.auth:
            return None
        return ensure_invoke_key(self.root / row.id)

    def close(self) -> None:
        self.shutdown(stop_processes=False)
        if self._http_client is not None:
            self._http_client.close()
        with contextlib.suppress(Exception):  # what is complete goes now; the rest next time
            self.ship_captures()

    # -- deploying -------------------------------------------------------------------------------

    def _resolve_spec(self, project: str, spec: EndpointSpec, *, shorthand: bool) -> dict[str, Any]:
        return deployments.resolve_spec(self._resolver(), project, spec, shorthand=shorthand)

    def supervise_once(self) -> None:
        super().supervise_once()
        if not self.store.is_local and time.monotonic() >= self._next_ship:
            self._next_ship = time.monotonic() + CAPTURE_SHIP_INTERVAL_S
            try:
                self.ship_captures()
            except Exception:  # the store is down: the files wait for the next pass
                log.exception("uploading captured requests failed")

    def ship_captures(self) -> int:
        """Move the complete capture files (``*.jsonl``; a file still being written is
        ``*.jsonl.part``) that endpoints wrote under SHIPYARD_HOME into the artifact store when
        it is not a local folder, at the same place: ``capture/<project>/<endpoint>/YYYY/MM/DD/
        HH/<file>``. Returns how many were moved. Called every few seconds by the supervisor."""
        if self.store.is_local:
            return 0  # the runtime already writes inside the store's folder
        moved = 0
        with self._ship_lock:  # the supervisor's pass and an explicit call take turns
            for path in sorted((self.settings.home / "capture").rglob("*.jsonl")):
                self.store.put_named(path.relative_to(self.settings.home).as_posix(), path)
                path.unlink()
                moved += 1
        return moved

    def _capture_dir(self, project: str, name: str) -> str:
        """Where the runtime writes captured requests: inside the artifact store's folder when
        it is local; otherwise under SHIPYARD_HOME (then copied into the store)."""
        base = Path(self.store.root) if self.store.is_local else self.settings.home
        path = base / "capture" / project / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _deploy(
        self,
        project: str,
        row: Any,
        spec: EndpointSpec,
        resolved: dict[str, Any],
        reason: str,
        created_by: str | None,
        source: int | None = None,
    ) -> None:
        slot = self._slot(row.id)
        with slot.lock:
            row = self._row_by_id(row.id)
            if row.status in (S.creating.value, S.updating.value, S.deleting.value):
                raise Conflict(
                    f"endpoint {row.name!r} is {row.status}; try again when it is done",
                    {"status": row.status},
                )
            proc = slot.proc or RuntimeProcess.adopt(self._config_path(row.id), row.pid, row.port)
            running = row.status == S.in_service.value and proc is not None and proc.alive()
            number = self._next_deployment(row.id)
            what = f"deployment {number}: {deployments.describe(resolved)}"
            if source is not None:
                what = (
                    f"deployment {number} (rollback to {source}): {deployments.describe(resolved)}"
                )
            if not running:
                # Nothing to reload: record it, and start it if it was meant to run.
                restart = row.status in (S.failed.value, S.in_service.value)
                with self.db.write() as conn:
                    self._add_deployment(
                        conn, row.id, number, reason, spec, resolved, created_by, now_ms()
                    )
                    conn.execute(
                        update(endpoints)
                        .where(endpoints.c.id == row.id)
                        .values(
                            spec=_dumps(spec.model_dump(mode="json")),
                            config=_dumps(resolved),
                            deployment=number,
                            status=S.creating.value if restart else row.status,
                            owner=self.owner if restart else row.owner,
                            lease_expires_at=now_ms() + LEASE_MS if restart else None,
                            last_error=None,
                            updated_at=now_ms(),
                        )
                    )
                    self._event(conn, row.id, reason, what, now_ms())
                if restart:
                    self.start_supervisor()
                    self._start_in_background(row.id)
                return
            assert proc is not None
            # InService -> Updating as one compare-and-set: two updates (from two processes)
            # never reload the same server at once.
            with self.db.write() as conn:
                took = conn.execute(
                    update(endpoints)
                    .where(endpoints.c.id == row.id, endpoints.c.status == S.in_service.value)
                    .values(status=S.updating.value, updated_at=now_ms())
                ).rowcount
            if took != 1:
                raise Conflict(
                    f"endpoint {row.name!r} is being changed; try again when it is done",
                    {"status": S.updating.value},
                )
            slot.busy = True
            try:
                path = self._config_path(row.id)
                old_config = path.read_bytes() if path.exists() else None
                write_json_atomic(path, self._runtime_config(row, proc.port, spec, resolved))
                try:
                    self._reload(proc)
                except ShipyardError as exc:
                    if old_config is not None:
                        tmp = path.with_name(".config.rollback.tmp")
                        tmp.write_bytes(old_config)
                        os.replace(tmp, path)
                    self._set(
                        row.id,
                        status=S.in_service.value,
                        last_error=f"{reason} failed, still serving deployment "
                        f"{row.deployment}: {exc.message}",
                        event=("failed", f"{reason} failed: {exc.message}"),
                    )
                    raise
                with self.db.write() as conn:
                    self._add_deployment(
                        conn, row.id, number, reason, spec, resolved, created_by, now_ms()
                    )
                    conn.execute(
                        update(endpoints)
                        .where(endpoints.c.id == row.id)
                        .values(
                            spec=_dumps(spec.model_dump(mode="json")),
                            config=_dumps(resolved),
                            deployment=number,
                            status=S.in_service.value,
                            last_error=None,
                            updated_at=now_ms(),
                        )
                    )
                    self._event(conn, row.id, reason, what, now_ms())
            except BaseException:
                with contextlib.suppress(ShipyardError):
                    current = self._row_by_id(row.id)
                    if current.status == S.updating.value:
                        self._set(row.id, status=S.in_service.value)
                raise
            finally:
                slot.busy = False

    def _reload(self, proc: RuntimeProcess) -> None:
        """Ask the running server to load its config again; raise if it could not."""
        import httpx

        try:
            r = self._http.post(
                f"{proc.url}/shipyard/reload",
                timeout=self.start_timeout_s,
                headers=invoke_headers(proc.config_path.parent),
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"the endpoint's server did not answer the reload: {exc}") from exc
        if r.status_code >= 400:
            message = _error_message(r)
            # The server refused the new models (and kept serving the old ones): say why, as
            # the deployment's fault; only a server that is not there is "unavailable".
            cls = Unavailable if r.status_code in (502, 503, 504) else InvalidArgument
            raise cls(f"the new deployment did not load: {message}", {"field": "model"})

    def _next_deployment(self, endpoint_id: str) -> int:
        with self.db.read() as conn:
            n = conn.execute(
                select(func.max(endpoint_deployments.c.number)).where(
                    endpoint_deployments.c.endpoint_id == endpoint_id
                )
            ).scalar()
        return int(n or 0) + 1

    # -- reading -----------------------------------------------------------------------------------

    def _fetch_stats(self, row: Any) -> dict[str, Any] | None:
        if row.port is None or row.status not in (S.in_service.value, S.updating.value):
            return None
        import httpx

        try:
            r = self._http.get(
                f"http://{row.host}:{row.port}/shipyard/stats",
                timeout=1.0,
                headers=invoke_headers(self.root / row.id),
            )
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        try:
            data = r.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _row(self, project: str, name: str) -> Any:
        project_id = self.projects.project_id(project)
        with self.db.read() as conn:
            row = conn.execute(
                select(endpoints).where(
                    endpoints.c.project_id == project_id, endpoints.c.name == name
                )
            ).first()
        if row is None:
            raise NotFound(f"endpoint {name!r} not found in project {project!r}", {"field": "name"})
        return row

    @staticmethod
    def _add_deployment(
        conn: Any,
        endpoint_id: str,
        number: int,
        reason: str,
        spec: EndpointSpec,
        resolved: dict[str, Any],
        created_by: str | None,
        now: int,
    ) -> None:
        conn.execute(
            endpoint_deployments.insert().values(
                id=new_id(),
                endpoint_id=endpoint_id,
                number=number,
                reason=reason,
                spec=_dumps(spec.model_dump(mode="json")),
                config=_dumps(resolved),
                created_by=created_by,
                created_at=now,
                updated_at=now,
            )
        )

    def _public(
        self, project: str, row: Any, stats: dict[str, Any] | None, with_stats: bool = True
    ) -> EndpointPublic:
        spec = EndpointSpec.model_validate_json(row.spec)
        variants, shadow = _variants(spec, row.config)
        figures = stats_.summarize(stats) if stats is not None else None
        if figures is not None:
            for v in [*variants, *([shadow] if shadow else [])]:
                fv = figures.variants.get(v.name)
                if fv is not None:
                    v.requests, v.errors = fv.requests, fv.errors
                    v.latency_p50_ms, v.latency_p99_ms = fv.p50_ms, fv.p99_ms
        resolved = orjson.loads(row.config) if row.config else {}
        serving = row.port is not None and row.status in (
            S.in_service.value,
            S.updating.value,
        )
        return EndpointPublic(
            id=row.id,
            project=project,
            name=row.name,
            status=EndpointStatus(row.status),
            url=f"http://{row.host}:{row.port}" if serving else None,
            variants=variants,
            shadow=shadow,
            capture=spec.capture,
            capture_dir=resolved.get("capture_dir"),
            batching=spec.batching,
            scaling=spec.scaling,
            multi_model=spec.multi_model,
            trust_code=spec.trust_code,
            deployment=row.deployment,
            restarts=row.restarts + (figures.worker_restarts if figures else 0),
            last_error=row.last_error,
            pid=row.pid,
            ready=_ready(row, stats) if with_stats else None,
            workers=figures.workers if figures else None,
            requests=figures.requests if figures else None,
            latency_p50_ms=figures.p50_ms if figures else None,
            latency_p99_ms=figures.p99_ms if figures else None,
            stats=stats,
            created_by=row.created_by,
            created_at=ms_to_dt(row.created_at),
            updated_at=ms_to_dt(row.updated_at),
        )


def _ready(row: Any, stats: dict[str, Any] | None) -> bool:
    """Serving now: meant to (InService or Updating) and its server says it is ready."""
    if row.status not in (S.in_service.value, S.updating.value) or stats is None:
        return False
    return bool(stats.get("ready", True))


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _variants(spec: EndpointSpec, config: str | None) -> tuple[list[VariantPublic], Any]:
    resolved = orjson.loads(config) if config else {}
    by_name = {v["name"]: v for v in resolved.get("variants") or []}
    total = sum(v.weight for v in spec.variants) or 1.0
    variants = []
    for v in spec.variants:
        r = by_name.get(v.name, {})
        variants.append(
            VariantPublic(
                name=v.name,
                model=v.model,
                model_name=r.get("model_name"),
                model_version=r.get("model_version"),
                weight=v.weight / total,
            )
        )
    shadow = None
    if spec.shadow is not None:
        r = resolved.get("shadow") or {}
        shadow = VariantPublic(
            name=spec.shadow.name,
            model=spec.shadow.model,
            model_name=r.get("model_name"),
            model_version=r.get("model_version"),
            weight=0.0,
        )
    return variants, shadow


def _error_message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500] or f"HTTP {r.status_code}"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("detail"):
            return str(body["detail"])
    return str(body)[:500]
