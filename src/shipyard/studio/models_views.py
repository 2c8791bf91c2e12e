"""Studio's model registry pages: the models, one model with its versions, and one version with
its lineage (run, datasets), aliases, signature and approval (with buttons to approve or reject).

The three writes (approve or reject, set an alias, remove an alias) are plain HTML forms posted
to this server: they need the editor role when auth is on, refuse a form posted from another
site (its ``Origin``), and answer with a redirect back to the version page (post/redirect/get).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlparse

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from shipyard.core.errors import InvalidArgument, NotFound, PermissionDenied
from shipyard.core.paging import encode_page_token
from shipyard.models.schemas import ApprovalStatus, SearchModelVersions
from shipyard.models.service import ModelService
from shipyard.projects.schemas import Role
from shipyard.studio.auth import auth_on, projects_of, require_viewer, studio_principal
from shipyard.studio.router import StudioRoute, _page, _server_url

router: APIRouter = APIRouter(route_class=StudioRoute, include_in_schema=False)

PAGE = 50
# Approval statuses as labels, by meaning: approved (green), pending (blue), rejected (red).
APPROVAL_CLASS = {
    ApprovalStatus.approved: "finished",
    ApprovalStatus.pending: "running",
    ApprovalStatus.rejected: "failed",
}


def _models(request: Request) -> ModelService:
    return request.app.state.models  # type: ignore[no-any-return]


def _common(project: str) -> dict[str, Any]:
    return {"approval_class": APPROVAL_CLASS, "nav": "models", "models_url": _url(project)}


def _url(project: str, name: str | None = None, version: int | None = None) -> str:
    out = f"/projects/{quote(project)}/models"
    if name is not None:
        out += f"/{quote(name)}"
    if version is not None:
        out += f"/versions/{version}"
    return out


@router.get("/projects/{project}/models")
def models_page(request: Request, project: str, q: str = "", page: int = 1) -> Response:
    require_viewer(request, project)
    page = max(1, page)
    found = _models(request).list_registered_models(
        project,
        name_like=f"%{q}%" if q else None,
        page_size=PAGE,
        page_token=encode_page_token((page - 1) * PAGE) if page > 1 else None,
    )
    return _page(
        request,
        "models.html",
        project,
        items=found.data,
        count=found.count,
        q=q,
        page=page,
        has_next=found.next_page_token is not None,
        server_url=_server_url(request),
        crumbs=[(project, f"/projects/{project}"), ("Models", None)],
        **_common(project),
    )


@router.get("/projects/{project}/models/{name}")
def model_page(request: Request, project: str, name: str, page: int = 1) -> Response:
    require_viewer(request, project)
    svc = _models(request)
    model = svc.get_registered_model(project, name)
    page = max(1, page)
    versions = svc.list_model_versions(
        project,
        name,
        page_size=PAGE,
        page_token=encode_page_token((page - 1) * PAGE) if page > 1 else None,
    )
    return _page(
        request,
        "models_model.html",
        project,
        model=model,
        versions=versions.data,
        count=versions.count,
        page=page,
        has_next=versions.next_page_token is not None,
        crumbs=[(project, f"/projects/{project}"), ("Models", _url(project)), (name, None)],
        **_common(project),
    )


@router.get("/projects/{project}/models/{name}/versions/{version}")
def version_page(request: Request, project: str, name: str, version: int) -> Response:
    principal = require_viewer(request, project)
    svc = _models(request)
    lineage = svc.get_lineage(project, name, version)
    others = svc.search_model_versions(
        project, SearchModelVersions(filter=f"name = '{name}'", page_size=1000)
    )
    can_edit = True
    if auth_on(request):
        role = projects_of(request).role_in(principal, project)
        can_edit = principal.is_admin or role in (Role.editor, Role.admin)
    experiment = None
    if lineage.run is not None:
        try:
            experiment = svc.tracking.get_experiment(project, lineage.run.experiment_id)
        except NotFound:
            experiment = None
    v = lineage.version
    return _page(
        request,
        "models_version.html",
        project,
        v=v,
        lineage=lineage,
        experiment=experiment,
        versions=[o.version for o in others.data],
        can_edit=can_edit,
        notice=request.query_params.get("done", ""),
        error=request.query_params.get("error", ""),
        uri=f"models:/{v.name}/{v.version}",
        crumbs=[
            (project, f"/projects/{project}"),
            ("Models", _url(project)),
            (name, _url(project, name)),
            (f"Version {version}", None),
        ],
        **_common(project),
    )


# -- the forms --------------------------------------------------------------------------------


async def _form(request: Request, project: str) -> tuple[dict[str, str], str]:
    """The posted form and who posts it, after the editor check and the same-site check."""
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.headers.get("host"):
        raise PermissionDenied("change models from this server's own pages")
    principal = studio_principal(request)
    projects = projects_of(request)
    if auth_on(request):
        projects.authorize(principal, project, Role.editor)
    else:
        projects.project_id(project)
    raw = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    return {k: v[0].strip() for k, v in raw.items() if v}, principal.name


def _back(project: str, name: str, version: int, **params: str) -> RedirectResponse:
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    return RedirectResponse(
        _url(project, name, version) + (f"?{query}" if query else ""), status_code=303
    )


@router.post("/projects/{project}/models/{name}/versions/{version}/approval")
async def post_approval(request: Request, project: str, name: str, version: int) -> Response:
    form, actor = await _form(request, project)
    try:
        _models(request).transition_approval(
            project, name, version, form.get("status", ""), actor, form.get("comment", "")
        )
    except InvalidArgument as exc:
        return _back(project, name, version, error=exc.message)
    return _back(project, name, version, done=f"Marked {form.get('status')}")


@router.post("/projects/{project}/models/{name}/aliases")
async def post_alias(request: Request, project: str, name: str) -> Response:
    form, actor = await _form(request, project)
    text = form.get("version", "")
    if not text.isdigit():
        raise InvalidArgument.for_field("version", f"expected a version number, got {text!r}")
    version = int(text)
    alias = form.get("alias", "")
    try:
        _models(request).set_alias(project, name, alias, version, actor)
    except InvalidArgument as exc:
        return _back(project, name, version, error=exc.message)
    return _back(project, name, version, done=f"@{alias} now points here")


@router.post("/projects/{project}/models/{name}/aliases/{alias}/delete")
async def post_delete_alias(request: Request, project: str, name: str, alias: str) -> Response:
    form, _ = await _form(request, project)
    version = int(form.get("version", "0") or 0)
    _models(request).delete_alias(project, name, alias)
    if version < 1:
        return RedirectResponse(_url(project, name), status_code=303)
    return _back(project, name, version, done=f"Removed @{alias}")
