"""HTTP for experiment tracking: thin over ``TrackingService``."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from shipyard.core.errors import InvalidArgument, PayloadTooLarge
from shipyard.projects.deps import Editor, ProjectAdmin, Viewer
from shipyard.tracking.schemas import (
    ArtifactPublic,
    ArtifactsPublic,
    DatasetInput,
    ExperimentCreate,
    ExperimentPublic,
    ExperimentsPublic,
    ExperimentUpdate,
    Lifecycle,
    LogBatch,
    MetricColumnsIn,
    MetricHistory,
    PurgeReport,
    RunComparison,
    RunCreate,
    RunPublic,
    RunsPublic,
    RunUpdate,
    SearchRuns,
)
from shipyard.tracking.service import TrackingService


async def tracking_service(request: Request) -> TrackingService:
    # async: a sync dependency costs a trip to the thread pool on every request
    return request.app.state.tracking  # type: ignore[no-any-return]


Tracking = Annotated[TrackingService, Depends(tracking_service)]
router = APIRouter(prefix="/projects/{project}", tags=["tracking"])
PageSize = Annotated[int, Query(ge=1, le=10_000)]


# -- experiments --------------------------------------------------------------------------------


@router.post("/experiments", status_code=201)
def create_experiment(body: ExperimentCreate, scope: Editor, svc: Tracking) -> ExperimentPublic:
    return svc.create_experiment(scope.project, body)


@router.get("/experiments")
def list_experiments(
    scope: Viewer,
    svc: Tracking,
    name_like: str | None = None,
    lifecycle: Lifecycle = Lifecycle.active,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> ExperimentsPublic:
    return svc.list_experiments(
        scope.project,
        name_like=name_like,
        lifecycle=lifecycle,
        page_size=page_size,
        page_token=page_token,
    )


@router.get("/experiments/by-name/{name}")
def get_experiment_by_name(name: str, scope: Viewer, svc: Tracking) -> ExperimentPublic:
    return svc.get_experiment_by_name(scope.project, name)


@router.get("/experiments/{experiment_id}")
def get_experiment(experiment_id: str, scope: Viewer, svc: Tracking) -> ExperimentPublic:
    return svc.get_experiment(scope.project, experiment_id)


@router.patch("/experiments/{experiment_id}")
def update_experiment(
    experiment_id: str, body: ExperimentUpdate, scope: Editor, svc: Tracking
) -> ExperimentPublic:
    return svc.update_experiment(scope.project, experiment_id, body)


@router.delete("/experiments/{experiment_id}")
def delete_experiment(experiment_id: str, scope: Editor, svc: Tracking) -> ExperimentPublic:
    return svc.delete_experiment(scope.project, experiment_id)


@router.post("/experiments/{experiment_id}/restore")
def restore_experiment(experiment_id: str, scope: Editor, svc: Tracking) -> ExperimentPublic:
    return svc.restore_experiment(scope.project, experiment_id)


# -- runs ---------------------------------------------------------------------------------------


def _run_response(run: RunPublic, status_code: int = 200) -> Response:
    # Serialized here, in the endpoint's worker thread: a sync endpoint's returned model is
    # validated again and serialized by FastAPI in a second trip to the thread pool. The
    # routes that return this declare ``response_model=RunPublic``: the same body and schema.
    return Response(run.model_dump_json(by_alias=True), status_code, media_type="application/json")


@router.post("/runs", status_code=201, response_model=RunPublic)
def create_run(body: RunCreate, scope: Editor, svc: Tracking) -> Response:
    return _run_response(svc.create_run(scope.project, body, created_by=scope.principal.name), 201)


@router.get("/runs")
def list_runs(
    scope: Viewer,
    svc: Tracking,
    experiment_id: Annotated[list[str] | None, Query()] = None,
    filter: str | None = None,
    order_by: Annotated[list[str] | None, Query()] = None,
    lifecycle: Lifecycle = Lifecycle.active,
    page_size: PageSize = 100,
    page_token: str | None = None,
    include_count: bool = False,
) -> RunsPublic:
    body = SearchRuns(
        experiment_ids=experiment_id,
        filter=filter,
        order_by=order_by,
        lifecycle=lifecycle,
        page_size=page_size,
        page_token=page_token,
    )
    return svc.search_runs(scope.project, body, include_count=include_count)


@router.post("/runs/search")
def search_runs(
    body: SearchRuns, scope: Viewer, svc: Tracking, include_count: bool = False
) -> RunsPublic:
    return svc.search_runs(scope.project, body, include_count=include_count)


@router.post("/runs/compare")
def compare_runs(
    scope: Viewer,
    svc: Tracking,
    run_ids: Annotated[list[str], Query(alias="run_id")],
    metric_key: Annotated[list[str] | None, Query()] = None,
) -> RunComparison:
    return svc.compare_runs(scope.project, run_ids, metric_key)


@router.get("/runs/{run_id}", response_model=RunPublic)
def get_run(run_id: str, scope: Viewer, svc: Tracking) -> Response:
    return _run_response(svc.get_run(scope.project, run_id))


@router.patch(
    "/runs/{run_id}",
    response_model=RunPublic,
    responses={204: {"description": "Updated; no body, as `Prefer: return=minimal` asked"}},
)
def update_run(
    run_id: str,
    body: RunUpdate,
    scope: Editor,
    svc: Tracking,
    prefer: Annotated[
        str | None,
        Header(
            description="`return=minimal`: answer 204 with no body (RFC 7240), sparing the "
            "server the reads of the run's params, tags and metrics"
        ),
    ] = None,
) -> Response:
    if prefer is not None and "return=minimal" in prefer.replace(" ", "").lower().split(","):
        svc.update_run_quietly(scope.project, run_id, body)
        return Response(status_code=204, headers={"Preference-Applied": "return=minimal"})
    return _run_response(svc.update_run(scope.project, run_id, body))


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(run_id: str, scope: Editor, svc: Tracking) -> Response:
    svc.delete_run(scope.project, run_id)
    return Response(status_code=204)


@router.post("/runs/{run_id}/restore", status_code=204)
def restore_run(run_id: str, scope: Editor, svc: Tracking) -> Response:
    svc.restore_run(scope.project, run_id)
    return Response(status_code=204)


@router.post("/runs/{run_id}/batch")
def log_batch(run_id: str, body: LogBatch, scope: Editor, svc: Tracking) -> dict[str, bool]:
    applied = svc.log_batch(
        scope.project,
        run_id,
        metrics_=[(m.key, m.value, m.step, m.timestamp) for m in body.metrics],
        params=[(p.key, p.value) for p in body.params],
        tags=[(t.key, t.value) for t in body.tags],
        batch_id=body.batch_id,
    )
    return {"applied": applied}


_COLUMNS = ("keys", "values", "steps", "timestamps")


def _metric_columns(raw: bytes) -> tuple[list[Any], list[Any], list[Any], list[Any], str | None]:
    """The columns of a ``MetricColumnsIn`` body, parsed once and checked for shape only; the
    service checks every point (one pass per column instead of one model per point)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # numbers orjson refuses (1e999) still reach the service, which names them
            body = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument.for_field("body", f"expected a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument.for_field("body", "expected a JSON object with keys, values, ...")
    unknown = set(body) - {*_COLUMNS, "batch_id"}
    if unknown:
        raise InvalidArgument.for_field(sorted(unknown)[0], "unknown field")
    cols = []
    for name in _COLUMNS:
        col = body.get(name)
        if not isinstance(col, list):
            raise InvalidArgument.for_field(name, f"expected a list, got {type(col).__name__}")
        cols.append(col)
    batch_id = body.get("batch_id")
    if batch_id is not None and (not isinstance(batch_id, str) or not 1 <= len(batch_id) <= 64):
        raise InvalidArgument.for_field("batch_id", "expected a string of 1 to 64 characters")
    return cols[0], cols[1], cols[2], cols[3], batch_id


@router.post(
    "/runs/{run_id}/metrics",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": MetricColumnsIn.model_json_schema()}},
        }
    },
)
async def log_metric_columns(
    run_id: str, request: Request, scope: Editor, svc: Tracking
) -> dict[str, bool]:
    """Log metric points sent column by column (``MetricColumnsIn``): the fast path the SDK's
    metric buffer uses. Answers ``{"applied": false}`` for a batch id already applied."""
    keys, values, steps, timestamps, batch_id = _metric_columns(await request.body())
    applied = await anyio.to_thread.run_sync(
        partial(
            svc.log_metric_columns,
            scope.project,
            run_id,
            keys,
            values,
            steps,
            timestamps,
            batch_id=batch_id,
        )
    )
    return {"applied": applied}


