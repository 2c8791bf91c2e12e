"""Studio's endpoint pages: the list (status, variants and weights, traffic, latency) and one
endpoint (its variants with their figures, settings, deployments and events).

The figures are live: each page asks the endpoints' own servers (through the service), so a
page shows what serves now. While an endpoint is Creating or Updating the page refreshes
itself every two seconds until it settles.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from shipyard.serving.schemas import EndpointPublic, EndpointStatus
from shipyard.serving.service import EndpointService
from shipyard.studio.auth import require_viewer
from shipyard.studio.router import StudioRoute, _page, _server_url

router: APIRouter = APIRouter(route_class=StudioRoute, include_in_schema=False)

# The run statuses' colours, by meaning: serving (green), settling (blue, pulsing), failed
# (red), stopped (grey). The label always carries the word too.
STATUS_CLASS = {
    EndpointStatus.in_service: "finished",
    EndpointStatus.creating: "running",
    EndpointStatus.updating: "running",
    EndpointStatus.failed: "failed",
    EndpointStatus.deleting: "killed",
    EndpointStatus.stopped: "killed",
}
SETTLING = (EndpointStatus.creating, EndpointStatus.updating)


def _endpoints(request: Request) -> EndpointService:
    return request.app.state.services.endpoints  # type: ignore[no-any-return]


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _common() -> dict[str, Any]:
    return {"status_class": STATUS_CLASS, "ms": _ms, "nav": "endpoints"}


@router.get("/projects/{project}/endpoints")
def endpoints_page(request: Request, project: str) -> Response:
    require_viewer(request, project)
    page = _endpoints(request).list(project, page_size=500)
    settling = any(e.status in SETTLING for e in page.data)
    return _page(
        request,
        "endpoints.html",
        project,
        items=page.data,
        count=page.count,
        refresh=settling,
        server_url=_server_url(request),
        crumbs=[(project, f"/projects/{project}"), ("Endpoints", None)],
        **_common(),
    )


@router.get("/projects/{project}/endpoints/{name}")
def endpoint_page(request: Request, project: str, name: str) -> Response:
    require_viewer(request, project)
    svc = _endpoints(request)
    ep: EndpointPublic = svc.get(project, name)
    deployments = svc.deployments(project, name).data
    events = svc.events(project, name, limit=50).data
    return _page(
        request,
        "endpoint.html",
        project,
        ep=ep,
        deployments=deployments,
        events=events,
        refresh=ep.status in SETTLING,
        server_url=_server_url(request),
        crumbs=[
            (project, f"/projects/{project}"),
            ("Endpoints", f"/projects/{project}/endpoints"),
            (ep.name, None),
        ],
        **_common(),
    )
