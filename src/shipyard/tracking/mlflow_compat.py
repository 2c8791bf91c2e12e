"""MLflow's tracking REST API 2.0 and its artifact proxy, thin over ``TrackingService``.

Point the stock ``mlflow`` client at a Shipyard server (``MLFLOW_TRACKING_URI=http://host:port``,
``MLFLOW_TRACKING_TOKEN=<api token>`` when auth is on) and its experiments, runs, metrics, params,
tags, dataset inputs and artifacts land in the project ``Settings.mlflow_project``, where the
SDK, CLI and Studio see them like any other. Shapes are translated by ``tracking.mlflow_translate``.

Errors are MLflow's (``{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}`` with MLflow's
HTTP status), so the client raises ``MlflowException`` with the code it expects. Reads need the
viewer role in the project and writes the editor role, as on Shipyard's own API.
"""

from __future__ import annotations

import logging
import mimetypes
import tempfile
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

from shipyard.core.errors import Internal, InvalidArgument, NotFound, PayloadTooLarge, ShipyardError
from shipyard.core.paging import decode_page_token, encode_page_token
from shipyard.core.schemas import invalid_from_validation, validate
from shipyard.core.timeutil import ms_to_dt
from shipyard.projects.deps import CurrentPrincipal, Scope, project_service
from shipyard.projects.schemas import Role
from shipyard.tracking import mlflow_search as ms
from shipyard.tracking import mlflow_translate as mt
from shipyard.tracking.schemas import (
    ExperimentCreate,
    ExperimentUpdate,
    RunCreate,
    RunUpdate,
    SearchRuns,
)
from shipyard.tracking.service import TrackingService

log = logging.getLogger("shipyard.mlflow")

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
# MLflow's own limits on max_results.
MAX_SEARCH_RESULTS = 50_000
DEFAULT_RUNS_PAGE = 1000
DEFAULT_EXPERIMENTS_PAGE = 1000
# Shipyard's page limit (core.paging): a larger max_results gets this many and a page token.
SHIPYARD_PAGE = 10_000


def _error(exc: ShipyardError) -> JSONResponse:
    status, body = mt.error_out(exc)
    return JSONResponse(body, status_code=status)


class MlflowRoute(APIRoute):
    """A route whose errors, including those of its dependencies (auth) and of request
    parsing, are MLflow's error body rather than Shipyard's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ShipyardError as exc:
                return _error(exc)
            except RequestValidationError as exc:
                return _error(invalid_from_validation(exc))
            except Exception as exc:
                log.exception("unexpected error in %s", request.url.path, exc_info=exc)
                return _error(
                    Internal(f"internal error ({type(exc).__name__}); see the server log")
                )

        return handle


router = APIRouter(route_class=MlflowRoute, tags=["mlflow"])


# -- dependencies -------------------------------------------------------------------------------


def _tracking(request: Request) -> TrackingService:
    return request.app.state.tracking  # type: ignore[no-any-return]


def _scope(role: Role):  # type: ignore[no-untyped-def]
    def dep(request: Request, principal: CurrentPrincipal) -> Scope:
        settings = request.app.state.settings
        project = settings.mlflow_project
        projects = project_service(request)
        try:
            projects.project_id(project)
        except NotFound:
            # Made on demand, with no members: with auth on, an administrator grants roles.
            projects.ensure_project(project)
        if settings.auth:
            projects.authorize(principal, project, role)
        return Scope(project=project, principal=principal)

    return dep


Tracking = Annotated[TrackingService, Depends(_tracking)]
Reader = Annotated[Scope, Depends(_scope(Role.viewer))]
Writer = Annotated[Scope, Depends(_scope(Role.editor))]
JsonBody = Annotated[dict[str, Any] | None, Body()]


def _query(request: Request, *repeated: str) -> mt.Fields:
    """A GET's query string as a message; ``repeated`` fields keep every value."""
    data: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in repeated:
            data.setdefault(key, []).append(value)
        else:
            data[key] = value
    return mt.Fields(data)


class _Ids:
    """Experiment ids as MLflow sees them: "0" is the project's experiment named Default."""

    def __init__(self, svc: TrackingService, project: str) -> None:
        self.svc = svc
        self.project = project
        self._looked_up = False
        self._default: str | None = None

    def default_id(self, create: bool = False) -> str | None:
        if not self._looked_up or (self._default is None and create):
            try:
                self._default = self.svc.get_experiment_by_name(
                    self.project, mt.DEFAULT_EXPERIMENT_NAME
                ).id
            except NotFound:
                if create:
                    self._default = self.svc.ensure_experiment(
                        self.project, mt.DEFAULT_EXPERIMENT_NAME
                    ).id
            self._looked_up = True
        return self._default

    def inward(self, experiment_id: str) -> str:
        if experiment_id == mt.DEFAULT_EXPERIMENT_ID:
            found = self.default_id(create=True)
            assert found is not None
            return found
        return experiment_id

    def outward(self, experiment_id: str) -> str:
        return mt.DEFAULT_EXPERIMENT_ID if experiment_id == self.default_id() else experiment_id


