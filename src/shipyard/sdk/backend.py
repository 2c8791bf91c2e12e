"""The ``Backend`` protocol: what the SDK needs from a Shipyard, in-process or over HTTP.

Both implementations take and return the same schema types and raise the same
``shipyard.core.errors`` classes, so code (and the SDK's test suite) cannot tell them apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

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
from shipyard.jobs.schemas import Job, JobCreate, JobLogs, JobsPublic, JobStatus
from shipyard.models.schemas import (
    ApprovalCreate,
    ApprovalPublic,
    ModelVersionCreate,
    ModelVersionLineage,
    ModelVersionPublic,
    ModelVersionsPublic,
    ModelVersionUpdate,
    RegisteredModelCreate,
    RegisteredModelPublic,
    RegisteredModelsPublic,
    RegisteredModelUpdate,
    RegisterModel,
    SearchModelVersions,
)
from shipyard.models.uris import ResolvedModel
from shipyard.projects.schemas import ProjectPublic
from shipyard.sdk.tuning_calls import TuningBackend
from shipyard.serving.schemas import (
    DeploymentsPublic,
    EndpointCreate,
    EndpointEventsPublic,
    EndpointPublic,
    EndpointsPublic,
    EndpointUpdate,
)
from shipyard.tracking.schemas import (
    ArtifactPublic,
    ArtifactsPublic,
    DatasetInput,
    ExperimentCreate,
    ExperimentPublic,
    ExperimentsPublic,
    ExperimentUpdate,
    Lifecycle,
    MetricHistory,
    MetricRow,
    PurgeReport,
    RunComparison,
    RunCreate,
    RunPublic,
    RunsPublic,
    RunUpdate,
    SearchRuns,
)


class Backend(TuningBackend, Protocol):
    def ensure_project(self, project: str) -> ProjectPublic: ...

    # experiments
    def create_experiment(self, project: str, body: ExperimentCreate) -> ExperimentPublic: ...
    def get_experiment(self, project: str, experiment_id: str) -> ExperimentPublic: ...
    def get_experiment_by_name(self, project: str, name: str) -> ExperimentPublic: ...
    def list_experiments(
        self,
        project: str,
        *,
        name_like: str | None,
        lifecycle: Lifecycle,
        page_size: int,
        page_token: str | None,
    ) -> ExperimentsPublic: ...
    def update_experiment(
        self, project: str, experiment_id: str, body: ExperimentUpdate
    ) -> ExperimentPublic: ...
    def delete_experiment(self, project: str, experiment_id: str) -> ExperimentPublic: ...
    def restore_experiment(self, project: str, experiment_id: str) -> ExperimentPublic: ...

    # runs
    def create_run(self, project: str, body: RunCreate) -> RunPublic: ...
    def get_run(self, project: str, run_id: str) -> RunPublic: ...
    def update_run(self, project: str, run_id: str, body: RunUpdate) -> RunPublic: ...
    def update_run_quietly(self, project: str, run_id: str, body: RunUpdate) -> None: ...
    def delete_run(self, project: str, run_id: str) -> None: ...
    def restore_run(self, project: str, run_id: str) -> None: ...
    def log_batch(
        self,
        project: str,
        run_id: str,
        *,
        metrics: Sequence[MetricRow] = (),
        params: Sequence[tuple[str, str]] = (),
        tags: Sequence[tuple[str, str]] = (),
        batch_id: str | None = None,
    ) -> bool: ...
    def delete_tag(self, project: str, run_id: str, key: str) -> None: ...
    def log_inputs(self, project: str, run_id: str, inputs: list[DatasetInput]) -> None: ...
    def get_metric_history(self, project: str, run_id: str, key: str) -> MetricHistory: ...
    def search_runs(
        self, project: str, body: SearchRuns, include_count: bool = False
    ) -> RunsPublic: ...
    def compare_runs(
        self, project: str, run_ids: list[str], metric_keys: list[str] | None = None
    ) -> RunComparison: ...
    def purge(
        self,
        project: str,
        *,
        run_ids: list[str] | None = None,
        experiment_ids: list[str] | None = None,
        older_than_s: int | None = None,
    ) -> PurgeReport: ...

    # artifacts
    def log_artifact(
        self,
        project: str,
        run_id: str,
        local_path: str | os.PathLike[str],
        artifact_path: str | None = None,
    ) -> list[ArtifactPublic]: ...
    def list_artifacts(
        self, project: str, run_id: str, path: str | None = None, recursive: bool = False
    ) -> ArtifactsPublic: ...
    def download_artifacts(
        self, project: str, run_id: str, path: str | None, dest: str | os.PathLike[str]
    ) -> Path: ...

    def close(self) -> None: ...

    # endpoints
    def create_endpoint(self, project: str, body: EndpointCreate) -> EndpointPublic: ...
    def get_endpoint(self, project: str, name: str) -> EndpointPublic: ...
    def list_endpoints(
        self, project: str, *, page_size: int, page_token: str | None, stats: bool
    ) -> EndpointsPublic: ...
    def update_endpoint(self, project: str, name: str, body: EndpointUpdate) -> EndpointPublic: ...
    def rollback_endpoint(self, project: str, name: str, to: int | None) -> EndpointPublic: ...
    def stop_endpoint(self, project: str, name: str) -> EndpointPublic: ...
    def start_endpoint(self, project: str, name: str) -> EndpointPublic: ...
    def delete_endpoint(self, project: str, name: str) -> None: ...
    def list_endpoint_deployments(self, project: str, name: str) -> DeploymentsPublic: ...
    def list_endpoint_events(self, project: str, name: str, limit: int) -> EndpointEventsPublic: ...
    def invoke_endpoint(self, project: str, name: str, body: bytes, content_type: str) -> bytes: ...

    # batch transform and asynchronous inference
    def create_batch_job(self, project: str, body: BatchJobCreate) -> BatchJobPublic: ...
    def get_batch_job(self, project: str, job_id: str) -> BatchJobPublic: ...
    def list_batch_jobs(
        self,
        project: str,
        *,
        status: BatchJobStatus | None,
        page_size: int,
        page_token: str | None,
    ) -> BatchJobsPublic: ...
    def stop_batch_job(self, project: str, job_id: str) -> BatchJobPublic: ...
    def resume_batch_job(self, project: str, job_id: str) -> BatchJobPublic: ...
    def delete_batch_job(self, project: str, job_id: str) -> None: ...
    def submit_async_inference(
        self, project: str, body: AsyncInferenceCreate
    ) -> AsyncInferencePublic: ...
    def get_async_inference(self, project: str, request_id: str) -> AsyncInferencePublic: ...
    def list_async_inferences(
        self,
        project: str,
        *,
        status: AsyncInferenceStatus | None,
        page_size: int,
        page_token: str | None,
    ) -> AsyncInferencesPublic: ...
    def delete_async_inference(self, project: str, request_id: str) -> None: ...

    # training jobs
    def submit_job(self, project: str, body: JobCreate) -> Job: ...
    def get_job(self, project: str, job_id: str) -> Job: ...
    def list_jobs(
        self,
        project: str,
        *,
        status: Sequence[JobStatus] | None,
        tuning_job_id: str | None,
        page_size: int,
        page_token: str | None,
    ) -> JobsPublic: ...
    def stop_job(self, project: str, job_id: str, reason: str | None) -> Job: ...
    def get_job_logs(self, project: str, job_id: str, after_seq: int, limit: int) -> JobLogs: ...
    def delete_job(self, project: str, job_id: str) -> None: ...

    # model registry
    def create_registered_model(
        self, project: str, body: RegisteredModelCreate
    ) -> RegisteredModelPublic: ...
    def get_registered_model(self, project: str, name: str) -> RegisteredModelPublic: ...
    def list_registered_models(
        self, project: str, *, name_like: str | None, page_size: int, page_token: str | None
    ) -> RegisteredModelsPublic: ...
    def update_registered_model(
        self, project: str, name: str, body: RegisteredModelUpdate
    ) -> RegisteredModelPublic: ...
    def delete_registered_model(self, project: str, name: str) -> None: ...
    def set_registered_model_tag(self, project: str, name: str, key: str, value: str) -> None: ...
    def delete_registered_model_tag(self, project: str, name: str, key: str) -> None: ...
    def create_model_version(
        self, project: str, name: str, body: ModelVersionCreate
    ) -> ModelVersionPublic: ...
    def register_model(self, project: str, body: RegisterModel) -> ModelVersionPublic: ...
    def get_model_version(self, project: str, name: str, version: int) -> ModelVersionPublic: ...
    def get_model_version_by_alias(
        self, project: str, name: str, alias: str
    ) -> ModelVersionPublic: ...
    def search_model_versions(
        self, project: str, body: SearchModelVersions
    ) -> ModelVersionsPublic: ...
    def update_model_version(
        self, project: str, name: str, version: int, body: ModelVersionUpdate
    ) -> ModelVersionPublic: ...
    def delete_model_version(self, project: str, name: str, version: int) -> None: ...
    def set_model_version_tag(
        self, project: str, name: str, version: int, key: str, value: str
    ) -> None: ...
    def delete_model_version_tag(self, project: str, name: str, version: int, key: str) -> None: ...
    def set_model_alias(
        self, project: str, name: str, alias: str, version: int
    ) -> ModelVersionPublic: ...
    def delete_model_alias(self, project: str, name: str, alias: str) -> None: ...
    def transition_model_approval(
        self, project: str, name: str, version: int, body: ApprovalCreate
    ) -> ModelVersionPublic: ...
    def get_model_approvals(
        self, project: str, name: str, version: int
    ) -> list[ApprovalPublic]: ...
    def get_model_lineage(self, project: str, name: str, version: int) -> ModelVersionLineage: ...
    def resolve_model(self, project: str, uri: str) -> ResolvedModel: ...
