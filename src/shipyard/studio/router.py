"""Studio's pages: thin handlers that call the domain services and render a template.

Every page route goes through ``StudioRoute``, which turns the project's errors into HTML pages
(a missing run is a 404 page with a way back, never a traceback or a JSON body) and sends a
signed-out visitor to the login page.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Coroutine
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlparse

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

import shipyard
from shipyard.core.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ShipyardError,
    Unauthenticated,
)
from shipyard.core.paging import encode_page_token
from shipyard.core.schemas import invalid_from_validation
from shipyard.projects.service import Principal
from shipyard.studio import previews, views
from shipyard.studio.auth import (
    COOKIE,
    COOKIE_MAX_AGE_S,
    LoginRequired,
    auth_on,
    projects_of,
    require_viewer,
    safe_next,
    studio_principal,
)
from shipyard.tracking.schemas import RunPublic, SearchRuns
from shipyard.tracking.service import TrackingService

log = logging.getLogger("shipyard.studio")

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_env = TEMPLATES.env
_env.filters.update(
    num=views.fmt_num,
    thousands=views.fmt_count,
    reltime=views.reltime,
    exact=views.exact_time,
    iso=views.iso,
    bytes=views.fmt_bytes,
)
_env.globals.update(
    version=shipyard.__version__,
    duration=views.duration,
    palette=views.PALETTE,
    cell=views.cell,
)

ERROR_TITLES = {
    400: "That request could not be understood",
    403: "You cannot see this",
    404: "Not found",
    500: "Something went wrong on the server",
    503: "The server is busy",
}


def _error_page(request: Request, status: int, message: str, code: str = "") -> HTMLResponse:
    """An error as a page with a way back: to the project when it exists, else home."""
    project = request.path_params.get("project")
    back = back_label = None
    if isinstance(project, str) and status != 403:
        try:
            projects_of(request).project_id(project)
            back, back_label = f"/projects/{project}", project
        except ShipyardError:
            project = None
    else:
        project = None
    ctx = _base(request, project) | {
        "status": status,
        "title": ERROR_TITLES.get(status, "Error"),
        "message": message,
        "code": code,
        "back": back,
        "back_label": back_label,
    }
    return TEMPLATES.TemplateResponse(request, "error.html", ctx, status_code=status)


class StudioRoute(APIRoute):
    """A page route: errors become HTML pages, a missing login a redirect to ``/login``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:  # a malformed query parameter
                err = invalid_from_validation(exc)
                status, message, code = 400, err.message, err.code
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
            except ShipyardError as exc:
                if isinstance(exc, Unauthenticated):
                    return RedirectResponse("/login", status_code=303)
                status, message, code = exc.http_status, exc.message, exc.code
            except Exception as exc:  # the page, not the server, reports it
                log.exception("studio page failed", exc_info=exc)
                status, code = 500, "INTERNAL"
                message = f"internal error ({type(exc).__name__}); see the server log"
            # The error page reads the store (the project switcher): off the event loop.
            return await run_in_threadpool(_error_page, request, status, message, code)

        return page


router = APIRouter(route_class=StudioRoute, include_in_schema=False)


def _tracking(request: Request) -> TrackingService:
    return request.app.state.tracking  # type: ignore[no-any-return]


def _base(request: Request, project: str | None = None) -> dict[str, Any]:
    """What the layout needs on every page: who is signed in, the project switcher."""
    try:
        principal: Principal | None = studio_principal(request)
    except LoginRequired:
        principal = None
    projects: list[str] = []
    if principal is not None:
        try:
            projects = [p.name for p in projects_of(request).list_projects(principal).data]
        except ShipyardError:  # the layout must render even when the store is unwell
            projects = []
    return {
        "principal": principal,
        "auth_on": auth_on(request),
        "projects": projects,
        "project": project,
        "crumbs": [],
    }


def _page(
    request: Request, name: str, project: str | None, status: int = 200, **ctx: Any
) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request, name, _base(request, project) | ctx, status_code=status
    )


# -- static: Plotly.js from the installed plotly package ----------------------------------------


@lru_cache(maxsize=1)
def _plotly_js() -> tuple[bytes, bytes]:
    """Plotly.js as bundled by the ``plotly`` Python package, plain and gzipped (read once)."""
    try:
        data = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise NotFound(
            "plotly.min.js is not available: install the 'plotly' package on the server"
        ) from None
    return data, gzip.compress(data, compresslevel=6)