def _max_results(f: mt.Fields, default: int) -> int:
    n = f.integer("max_results")
    if n is None:
        return default
    if not 1 <= n <= MAX_SEARCH_RESULTS:
        raise InvalidArgument.for_field(
            "max_results", f"expected an integer from 1 to {MAX_SEARCH_RESULTS}, got {n}"
        )
    return n


# -- experiments --------------------------------------------------------------------------------


@router.post(f"{API}/experiments/create")
def create_experiment(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    tags = dict(f.key_values("tags"))
    description = tags.pop(mt.NOTE_TAG, "")
    # artifact_location is ignored: a run's artifacts always go through this server's proxy.
    exp = svc.create_experiment(
        scope.project,
        validate(ExperimentCreate, name=f.req("name"), description=description, tags=tags),
    )
    return {"experiment_id": _Ids(svc, scope.project).outward(exp.id)}


@router.get(f"{API}/experiments/get")
def get_experiment(request: Request, scope: Reader, svc: Tracking) -> dict[str, Any]:
    ids = _Ids(svc, scope.project)
    eid = ids.inward(_query(request).req("experiment_id"))
    exp = svc.get_experiment(scope.project, eid)
    return {"experiment": mt.experiment_out(exp, ids.outward(exp.id))}


@router.get(f"{API}/experiments/get-by-name")
def get_experiment_by_name(request: Request, scope: Reader, svc: Tracking) -> dict[str, Any]:
    ids = _Ids(svc, scope.project)
    name = _query(request).req("experiment_name")
    if name == mt.DEFAULT_EXPERIMENT_NAME:
        ids.default_id(create=True)  # MLflow's Default always exists
    exp = svc.get_experiment_by_name(scope.project, name)
    return {"experiment": mt.experiment_out(exp, ids.outward(exp.id))}


def _search_experiments(f: mt.Fields, scope: Scope, svc: TrackingService) -> dict[str, Any]:
    ids = _Ids(svc, scope.project)
    ids.default_id(create=True)
    lifecycle = f.view_type("view_type")
    max_results = _max_results(f, DEFAULT_EXPERIMENTS_PAGE)
    clauses = ms.experiment_filter(f.text("filter"))
    order_by = [str(o) for o in f.items("order_by")]
    offset = decode_page_token(f.text("page_token"))
    found: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = svc.list_experiments(
            scope.project, lifecycle=lifecycle, page_size=SHIPYARD_PAGE, page_token=token
        )
        found += [mt.experiment_out(e, ids.outward(e.id)) for e in page.data]
        token = page.next_page_token
        if token is None:
            break
    matches = ms.sort_experiments([e for e in found if ms.experiment_matches(e, clauses)], order_by)
    out: dict[str, Any] = {"experiments": matches[offset : offset + max_results]}
    if offset + max_results < len(matches):
        out["next_page_token"] = encode_page_token(offset + max_results)
    return out


@router.post(f"{API}/experiments/search")
def search_experiments(scope: Reader, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    return _search_experiments(mt.Fields(body), scope, svc)


@router.get(f"{API}/experiments/search")
def search_experiments_get(request: Request, scope: Reader, svc: Tracking) -> dict[str, Any]:
    return _search_experiments(_query(request, "order_by"), scope, svc)


@router.post(f"{API}/experiments/delete")
def delete_experiment(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    eid = _Ids(svc, scope.project).inward(mt.Fields(body).req("experiment_id"))
    svc.delete_experiment(scope.project, eid)
    return {}


@router.post(f"{API}/experiments/restore")
def restore_experiment(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    eid = _Ids(svc, scope.project).inward(mt.Fields(body).req("experiment_id"))
    svc.restore_experiment(scope.project, eid)
    return {}


@router.post(f"{API}/experiments/update")
def update_experiment(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    eid = _Ids(svc, scope.project).inward(f.req("experiment_id"))
    svc.update_experiment(scope.project, eid, validate(ExperimentUpdate, name=f.text("new_name")))
    return {}


@router.post(f"{API}/experiments/set-experiment-tag")
def set_experiment_tag(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    eid = _Ids(svc, scope.project).inward(f.req("experiment_id"))
    key, value = f.req("key"), f.text("value") or ""
    update = (
        validate(ExperimentUpdate, description=value)
        if key == mt.NOTE_TAG
        else validate(ExperimentUpdate, tags={key: value})
    )
    svc.update_experiment(scope.project, eid, update)
    return {}


# -- runs ---------------------------------------------------------------------------------------


@router.post(f"{API}/runs/create")
def create_run(
    request: Request, scope: Writer, svc: Tracking, body: JsonBody = None
) -> dict[str, Any]:
    f = mt.Fields(body)
    ids = _Ids(svc, scope.project)
    eid = ids.inward(f.text("experiment_id") or mt.DEFAULT_EXPERIMENT_ID)
    if len(eid) > 16:  # longer than any Shipyard id: say "not found", as for any unknown id
        raise NotFound(f"experiment {eid!r} not found", {"experiment_id": eid})
    tags = dict(f.key_values("tags"))
    name = f.text("run_name") or tags.get(mt.RUN_NAME_TAG) or None
    tags.pop(mt.RUN_NAME_TAG, None)
    parent = tags.get(mt.PARENT_RUN_TAG)
    if parent is not None:
        try:
            svc.get_run(scope.project, parent)
        except (NotFound, InvalidArgument):
            parent = None  # a parent from elsewhere stays a tag only
    start = f.integer("start_time")
    # With auth on, the run is the caller's; with it off, the client says who its user is.
    user_id = f.text("user_id")
    created_by = scope.principal.name if request.app.state.settings.auth else user_id
    run = svc.create_run(
        scope.project,
        validate(
            RunCreate,
            experiment_id=eid,
            name=name,
            parent_run_id=parent,
            tags=tags,
            start_time=ms_to_dt(start) if start else None,
        ),
        created_by=created_by[:64] if created_by else None,
    )
    return {"run": mt.run_out(run, ids.outward(run.experiment_id))}


@router.post(f"{API}/runs/update")
def update_run(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    end = f.integer("end_time")
    run = svc.update_run(
        scope.project,
        f.req("run_id", alias="run_uuid"),
        validate(
            RunUpdate,
            status=f.status("status"),
            end_time=ms_to_dt(end) if end else None,
            name=f.text("run_name"),
        ),
    )
    return {"run_info": mt.run_info_out(run, _Ids(svc, scope.project).outward(run.experiment_id))}


@router.post(f"{API}/runs/delete")
def delete_run(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    svc.delete_run(scope.project, mt.Fields(body).req("run_id"))
    return {}


@router.post(f"{API}/runs/restore")
def restore_run(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    svc.restore_run(scope.project, mt.Fields(body).req("run_id"))
    return {}


def _rename(svc: TrackingService, project: str, run_id: str, name: str) -> None:
    svc.update_run(project, run_id, validate(RunUpdate, name=name))


@router.post(f"{API}/runs/log-metric")
def log_metric(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    row = mt.metric_row(f.data, "metric")
    svc.log_batch(scope.project, f.req("run_id", alias="run_uuid"), metrics_=[row])
    return {}


@router.post(f"{API}/runs/log-parameter")
def log_param(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    svc.log_batch(
        scope.project,
        f.req("run_id", alias="run_uuid"),
        params=[(f.req("key"), f.text("value") or "")],
    )
    return {}


@router.post(f"{API}/runs/set-tag")
def set_tag(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    run_id, key, value = f.req("run_id", alias="run_uuid"), f.req("key"), f.text("value") or ""
    if key == mt.RUN_NAME_TAG:
        _rename(svc, scope.project, run_id, value)
    else:
        svc.set_tag(scope.project, run_id, key, value)
    return {}


@router.post(f"{API}/runs/delete-tag")
def delete_tag(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    run_id, key = f.req("run_id"), f.req("key")
    if key == mt.RUN_NAME_TAG:
        svc.get_run(scope.project, run_id)  # a run always has a name: nothing to delete
    else:
        svc.delete_tag(scope.project, run_id, key)
    return {}


@router.post(f"{API}/runs/log-batch")
def log_batch(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    run_id = f.req("run_id")
    metrics = [mt.metric_row(m, f"metrics[{i}]") for i, m in enumerate(f.items("metrics"))]
    tags = f.key_values("tags")
    names = [v for k, v in tags if k == mt.RUN_NAME_TAG]
    if names:
        _rename(svc, scope.project, run_id, names[-1])
    svc.log_batch(
        scope.project,
        run_id,
        metrics_=metrics,
        params=f.key_values("params"),
        tags=[(k, v) for k, v in tags if k != mt.RUN_NAME_TAG],
    )
    return {}


@router.post(f"{API}/runs/log-inputs")
def log_inputs(scope: Writer, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    run_id = f.req("run_id")
    datasets = [mt.dataset_in(d, f"datasets[{i}]") for i, d in enumerate(f.items("datasets"))]
    if datasets:
        svc.log_inputs(scope.project, run_id, datasets)
    else:
        svc.get_run(scope.project, run_id)  # model inputs are not kept; the run must exist
    return {}


@router.get(f"{API}/runs/get")
def get_run(request: Request, scope: Reader, svc: Tracking) -> dict[str, Any]:
    run = svc.get_run(scope.project, _query(request).req("run_id", alias="run_uuid"))
    return {"run": mt.run_out(run, _Ids(svc, scope.project).outward(run.experiment_id))}


@router.get(f"{API}/metrics/get-history")
def get_metric_history(request: Request, scope: Reader, svc: Tracking) -> dict[str, Any]:
    f = _query(request)
    history = svc.get_metric_history(
        scope.project, f.req("run_id", alias="run_uuid"), f.req("metric_key")
    )
    points = mt.history_out(history)
    offset = decode_page_token(f.text("page_token"))
    size = f.integer("max_results") or len(points)
    if size < 0:
        raise InvalidArgument.for_field("max_results", f"expected a positive integer, got {size}")
    out: dict[str, Any] = {"metrics": points[offset : offset + size]}
    if offset + size < len(points):
        out["next_page_token"] = encode_page_token(offset + size)
    return out


@router.post(f"{API}/runs/search")
def search_runs(scope: Reader, svc: Tracking, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    ids = _Ids(svc, scope.project)
    experiment_ids = [ids.inward(str(e)) for e in f.items("experiment_ids")]
    page = svc.search_runs(
        scope.project,
        validate(
            SearchRuns,
            experiment_ids=experiment_ids,
            filter=ms.translate_run_filter(f.text("filter")),
            order_by=ms.translate_run_order_by(str(o) for o in f.items("order_by")),
            lifecycle=f.view_type("run_view_type"),
            page_size=min(_max_results(f, DEFAULT_RUNS_PAGE), SHIPYARD_PAGE),
            page_token=f.text("page_token"),
        ),
    )
    out: dict[str, Any] = {"runs": [mt.run_out(r, ids.outward(r.experiment_id)) for r in page.data]}
    if page.next_page_token:
        out["next_page_token"] = page.next_page_token
    return out


@router.post(f"{API}/logged-models/search")
def search_logged_models(scope: Reader, body: JsonBody = None) -> dict[str, Any]:
    """MLflow 3's logged models are not kept here, so there are none to find. The client asks
    when it lists a run's artifacts under a path (a model may be named like the folder)."""
    mt.Fields(body)
    return {"models": []}


# -- the artifact proxy -------------------------------------------------------------------------


@router.get(ARTIFACTS)
def list_artifacts(request: Request, scope: Reader, svc: Tracking) -> dict[str, Any]:
    """The entries directly inside ``path`` (names only, as MLflow's server answers); a path
    that holds nothing, or a file, lists as empty."""
    where = mt.split_artifact_path(_query(request).text("path"))
    if where is None:
        return {"files": []}
    run_id, path = where
    try:
        listing = svc.list_artifacts(scope.project, run_id, path)
    except NotFound as exc:
        if exc.details.get("field") == "path":
            return {"files": []}
        raise
    files = []
    for a in listing.files:
        entry: dict[str, Any] = {"path": a.path.rsplit("/", 1)[-1], "is_dir": a.is_dir}
        if a.size is not None:
            entry["file_size"] = a.size
        files.append(entry)
    return {"files": files}


def _artifact_target(path: str) -> tuple[str, str]:
    where = mt.split_artifact_path(path)
    if where is None or where[1] is None:
        raise NotFound(
            f"artifact {path!r} not found: expected <experiment>/<run>/artifacts/<path>",
            {"field": "path"},
        )
    return where[0], where[1]


@router.get(ARTIFACTS + "/{path:path}")
def download_artifact(path: str, scope: Reader, svc: Tracking) -> StreamingResponse:
    run_id, rel = _artifact_target(path)
    art = svc.artifact_file(scope.project, run_id, rel)
    assert art.digest is not None
    media_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
    return StreamingResponse(
        svc.iter_artifact(art.digest),
        media_type=media_type,
        headers={"content-length": str(art.size), "etag": f'"{art.digest}"'},
    )


@router.put(ARTIFACTS + "/{path:path}")
async def upload_artifact(
    path: str, request: Request, scope: Writer, svc: Tracking
) -> dict[str, Any]:
    """One file's bytes as the body, spooled to disk, then stored and recorded on the run."""
    run_id, rel = _artifact_target(path)
    limit = request.app.state.settings.max_artifact_bytes
    with tempfile.TemporaryFile() as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"artifact larger than the limit of {limit} bytes",
                    {"field": "body", "limit": limit},
                )
            spool.write(chunk)
        spool.seek(0)
        await anyio.to_thread.run_sync(
            lambda: svc.log_artifact_stream(
                scope.project,
                run_id,
                rel,
                iter(lambda: spool.read(1 << 20), b""),
                None,
                limit,
            )
        )
    return {}