@router.put("/runs/{run_id}/tags/{key:path}", status_code=204)
def set_tag(run_id: str, key: str, body: dict[str, str], scope: Editor, svc: Tracking) -> Response:
    svc.set_tag(scope.project, run_id, key, body.get("value", ""))
    return Response(status_code=204)


@router.delete("/runs/{run_id}/tags/{key:path}", status_code=204)
def delete_tag(run_id: str, key: str, scope: Editor, svc: Tracking) -> Response:
    svc.delete_tag(scope.project, run_id, key)
    return Response(status_code=204)


@router.post("/runs/{run_id}/inputs", status_code=204)
def log_inputs(run_id: str, body: list[DatasetInput], scope: Editor, svc: Tracking) -> Response:
    svc.log_inputs(scope.project, run_id, body)
    return Response(status_code=204)


@router.get("/runs/{run_id}/metrics/{key:path}")
def get_metric_history(run_id: str, key: str, scope: Viewer, svc: Tracking) -> MetricHistory:
    return svc.get_metric_history(scope.project, run_id, key)


# -- artifacts ----------------------------------------------------------------------------------


@router.get("/runs/{run_id}/artifacts")
def list_artifacts(
    run_id: str, scope: Viewer, svc: Tracking, path: str | None = None, recursive: bool = False
) -> ArtifactsPublic:
    return svc.list_artifacts(scope.project, run_id, path, recursive)