@router.get("/static/vendor/plotly.min.js")
def plotly_js(request: Request) -> Response:
    plain, packed = _plotly_js()
    headers = {"cache-control": "public, max-age=604800", "vary": "accept-encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["content-encoding"] = "gzip"
        return Response(packed, media_type="text/javascript", headers=headers)
    return Response(plain, media_type="text/javascript", headers=headers)


# -- login --------------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    if not auth_on(request):
        return RedirectResponse(safe_next(next), status_code=303)
    return _page(request, "login.html", None, next=safe_next(next), error="")


@router.post("/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    target = safe_next((form.get("next") or ["/"])[0])
    if not auth_on(request):
        return RedirectResponse(target, status_code=303)
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.headers.get("host"):
        # A form on another site must not sign this browser in (login CSRF).
        raise PermissionDenied("sign in from this server's own login page")
    try:
        principal = projects_of(request).authenticate(token) if token else None
    except Unauthenticated:
        principal = None
    if principal is None:
        return _page(
            request,
            "login.html",
            None,
            status=401,
            next=target,
            error="That token is not valid (or has expired). Paste a token made with "
            "`shipyard users create NAME` or `shipyard users token NAME`.",
        )
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return resp


@router.post("/logout")
def logout(request: Request) -> Response:
    resp = RedirectResponse("/login" if auth_on(request) else "/", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


# -- projects and experiments -------------------------------------------------------------------


def _server_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/")
def home(request: Request) -> Response:
    principal = studio_principal(request)
    projects = projects_of(request).list_projects(principal).data
    return _page(request, "projects.html", None, items=projects, server_url=_server_url(request))


@router.get("/projects/{project}")
def experiments_page(request: Request, project: str, q: str = "", page: int = 1) -> Response:
    require_viewer(request, project)
    page = max(1, page)
    size = 100
    token = encode_page_token((page - 1) * size) if page > 1 else None
    exps = _tracking(request).list_experiments(
        project,
        name_like=f"%{q}%" if q else None,
        page_size=size,
        page_token=token,
    )
    return _page(
        request,
        "experiments.html",
        project,
        items=exps.data,
        count=exps.count,
        q=q,
        page=page,
        has_next=exps.next_page_token is not None,
        server_url=_server_url(request),
        crumbs=[(project, None)],
    )


@router.get("/projects/{project}/experiments/{experiment_id}")
def runs_page(request: Request, project: str, experiment_id: str) -> Response:
    require_viewer(request, project)
    svc = _tracking(request)
    exp = svc.get_experiment(project, experiment_id)
    view = views.RunsView.from_query(request.query_params)
    base = request.url.path
    error = None
    marked = None
    runs: list[RunPublic] = []
    count: int | None = 0
    has_next = False
    try:
        result = svc.search_runs(
            project,
            SearchRuns(
                experiment_ids=[exp.id],
                filter=view.filter or None,
                order_by=view.order_by,
                page_size=view.size,
                page_token=encode_page_token(view.offset) if view.offset else None,
            ),
            include_count=True,
        )
        runs, count, has_next = result.data, result.count, result.next_page_token is not None
    except InvalidArgument as exc:
        # A filter or sort the parser refused: say why, in place, and mark where.
        error = exc
        if exc.details.get("field", "filter") == "filter" and view.filter:
            marked = views.mark_error(view.filter, exc.details)
    cols = views.columns_for(runs, view)
    total = count if count is not None else view.offset + len(runs)
    pages = max(1, -(-total // view.size))
    return _page(
        request,
        "runs.html",
        project,
        exp=exp,
        runs=runs,
        view=view,
        base=base,
        cols=cols,
        count=total,
        pages=pages,
        has_next=has_next,
        error=error,
        marked=marked,
        builtin=[
            c
            for c in views.BUILTIN_COLUMNS
            if c[0] != "created_by" or any(r.created_by for r in runs)
        ],
        page_sizes=views.PAGE_SIZES,
        server_url=_server_url(request),
        compare_url=_compare_url(project, view.sel),
        crumbs=[(project, f"/projects/{project}"), (exp.name, None)],
    )


def _compare_url(project: str, run_ids: list[str]) -> str:
    return f"/projects/{project}/compare?" + urlencode([("run", r) for r in run_ids])


# -- a run --------------------------------------------------------------------------------------


@router.get("/projects/{project}/runs/{run_id}")
def run_page(request: Request, project: str, run_id: str, artifact: str = "") -> Response:
    require_viewer(request, project)
    svc = _tracking(request)
    run = svc.get_run(project, run_id)
    exp = svc.get_experiment(project, run.experiment_id)
    keys = sorted(run.metrics)
    histories = {k: views.thin(svc.get_metric_history(project, run_id, k)) for k in keys}
    user_keys = [k for k in keys if not k.startswith(views.SYSTEM_PREFIX)]
    system_keys = [k for k in keys if k.startswith(views.SYSTEM_PREFIX)]
    files = svc.list_artifacts(project, run_id, recursive=True).files
    tree = previews.artifact_tree(files)
    preview = None
    preview_error = ""
    if artifact:
        try:
            art = svc.artifact_file(project, run_id, artifact)
            if previews.preview_kind(art.path) == "image":
                preview = previews.make_preview(art.path, art.size, b"", False)
            else:
                assert art.digest is not None
                head, more = previews.read_head(svc.iter_artifact(art.digest))
                preview = previews.make_preview(art.path, art.size, head, more)
        except ShipyardError as exc:
            preview_error = exc.message
    children = svc.search_runs(
        project,
        SearchRuns(
            experiment_ids=[run.experiment_id],
            filter=f"parent_run_id = '{run.id}'",
            order_by=["start_time ASC"],
            page_size=200,
        ),
        include_count=True,
    )
    parent = None
    if run.parent_run_id:
        try:
            parent = svc.get_run(project, run.parent_run_id)
        except NotFound:
            parent = None
    return _page(
        request,
        "run.html",
        project,
        run=run,
        exp=exp,
        parent=parent,
        children=children.data,
        n_children=children.count or len(children.data),
        user_keys=user_keys,
        system_keys=system_keys,
        chart_data={"histories": histories, "run_name": run.name, "color": views.PALETTE[0]},
        chart_state=views.chart_state(request.query_params),
        artifact_nodes=tree,
        n_files=len([f for f in files if not f.is_dir]),
        preview=preview,
        preview_error=preview_error,
        artifact=artifact,
        files_base=f"/projects/{project}/runs/{run_id}/files/",
        crumbs=[
            (project, f"/projects/{project}"),
            (exp.name, f"/projects/{project}/experiments/{exp.id}"),
            (run.name, None),
        ],
    )


@router.get("/projects/{project}/runs/{run_id}/files/{path:path}")
def artifact_download(
    request: Request, project: str, run_id: str, path: str, inline: bool = False
) -> Response:
    """A run's file, as a download; ``inline=1`` shows an image in the page.

    Only image types are ever served inline, and with ``Content-Security-Policy: sandbox``,
    so a logged SVG or HTML file cannot run script in Studio's origin.
    """
    require_viewer(request, project)
    svc = _tracking(request)
    art = svc.artifact_file(project, run_id, path)
    assert art.digest is not None
    name = PurePosixPath(art.path).name
    suffix = PurePosixPath(art.path).suffix.lower()
    media = previews.IMAGE_TYPES.get(suffix) if inline else None
    headers = {
        "content-length": str(art.size),
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'",
        "x-shipyard-sha256": art.digest,
        "cache-control": "private, max-age=3600",
    }
    if media is None:
        headers["content-disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
        media = "application/octet-stream"
    return StreamingResponse(svc.iter_artifact(art.digest), media_type=media, headers=headers)


# -- compare ------------------------------------------------------------------------------------

MAX_COMPARE = 10


@router.get("/projects/{project}/compare")
def compare_page(request: Request, project: str) -> Response:
    require_viewer(request, project)
    svc = _tracking(request)
    ids = list(dict.fromkeys(r for r in request.query_params.getlist("run") if r))
    if not 2 <= len(ids) <= MAX_COMPARE:
        raise InvalidArgument.for_field(
            "run", f"choose 2 to {MAX_COMPARE} runs to compare (got {len(ids)})"
        )
    cmp = svc.compare_runs(project, ids)
    runs = cmp.runs
    colors = {r.id: views.PALETTE[i % len(views.PALETTE)] for i, r in enumerate(runs)}
    user_keys = [k for k in cmp.metric_keys if not k.startswith(views.SYSTEM_PREFIX)]
    system_keys = [k for k in cmp.metric_keys if k.startswith(views.SYSTEM_PREFIX)]
    # The metric the parallel-coordinates plot ends on: chosen in the URL, else the first.
    pc_metric = request.query_params.get("pc") or (user_keys[0] if user_keys else "")
    if pc_metric not in cmp.metric_keys:
        pc_metric = user_keys[0] if user_keys else ""
    exps = {r.experiment_id for r in runs}
    exp = svc.get_experiment(project, runs[0].experiment_id) if len(exps) == 1 else None
    histories = {
        k: [views.thin(h, views.MAX_POINTS // 2) for h in hs] for k, hs in cmp.histories.items()
    }
    # Params that differ tell the story; constant ones only add flat lines.
    parcoords = views.parcoords(runs, cmp.differing_params or cmp.param_keys, pc_metric)
    crumbs: list[tuple[str, str | None]] = [(project, f"/projects/{project}")]
    if exp is not None:
        crumbs.append((exp.name, f"/projects/{project}/experiments/{exp.id}"))
    crumbs.append((f"Compare {len(runs)} runs", None))
    return _page(
        request,
        "compare.html",
        project,
        runs=runs,
        colors=colors,
        cmp=cmp,
        differing=set(cmp.differing_params),
        user_keys=user_keys,
        system_keys=system_keys,
        pc_metric=pc_metric,
        chart_data={
            "histories": histories,
            "runs": [{"id": r.id, "name": r.name, "color": colors[r.id]} for r in runs],
            "parcoords": parcoords,
        },
        chart_state=views.chart_state(request.query_params),
        crumbs=crumbs,
        run_ids=ids,
        only_diff=request.query_params.get("diff") == "1",
    )


# -- pages of other domains, in modules of their own (they use the helpers above) --------------

from shipyard.studio.endpoints_views import router as _endpoint_pages  # noqa: E402

router.include_router(_endpoint_pages)

from shipyard.studio.models_views import router as _model_pages  # noqa: E402

router.include_router(_model_pages)

from shipyard.studio.jobs_views import router as _job_pages  # noqa: E402

router.include_router(_job_pages)

from shipyard.studio.tuning_views import router as _tuning_pages  # noqa: E402

router.include_router(_tuning_pages)
