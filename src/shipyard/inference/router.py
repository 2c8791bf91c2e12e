"""HTTP for batch transform jobs and asynchronous inference: thin over the two services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from shipyard.inference.asynchronous import AsyncInferenceService
from shipyard.inference.schemas import (
    AsyncInferenceCreate,
    AsyncInferencePublic,
    AsyncInferencesPublic,
    AsyncInferenceStatus,
    BatchJobCreate,
    BatchJobPublic,
    BatchJobsPublic,
    BatchJobStatus,
)
from shipyard.inference.service import BatchService
from shipyard.projects.deps import Editor, Viewer, project_service
from shipyard.projects.schemas import Role


def batch_service(request: Request) -> BatchService:
    return request.app.state.services.batch  # type: ignore[no-any-return]


def async_service(request: Request) -> AsyncInferenceService:
    return request.app.state.services.async_inference  # type: ignore[no-any-return]


Batch = Annotated[BatchService, Depends(batch_service)]
Async = Annotated[AsyncInferenceService, Depends(async_service)]
PageSize = Annotated[int, Query(ge=1, le=10_000)]
router = APIRouter(prefix="/projects/{project}", tags=["inference"])


# -- batch jobs ---------------------------------------------------------------------------------


@router.post("/batch-jobs", status_code=201)
def create_batch_job(
    body: BatchJobCreate, scope: Editor, svc: Batch, request: Request
) -> BatchJobPublic:
    if body.trust_code and request.app.state.settings.auth:
        # Loading a pickle runs its code in a worker: a project administrator's decision.
        project_service(request).authorize(scope.principal, scope.project, Role.admin)
    return svc.create_job(scope.project, body, created_by=scope.principal.name)


@router.get("/batch-jobs")
def list_batch_jobs(
    scope: Viewer,
    svc: Batch,
    status: BatchJobStatus | None = None,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> BatchJobsPublic:
    return svc.list_jobs(scope.project, status=status, page_size=page_size, page_token=page_token)


@router.get("/batch-jobs/{job_id}")
def get_batch_job(job_id: str, scope: Viewer, svc: Batch) -> BatchJobPublic:
    return svc.get_job(scope.project, job_id)


@router.post("/batch-jobs/{job_id}/stop")
def stop_batch_job(job_id: str, scope: Editor, svc: Batch) -> BatchJobPublic:
    return svc.stop_job(scope.project, job_id)


@router.post("/batch-jobs/{job_id}/resume")
def resume_batch_job(job_id: str, scope: Editor, svc: Batch) -> BatchJobPublic:
    return svc.resume_job(scope.project, job_id)


@router.delete("/batch-jobs/{job_id}", status_code=204)
def delete_batch_job(job_id: str, scope: Editor, svc: Batch) -> Response:
    svc.delete_job(scope.project, job_id)
    return Response(status_code=204)


# -- asynchronous inference ---------------------------------------------------------------------


@router.post("/async-inference", status_code=202)
def submit_async_inference(
    body: AsyncInferenceCreate, scope: Editor, svc: Async
) -> AsyncInferencePublic:
    return svc.submit(scope.project, body, created_by=scope.principal.name)


@router.get("/async-inference")
def list_async_inferences(
    scope: Viewer,
    svc: Async,
    status: AsyncInferenceStatus | None = None,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> AsyncInferencesPublic:
    return svc.list(scope.project, status=status, page_size=page_size, page_token=page_token)


@router.get("/async-inference/{request_id}")
def get_async_inference(request_id: str, scope: Viewer, svc: Async) -> AsyncInferencePublic:
    return svc.get(scope.project, request_id)


@router.delete("/async-inference/{request_id}", status_code=204)
def delete_async_inference(request_id: str, scope: Editor, svc: Async) -> Response:
    svc.delete(scope.project, request_id)
    return Response(status_code=204)