@router.get("/runs/{run_id}/artifacts/{path:path}")
def download_artifact(run_id: str, path: str, scope: Viewer, svc: Tracking) -> StreamingResponse:
    art = svc.artifact_file(scope.project, run_id, path)
    assert art.digest is not None
    return StreamingResponse(
        svc.iter_artifact(art.digest),
        media_type="application/octet-stream",
        headers={
            "content-length": str(art.size),
            "x-shipyard-sha256": art.digest,
            "etag": f'"{art.digest}"',
        },
    )


@router.put("/runs/{run_id}/artifacts/{path:path}", status_code=201)
async def upload_artifact(
    run_id: str, path: str, request: Request, scope: Editor, svc: Tracking
) -> ArtifactPublic:
    """Upload one file's bytes as the request body. Send ``x-shipyard-sha256`` to have the
    content checked against it; a mismatch stores nothing."""
    import tempfile

    import anyio

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
        return await anyio.to_thread.run_sync(
            lambda: svc.log_artifact_stream(
                scope.project,
                run_id,
                path,
                iter(lambda: spool.read(1 << 20), b""),
                request.headers.get("x-shipyard-sha256"),
                limit,
            )
        )


@router.post("/purge")
def purge(
    scope: ProjectAdmin,
    svc: Tracking,
    run_id: Annotated[list[str] | None, Query()] = None,
    experiment_id: Annotated[list[str] | None, Query()] = None,
    older_than_s: Annotated[int | None, Query(ge=0, le=100 * 365 * 24 * 3600)] = None,
) -> PurgeReport:
    return svc.purge(
        scope.project, run_ids=run_id, experiment_ids=experiment_id, older_than_s=older_than_s
    )
