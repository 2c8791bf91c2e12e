"""HTTP for hyperparameter tuning jobs: thin over ``TuningService``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from shipyard.models.schemas import ModelVersionPublic
from shipyard.projects.deps import Editor, Viewer
from shipyard.tuning.schemas import (
    RegisterBest,
    TrialsReport,
    TuningJobCreate,
    TuningJobKind,
    TuningJobPublic,
    TuningJobsPublic,
    TuningJobStatus,
)
from shipyard.tuning.service import TuningService


def tuning_service(request: Request) -> TuningService:
    return request.app.state.services.tuning  # type: ignore[no-any-return]


Tuning = Annotated[TuningService, Depends(tuning_service)]
PageSize = Annotated[int, Query(ge=1, le=10_000)]
router = APIRouter(prefix="/projects/{project}/tuning-jobs", tags=["tuning"])


@router.post("", status_code=201)
def create_tuning_job(body: TuningJobCreate, scope: Editor, svc: Tuning) -> TuningJobPublic:
    return svc.create(scope.project, body, created_by=scope.principal.name)


@router.get("")
def list_tuning_jobs(
    scope: Viewer,
    svc: Tuning,
    status: TuningJobStatus | None = None,
    kind: TuningJobKind | None = None,
    name_like: Annotated[str | None, Query(max_length=256)] = None,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> TuningJobsPublic:
    return svc.list(
        scope.project,
        status=status,
        kind=kind,
        name_like=name_like,
        page_size=page_size,
        page_token=page_token,
    )


@router.get("/{tuning_job_id}")
def get_tuning_job(
    tuning_job_id: str, scope: Viewer, svc: Tuning, trials: bool = True
) -> TuningJobPublic:
    return svc.get(scope.project, tuning_job_id, with_trials=trials)


@router.post("/{tuning_job_id}/stop")
def stop_tuning_job(tuning_job_id: str, scope: Editor, svc: Tuning) -> TuningJobPublic:
    return svc.stop(scope.project, tuning_job_id)


@router.delete("/{tuning_job_id}", status_code=204)
def delete_tuning_job(tuning_job_id: str, scope: Editor, svc: Tuning) -> Response:
    svc.delete(scope.project, tuning_job_id)
    return Response(status_code=204)


@router.post("/{tuning_job_id}/trials")
def report_tuning_trials(
    tuning_job_id: str, body: TrialsReport, scope: Editor, svc: Tuning
) -> TuningJobPublic:
    """Finished trials of a function tuning job (``sy.tune``), in a batch."""
    return svc.report_trials(scope.project, tuning_job_id, body, created_by=scope.principal.name)


@router.post("/{tuning_job_id}/resume")
def resume_tuning_job(tuning_job_id: str, scope: Editor, svc: Tuning) -> TuningJobPublic:
    """Drive a tuning job here whose process ended (its lease ran out)."""
    return svc.resume(scope.project, tuning_job_id)


@router.post("/{tuning_job_id}/register-best", status_code=201)
def register_best_trial(
    tuning_job_id: str, body: RegisterBest, scope: Editor, svc: Tuning
) -> ModelVersionPublic:
    return svc.register_best(scope.project, tuning_job_id, body, created_by=scope.principal.name)
