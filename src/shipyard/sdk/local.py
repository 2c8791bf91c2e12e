"""The in-process backend: the SDK calls the services directly (a notebook with no server)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from shipyard.core.settings import Settings
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
from shipyard.sdk.tuning_calls import LocalTuningCalls
from shipyard.server.context import Services
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


class LocalBackend(LocalTuningCalls):
    def __init__(self, services: Services | None = None, settings: Settings | None = None) -> None:
        self.services = services or Services.from_settings(settings)
        self.t = self.services.tracking

    def ensure_project(self, project: str) -> ProjectPublic:
        return self.services.projects.ensure_project(project)

    def create_experiment(self, project: str, body: ExperimentCreate) -> ExperimentPublic:
        return self.t.create_experiment(project, body)

    def get_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        return self.t.get_experiment(project, experiment_id)

    def get_experiment_by_name(self, project: str, name: str) -> ExperimentPublic:
        return self.t.get_experiment_by_name(project, name)

    def list_experiments(
        self,
        project: str,
        *,
        name_like: str | None = None,
        lifecycle: Lifecycle = Lifecycle.active,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> ExperimentsPublic:
        return self.t.list_experiments(
            project,
            name_like=name_like,
            lifecycle=lifecycle,
            page_size=page_size,
            page_token=page_token,
        )

    def update_experiment(
        self, project: str, experiment_id: str, body: ExperimentUpdate
    ) -> ExperimentPublic:
        return self.t.update_experiment(project, experiment_id, body)

    def delete_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        return self.t.delete_experiment(project, experiment_id)

    def restore_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        return self.t.restore_experiment(project, experiment_id)

    def create_run(self, project: str, body: RunCreate) -> RunPublic:
        return self.t.create_run(project, body, created_by=os.environ.get("USER"))

    def get_run(self, project: str, run_id: str) -> RunPublic:
        return self.t.get_run(project, run_id)

    def update_run(self, project: str, run_id: str, body: RunUpdate) -> RunPublic:
        return self.t.update_run(project, run_id, body)

    def update_run_quietly(self, project: str, run_id: str, body: RunUpdate) -> None:
        self.t.update_run_quietly(project, run_id, body)

    def delete_run(self, project: str, run_id: str) -> None:
        self.t.delete_run(project, run_id)

    def restore_run(self, project: str, run_id: str) -> None:
        self.t.restore_run(project, run_id)

    def log_batch(
        self,
        project: str,
        run_id: str,
        *,
        metrics: Sequence[MetricRow] = (),
        params: Sequence[tuple[str, str]] = (),
        tags: Sequence[tuple[str, str]] = (),
        batch_id: str | None = None,
    ) -> bool:
        return self.t.log_batch(
            project, run_id, metrics_=metrics, params=params, tags=tags, batch_id=batch_id
        )

    def delete_tag(self, project: str, run_id: str, key: str) -> None:
        self.t.delete_tag(project, run_id, key)

    def log_inputs(self, project: str, run_id: str, inputs: list[DatasetInput]) -> None:
        self.t.log_inputs(project, run_id, inputs)

    def get_metric_history(self, project: str, run_id: str, key: str) -> MetricHistory:
        return self.t.get_metric_history(project, run_id, key)

    def search_runs(
        self, project: str, body: SearchRuns, include_count: bool = False
    ) -> RunsPublic:
        return self.t.search_runs(project, body, include_count=include_count)

    def compare_runs(
        self, project: str, run_ids: list[str], metric_keys: list[str] | None = None
    ) -> RunComparison:
        return self.t.compare_runs(project, run_ids, metric_keys)

    def purge(
        self,
        project: str,
        *,
        run_ids: list[str] | None = None,
        experiment_ids: list[str] | None = None,
        older_than_s: int | None = None,
    ) -> PurgeReport:
        return self.t.purge(
            project, run_ids=run_ids, experiment_ids=experiment_ids, older_than_s=older_than_s
        )

    def log_artifact(
        self,
        project: str,
        run_id: str,
        local_path: str | os.PathLike[str],
        artifact_path: str | None = None,
    ) -> list[ArtifactPublic]:
        return self.t.log_artifact(project, run_id, local_path, artifact_path)

    def list_artifacts(
        self, project: str, run_id: str, path: str | None = None, recursive: bool = False
    ) -> ArtifactsPublic:
        return self.t.list_artifacts(project, run_id, path, recursive)

    def download_artifacts(
        self, project: str, run_id: str, path: str | None, dest: str | os.PathLike[str]
    ) -> Path:
        return self.t.download_artifacts(project, run_id, path, dest)

    def close(self) -> None:
        self.services.close()

    # -- endpoints --------------------------------------------------------------------------

    def create_endpoint(self, project: str, body: EndpointCreate) -> EndpointPublic:
        return self.services.endpoints.create(project, body, created_by=os.environ.get("USER"))

    def get_endpoint(self, project: str, name: str) -> EndpointPublic:
        return self.services.endpoints.get(project, name)

    def list_endpoints(
        self,
        project: str,
        *,
        page_size: int = 100,
        page_token: str | None = None,
        stats: bool = True,
    ) -> EndpointsPublic:
        return self.services.endpoints.list(
            project, page_size=page_size, page_token=page_token, with_stats=stats
        )

    def update_endpoint(self, project: str, name: str, body: EndpointUpdate) -> EndpointPublic:
        return self.services.endpoints.update(
            project, name, body, created_by=os.environ.get("USER")
        )

    def rollback_endpoint(self, project: str, name: str, to: int | None) -> EndpointPublic:
        return self.services.endpoints.rollback(
            project, name, to, created_by=os.environ.get("USER")
        )

    def stop_endpoint(self, project: str, name: str) -> EndpointPublic:
        return self.services.endpoints.stop(project, name)

    def start_endpoint(self, project: str, name: str) -> EndpointPublic:
        return self.services.endpoints.start(project, name)

    def delete_endpoint(self, project: str, name: str) -> None:
        self.services.endpoints.delete(project, name)

    def list_endpoint_deployments(self, project: str, name: str) -> DeploymentsPublic:
        return self.services.endpoints.deployments(project, name)

    def list_endpoint_events(
        self, project: str, name: str, limit: int = 100
    ) -> EndpointEventsPublic:
        return self.services.endpoints.events(project, name, limit)

    def invoke_endpoint(self, project: str, name: str, body: bytes, content_type: str) -> bytes:
        import httpx

        from shipyard.core.errors import Unavailable
        from shipyard.sdk.endpoints import error_from_response

        url, auth = self.services.endpoints.target(project, name)
        try:
            r = httpx.post(
                f"{url}/invocations",
                content=body,
                headers={"content-type": content_type, **auth},
                timeout=120.0,
                trust_env=False,
            )
        except httpx.TransportError as exc:
            raise Unavailable(f"endpoint {name!r} did not answer: {exc}") from exc
        if r.status_code >= 400:
            raise error_from_response(r)
        return r.content

    # -- batch transform and asynchronous inference ---------------------------------------

    def create_batch_job(self, project: str, body: BatchJobCreate) -> BatchJobPublic:
        return self.services.batch.create_job(project, body, created_by=os.environ.get("USER"))

    def get_batch_job(self, project: str, job_id: str) -> BatchJobPublic:
        return self.services.batch.get_job(project, job_id)

    def list_batch_jobs(
        self,
        project: str,
        *,
        status: BatchJobStatus | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> BatchJobsPublic:
        return self.services.batch.list_jobs(
            project, status=status, page_size=page_size, page_token=page_token
        )

    def stop_batch_job(self, project: str, job_id: str) -> BatchJobPublic:
        return self.services.batch.stop_job(project, job_id)

    def resume_batch_job(self, project: str, job_id: str) -> BatchJobPublic:
        return self.services.batch.resume_job(project, job_id)

    def delete_batch_job(self, project: str, job_id: str) -> None:
        self.services.batch.delete_job(project, job_id)

    def submit_async_inference(
        self, project: str, body: AsyncInferenceCreate
    ) -> AsyncInferencePublic:
        return self.services.async_inference.submit(
            project, body, created_by=os.environ.get("USER")
        )

    def get_async_inference(self, project: str, request_id: str) -> AsyncInferencePublic:
        return self.services.async_inference.get(project, request_id)

    def list_async_inferences(
        self,
        project: str,
        *,
        status: AsyncInferenceStatus | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> AsyncInferencesPublic:
        return self.services.async_inference.list(
            project, status=status, page_size=page_size, page_token=page_token
        )

    def delete_async_inference(self, project: str, request_id: str) -> None:
        self.services.async_inference.delete(project, request_id)

    # -- training jobs ----------------------------------------------------------------------

    def submit_job(self, project: str, body: JobCreate) -> Job:
        # The submit wakes this process's worker (started on the first one) when embedded
        # workers are on: a notebook with no server runs its jobs itself.
        return self.services.jobs.submit(project, body, created_by=os.environ.get("USER"))

    def get_job(self, project: str, job_id: str) -> Job:
        return self.services.jobs.get(project, job_id)

    def list_jobs(
        self,
        project: str,
        *,
        status: Sequence[JobStatus] | None = None,
        tuning_job_id: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> JobsPublic:
        return self.services.jobs.list(
            project,
            status=status or None,
            tuning_job_id=tuning_job_id,
            page_token=page_token,
            max_results=page_size,
        )

    def stop_job(self, project: str, job_id: str, reason: str | None = None) -> Job:
        return self.services.jobs.stop(project, job_id, reason)

    def get_job_logs(
        self, project: str, job_id: str, after_seq: int = 0, limit: int = 1000
    ) -> JobLogs:
        return self.services.jobs.logs(project, job_id, after_seq=after_seq, limit=limit)

    def delete_job(self, project: str, job_id: str) -> None:
        self.services.jobs.delete(project, job_id)

    # -- model registry ---------------------------------------------------------------------

    def create_registered_model(
        self, project: str, body: RegisteredModelCreate
    ) -> RegisteredModelPublic:
        return self.services.models.create_registered_model(
            project, body, created_by=os.environ.get("USER")
        )

    def get_registered_model(self, project: str, name: str) -> RegisteredModelPublic:
        return self.services.models.get_registered_model(project, name)

    def list_registered_models(
        self,
        project: str,
        *,
        name_like: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> RegisteredModelsPublic:
        return self.services.models.list_registered_models(
            project, name_like=name_like, page_size=page_size, page_token=page_token
        )

    def update_registered_model(
        self, project: str, name: str, body: RegisteredModelUpdate
    ) -> RegisteredModelPublic:
        return self.services.models.update_registered_model(project, name, body)

    def delete_registered_model(self, project: str, name: str) -> None:
        self.services.models.delete_registered_model(project, name)

    def set_registered_model_tag(self, project: str, name: str, key: str, value: str) -> None:
        self.services.models.set_model_tag(project, name, key, value)

    def delete_registered_model_tag(self, project: str, name: str, key: str) -> None:
        self.services.models.delete_model_tag(project, name, key)

    def create_model_version(
        self, project: str, name: str, body: ModelVersionCreate
    ) -> ModelVersionPublic:
        return self.services.models.create_model_version(
            project, name, body, created_by=os.environ.get("USER")
        )

    def register_model(self, project: str, body: RegisterModel) -> ModelVersionPublic:
        version = ModelVersionCreate(
            source=body.source, description=body.description, tags=body.tags
        )
        return self.services.models.register_model(
            project, body.name, version, created_by=os.environ.get("USER")
        )

    def get_model_version(self, project: str, name: str, version: int) -> ModelVersionPublic:
        return self.services.models.get_model_version(project, name, version)

    def get_model_version_by_alias(self, project: str, name: str, alias: str) -> ModelVersionPublic:
        return self.services.models.get_version_by_alias(project, name, alias)

    def search_model_versions(self, project: str, body: SearchModelVersions) -> ModelVersionsPublic:
        return self.services.models.search_model_versions(project, body)

    def update_model_version(
        self, project: str, name: str, version: int, body: ModelVersionUpdate
    ) -> ModelVersionPublic:
        return self.services.models.update_model_version(project, name, version, body)

    def delete_model_version(self, project: str, name: str, version: int) -> None:
        self.services.models.delete_model_version(project, name, version)

    def set_model_version_tag(
        self, project: str, name: str, version: int, key: str, value: str
    ) -> None:
        self.services.models.set_version_tag(project, name, version, key, value)

    def delete_model_version_tag(self, project: str, name: str, version: int, key: str) -> None:
        self.services.models.delete_version_tag(project, name, version, key)

    def set_model_alias(
        self, project: str, name: str, alias: str, version: int
    ) -> ModelVersionPublic:
        return self.services.models.set_alias(
            project, name, alias, version, actor=os.environ.get("USER")
        )

    def delete_model_alias(self, project: str, name: str, alias: str) -> None:
        self.services.models.delete_alias(project, name, alias)

    def transition_model_approval(
        self, project: str, name: str, version: int, body: ApprovalCreate
    ) -> ModelVersionPublic:
        return self.services.models.transition_approval(
            project, name, version, body.status, actor=os.environ.get("USER"), comment=body.comment
        )

    def get_model_approvals(self, project: str, name: str, version: int) -> list[ApprovalPublic]:
        return self.services.models.approval_history(project, name, version)

    def get_model_lineage(self, project: str, name: str, version: int) -> ModelVersionLineage:
        return self.services.models.get_lineage(project, name, version)

    def resolve_model(self, project: str, uri: str) -> ResolvedModel:
        return self.services.models.resolve(project, uri)
