"""The app factory: one FastAPI app per ``Services``, with the JSON error contract.

Errors are always ``{"error": {"code", "message", "details"}}`` with the status of the error's
class (see ``core.errors``); a validation error names the field; an unexpected failure is a 500
with no traceback on the wire (it is logged).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.core.errors import ShipyardError
from shipyard.core.schemas import invalid_from_validation
from shipyard.server.context import Services
from shipyard.server.lazy import RoutesOnFirstUse
from shipyard.studio import install as install_studio

log = logging.getLogger("shipyard.server")

# Only the artifact upload routes themselves (ours and MLflow's): a tag key such as
# ``tags/artifacts/x`` must not escape the limit by containing the word.
_ARTIFACT_UPLOAD = re.compile(
    r"^/api/(v1/projects/[^/]+/runs/[^/]+/artifacts/|2\.0/mlflow-artifacts/artifacts/)"
)

_HTTP_CODES = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}


def _error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or {}}}, status_code=status
    )


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before they are read into memory.

    Artifact uploads (``PUT .../artifacts/...``) are exempt: their route streams to disk and
    applies its own, larger limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"] == "PUT" and _ARTIFACT_UPLOAD.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _error(
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"request body larger than {self.limit} bytes",
                    {"field": "body", "limit": self.limit},
                )(scope, receive, send)
                return
        # A body without content-length (chunked) is counted as it arrives. Past the limit the
        # 413 is sent from here and the app is told the client left: raising instead would not
        # reach us, since FastAPI turns any error while reading a body into a 400.
        seen = 0
        refused = False

        async def limited() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                refused = True
                await _error(
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"request body larger than {self.limit} bytes",
                    {"field": "body", "limit": self.limit},
                )(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited, send_unless_refused)
        except Exception:
            if not refused:
                raise


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """With the server: endpoints left InService start again; on shutdown, they stop with it."""
    services: Services = app.state.services
    services.endpoints.start_supervisor()
    services.async_inference.start()  # answers requests accepted before a restart
    services.tuning.start()  # resumes tuning jobs whose process ended
    # Jobs queued before a restart run now; with embedded workers off, it only reaps.
    services.start_job_worker(run_jobs=services.settings.job_workers_embedded)
    try:
        yield
    finally:
        proxy = getattr(app.state, "endpoint_proxy", None)
        if proxy is not None:
            await proxy.aclose()
        await run_in_threadpool(services.endpoints.shutdown, True)
        # Batch jobs driven here stop cleanly (STOPPED, resumable at once).
        await run_in_threadpool(services.batch.shutdown)
        await run_in_threadpool(services.tuning.shutdown)
        # Training jobs running here go back to the queue, their attempt not counted.
        if services.job_worker is not None:
            await run_in_threadpool(services.job_worker.stop)


def _add_mlflow(app: FastAPI) -> None:
    from shipyard.models.mlflow_registry import router as mlflow_registry_router
    from shipyard.tracking.mlflow_compat import router as mlflow_router

    app.include_router(mlflow_router)
    app.include_router(mlflow_registry_router)


def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _healthz_probe(_: Request) -> JSONResponse:
    return JSONResponse(healthz())


def _add_api(app: FastAPI) -> None:
    from shipyard.inference.router import router as inference_router
    from shipyard.jobs.router import router as jobs_router
    from shipyard.models.router import router as models_router
    from shipyard.projects.router import router as projects_router
    from shipyard.serving.router import router as endpoints_router
    from shipyard.tracking.router import router as tracking_router
    from shipyard.tuning.router import router as tuning_router

    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"])
    app.include_router(projects_router, prefix="/api/v1")
    app.include_router(tracking_router, prefix="/api/v1")
    app.include_router(inference_router, prefix="/api/v1")
    app.include_router(jobs_router, prefix="/api/v1")
    app.include_router(models_router, prefix="/api/v1")
    app.include_router(endpoints_router, prefix="/api/v1")
    app.include_router(tuning_router, prefix="/api/v1")


def create_app(services: Services | None = None) -> FastAPI:
    services = services or Services.from_settings()
    settings = services.settings
    app = FastAPI(
        title="Shipyard",
        version="0.1.0",
        description="An open, self-hosted machine-learning platform.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        lifespan=_lifespan,
    )
    app.state.services = services
    app.state.settings = settings
    app.state.projects = services.projects
    app.state.tracking = services.tracking
    app.state.models = services.models

    @app.exception_handler(ShipyardError)
    async def _shipyard_error(_: Request, exc: ShipyardError) -> JSONResponse:
        headers = {"www-authenticate": "Bearer"} if exc.http_status == 401 else None
        resp = _error(exc.http_status, exc.code, exc.message, exc.details)
        if headers:
            resp.headers.update(headers)
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = invalid_from_validation(exc)
        return _error(400, err.code, err.message, err.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and request.url.path.startswith("/api/2.0/mlflow"):
            # The MLflow client reads its own error shape: say "no such endpoint" in it.
            return JSONResponse(
                {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{request.url.path} not found"},
                status_code=404,
            )
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, "INTERNAL", f"internal error ({type(exc).__name__}); see the server log")

    # The probe is a plain route, so an idle server has made no FastAPI route (the first one
    # costs about 1.8 MiB, half of it pydantic.v1). Its documented twin joins with the API,
    # behind it, where no request reaches it, so the schema still lists it.
    app.router.routes.append(Route("/healthz", _healthz_probe, methods=["GET"]))
    # Our own API (/api/v1), added on the first request under it or for the OpenAPI schema:
    # its hundred-odd routes and their models are about 2.7 MiB of a server that has not
    # served it yet, and adding them takes about 0.17 s.
    api = RoutesOnFirstUse(app, _add_api, prefix="/api/v1")
    app.router.routes.append(api)
    # MLflow's REST API at /api/2.0/mlflow... and its model registry, added on the first
    # request under that prefix (or for the OpenAPI schema, which lists them): a server that no
    # MLflow client talks to does without them (about 1 MiB and 0.07 s of start).
    mlflow = RoutesOnFirstUse(app, _add_mlflow, prefix="/api/2.0/mlflow")
    app.router.routes.append(mlflow)

    def openapi() -> dict[str, Any]:
        api.install()
        mlflow.install()
        return FastAPI.openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
    install_studio(app)  # the web UI at /, after the API so it never shadows a route
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    return app
