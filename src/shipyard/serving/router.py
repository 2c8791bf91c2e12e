"""HTTP for endpoints: thin over ``EndpointService``, plus a pass-through to each endpoint.

``POST .../endpoints/{name}/invocations`` and ``.../endpoints/{name}/v2/...`` forward the
request to the endpoint's own server, so a caller that can reach only the main server's port
(and its auth) can still predict. The endpoint's own URL (``url`` in its description) is the
fast path: one hop fewer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from shipyard.core.artifacts import clean_relpath
from shipyard.core.errors import Unavailable
from shipyard.projects.deps import Editor, Viewer
from shipyard.serving.schemas import (
    DeploymentsPublic,
    EndpointCreate,
    EndpointEventsPublic,
    EndpointPublic,
    EndpointRollback,
    EndpointsPublic,
    EndpointUpdate,
)
from shipyard.serving.service import EndpointService

if TYPE_CHECKING:  # imported where used: an idle server need not hold it (5 MB)
    import httpx


def endpoint_service(request: Request) -> EndpointService:
    return request.app.state.services.endpoints  # type: ignore[no-any-return]


Endpoints = Annotated[EndpointService, Depends(endpoint_service)]
router = APIRouter(prefix="/projects/{project}/endpoints", tags=["endpoints"])
PageSize = Annotated[int, Query(ge=1, le=10_000)]


@router.post("", status_code=201)
def create_endpoint(body: EndpointCreate, scope: Editor, svc: Endpoints) -> EndpointPublic:
    """Create an endpoint; it is ``Creating`` until its server answers, then ``InService``."""
    return svc.create(scope.project, body, created_by=scope.principal.name)


@router.get("")
def list_endpoints(
    scope: Viewer,
    svc: Endpoints,
    page_size: PageSize = 100,
    page_token: str | None = None,
    stats: bool = True,
) -> EndpointsPublic:
    """Endpoints with their status, variants, traffic and latency (``stats=false`` skips
    asking each server for its figures)."""
    return svc.list(scope.project, page_size=page_size, page_token=page_token, with_stats=stats)


@router.get("/{name}")
def get_endpoint(name: str, scope: Viewer, svc: Endpoints) -> EndpointPublic:
    return svc.get(scope.project, name)


@router.patch("/{name}")
def update_endpoint(
    name: str, body: EndpointUpdate, scope: Editor, svc: Endpoints
) -> EndpointPublic:
    """Serve a new model version or new weights with no failed request."""
    return svc.update(scope.project, name, body, created_by=scope.principal.name)


@router.post("/{name}/rollback")
def rollback_endpoint(
    name: str, scope: Editor, svc: Endpoints, body: EndpointRollback | None = None
) -> EndpointPublic:
    """Serve an earlier deployment again (default: the one before the current)."""
    to = body.to if body is not None else None
    return svc.rollback(scope.project, name, to, created_by=scope.principal.name)


@router.post("/{name}/stop")
def stop_endpoint(name: str, scope: Editor, svc: Endpoints) -> EndpointPublic:
    return svc.stop(scope.project, name)


@router.post("/{name}/start")
def start_endpoint(name: str, scope: Editor, svc: Endpoints) -> EndpointPublic:
    return svc.start(scope.project, name)


@router.delete("/{name}", status_code=204)
def delete_endpoint(name: str, scope: Editor, svc: Endpoints) -> Response:
    svc.delete(scope.project, name)
    return Response(status_code=204)


@router.get("/{name}/invoke-key")
def get_invoke_key(name: str, scope: Editor, svc: Endpoints) -> dict[str, str | None]:
    """The bearer key the endpoint's own port asks for when auth is on (``null`` when it is
    off): for callers that go to the endpoint directly rather than through this server."""
    return {"key": svc.invoke_key(scope.project, name)}


@router.get("/{name}/deployments")
def list_deployments(name: str, scope: Viewer, svc: Endpoints) -> DeploymentsPublic:
    return svc.deployments(scope.project, name)


@router.get("/{name}/events")
def list_events(
    name: str, scope: Viewer, svc: Endpoints, limit: PageSize = 100
) -> EndpointEventsPublic:
    return svc.events(scope.project, name, limit)


# -- the pass-through ---------------------------------------------------------------------------

_FORWARD_HEADERS = ("content-type", "accept", "inference-header-content-length")


def _proxy_client(request: Request) -> httpx.AsyncClient:
    import httpx

    client = getattr(request.app.state, "endpoint_proxy", None)
    if client is None:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(120.0, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            trust_env=False,
        )
        request.app.state.endpoint_proxy = client
    return client


async def _forward(request: Request, svc: EndpointService, project: str, name: str, path: str):  # type: ignore[no-untyped-def]
    import httpx

    base, auth = await run_in_threadpool(svc.target, project, name)
    headers = {k: v for k in _FORWARD_HEADERS if (v := request.headers.get(k)) is not None}
    headers.update(auth)
    try:
        upstream = await _proxy_client(request).request(
            request.method,
            f"{base}{path}",
            content=await request.body(),
            params=request.query_params,
            headers=headers,
        )
    except httpx.TransportError as exc:
        raise Unavailable(
            f"endpoint {name!r} did not answer ({type(exc).__name__}); it may be restarting",
            {"field": "name"},
        ) from exc
    keep = {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() in ("content-type", "inference-header-content-length")
    }
    return Response(upstream.content, status_code=upstream.status_code, headers=keep)


@router.post("/{name}/invocations")
async def invoke_endpoint(name: str, request: Request, scope: Viewer, svc: Endpoints) -> Response:
    """Predict through the main server: the body goes to the endpoint's ``/invocations``
    (JSON ``dataframe_split``/``dataframe_records``/``instances``, or ``text/csv``)."""
    return await _forward(request, svc, scope.project, name, "/invocations")


@router.post("/{name}/v2/{path:path}")
async def endpoint_v2(
    name: str, path: str, request: Request, scope: Viewer, svc: Endpoints
) -> Response:
    """The endpoint's Open Inference Protocol v2 (``/v2/models/{model}/infer``) through the
    main server."""
    # Normalised once and kept under /v2/: no "..", so no way to the server's admin routes.
    return await _forward(request, svc, scope.project, name, f"/v2/{clean_relpath(path)}")


@router.get("/{name}/v2/{path:path}")
async def endpoint_v2_get(
    name: str, path: str, request: Request, scope: Viewer, svc: Endpoints
) -> Response:
    """The endpoint's v2 health and model metadata through the main server."""
    return await _forward(request, svc, scope.project, name, f"/v2/{clean_relpath(path)}")
