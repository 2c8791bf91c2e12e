"""HTTP for training jobs: thin over ``JobService``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from shipyard.jobs.schemas import Job, JobCreate, JobLogs, JobsPublic, JobStatus, JobStop
from shipyard.jobs.service import JobService
from shipyard.projects.deps import Editor, Viewer


def job_service(request: Request) -> JobService:
    return request.app.state.services.jobs  # type: ignore[no-any-return]


Jobs = Annotated[JobService, Depends(job_service)]
PageSize = Annotated[int, Query(ge=1, le=10_000)]
router = APIRouter(prefix="/projects/{project}/jobs", tags=["jobs"])


@router.post("", status_code=201)
def submit_job(body: JobCreate, scope: Editor, svc: Jobs) -> Job:
    """Queue a job. The same ``idempotency_key`` returns the job made first."""
    return svc.submit(scope.project, body, created_by=scope.principal.name)


@router.get("")
def list_jobs(
    scope: Viewer,
    svc: Jobs,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    tuning_job_id: str | None = None,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> JobsPublic:
    return svc.list(
        scope.project,
        status=status or None,
        tuning_job_id=tuning_job_id,
        page_token=page_token,
        max_results=page_size,
    )


@router.get("/{job_id}")
def get_job(job_id: str, scope: Viewer, svc: Jobs) -> Job:
    return svc.get(scope.project, job_id)


@router.post("/{job_id}/stop")
def stop_job(job_id: str, scope: Editor, svc: Jobs, body: JobStop | None = None) -> Job:
    return svc.stop(scope.project, job_id, body.reason if body else None)


@router.get("/{job_id}/logs")
def job_logs(
    job_id: str,
    scope: Viewer,
    svc: Jobs,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: PageSize = 1000,
) -> JobLogs:
    return svc.logs(scope.project, job_id, after_seq=after_seq, limit=limit)


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: str, scope: Editor, svc: Jobs) -> Response:
    svc.delete(scope.project, job_id)
    return Response(status_code=204)
