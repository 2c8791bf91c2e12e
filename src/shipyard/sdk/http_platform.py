"""``HttpBackend`` calls for the model registry, endpoints, and batch and asynchronous
inference: a mixin over the transport that ``shipyard.sdk.http`` defines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from shipyard.core.errors import Unavailable, error_from_dict
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
from shipyard.serving.schemas import (
    DeploymentsPublic,
    EndpointCreate,
    EndpointEventsPublic,
    EndpointPublic,
    EndpointsPublic,
    EndpointUpdate,
)


def _q(s: str) -> str:
    return quote(s, safe="")


class PlatformCallsMixin:
    """Needs ``_json``, ``_request``, ``_p``, ``http`` and ``url`` from ``HttpBackend``."""

    if TYPE_CHECKING:
        http: httpx.Client
        url: str

        def _request(
            self,
            method: str,
            path: str,
            *,
            json: Any = None,
            params: Any = None,
            content: Any = None,
            headers: dict[str, str] | None = None,
            idempotent: bool | None = None,
        ) -> httpx.Response: ...
        def _json(self, method: str, path: str, **kw: Any) -> Any: ...
        @staticmethod
        def _p(project: str) -> str: ...

    # -- endpoints --------------------------------------------------------------------------

    def _e(self, project: str, name: str | None = None) -> str:
        base = f"{self._p(project)}/endpoints"
        return base if name is None else f"{base}/{_q(name)}"

    def create_endpoint(self, project: str, body: EndpointCreate) -> EndpointPublic:
        return EndpointPublic.model_validate(
            self._json(
                "POST", self._e(project), json=body.model_dump(mode="json", exclude_unset=True)
            )
        )

    def get_endpoint(self, project: str, name: str) -> EndpointPublic:
        return EndpointPublic.model_validate(self._json("GET", self._e(project, name)))

    def list_endpoints(
        self,
        project: str,
        *,
        page_size: int = 100,
        page_token: str | None = None,
        stats: bool = True,
    ) -> EndpointsPublic:
        params: dict[str, Any] = {"page_size": page_size, "stats": str(stats).lower()}
        if page_token:
            params["page_token"] = page_token
        return EndpointsPublic.model_validate(self._json("GET", self._e(project), params=params))

    def update_endpoint(self, project: str, name: str, body: EndpointUpdate) -> EndpointPublic:
        # Only the fields set travel: a field sent as null means "remove" (shadow, capture).
        return EndpointPublic.model_validate(
            self._json(
                "PATCH",
                self._e(project, name),
                json=body.model_dump(mode="json", exclude_unset=True),
            )
        )

    def rollback_endpoint(self, project: str, name: str, to: int | None) -> EndpointPublic:
        return EndpointPublic.model_validate(
            self._json("POST", f"{self._e(project, name)}/rollback", json={"to": to})
        )

    def stop_endpoint(self, project: str, name: str) -> EndpointPublic:
        return EndpointPublic.model_validate(
            self._json("POST", f"{self._e(project, name)}/stop", idempotent=True)
        )

    def start_endpoint(self, project: str, name: str) -> EndpointPublic:
        return EndpointPublic.model_validate(self._json("POST", f"{self._e(project, name)}/start"))

    def delete_endpoint(self, project: str, name: str) -> None:
        self._request("DELETE", self._e(project, name))

    def list_endpoint_deployments(self, project: str, name: str) -> DeploymentsPublic:
        return DeploymentsPublic.model_validate(
            self._json("GET", f"{self._e(project, name)}/deployments")
        )

    def list_endpoint_events(
        self, project: str, name: str, limit: int = 100
    ) -> EndpointEventsPublic:
        return EndpointEventsPublic.model_validate(
            self._json("GET", f"{self._e(project, name)}/events", params={"limit": limit})
        )

    def invoke_endpoint(self, project: str, name: str, body: bytes, content_type: str) -> bytes:
        # Not through _request: a prediction is not retried, and the endpoint's own error
        # shape ({"error": "..."}, as the inference protocols have it) passes through as is.
        from shipyard.sdk.endpoints import error_from_response

        try:
            resp = self.http.post(
                f"{self._e(project, name)}/invocations",
                content=body,
                headers={"content-type": content_type},
            )
        except httpx.TransportError as exc:
            raise Unavailable(f"POST {self.url}: endpoint {name!r} unreachable ({exc})") from exc
        if resp.status_code >= 400:
            raise error_from_response(resp)
        return resp.content

    # -- batch transform and asynchronous inference ---------------------------------------

    def create_batch_job(self, project: str, body: BatchJobCreate) -> BatchJobPublic:
        # With an idempotency key a retried POST cannot start a second job.
        return BatchJobPublic.model_validate(
            self._json(
                "POST",
                f"{self._p(project)}/batch-jobs",
                json=body.model_dump(mode="json", exclude_none=True),
                idempotent=body.idempotency_key is not None,
            )
        )

    def get_batch_job(self, project: str, job_id: str) -> BatchJobPublic:
        return BatchJobPublic.model_validate(
            self._json("GET", f"{self._p(project)}/batch-jobs/{_q(job_id)}")
        )

    def list_batch_jobs(
        self,
        project: str,
        *,
        status: BatchJobStatus | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> BatchJobsPublic:
        params: dict[str, Any] = {"page_size": page_size}
        if status is not None:
            params["status"] = status.value
        if page_token:
            params["page_token"] = page_token
        return BatchJobsPublic.model_validate(
            self._json("GET", f"{self._p(project)}/batch-jobs", params=params)
        )

    def stop_batch_job(self, project: str, job_id: str) -> BatchJobPublic:
        return BatchJobPublic.model_validate(
            self._json("POST", f"{self._p(project)}/batch-jobs/{_q(job_id)}/stop", idempotent=True)
        )

    def resume_batch_job(self, project: str, job_id: str) -> BatchJobPublic:
        return BatchJobPublic.model_validate(
            self._json("POST", f"{self._p(project)}/batch-jobs/{_q(job_id)}/resume")
        )

    def delete_batch_job(self, project: str, job_id: str) -> None:
        self._request("DELETE", f"{self._p(project)}/batch-jobs/{_q(job_id)}")

    def submit_async_inference(
        self, project: str, body: AsyncInferenceCreate
    ) -> AsyncInferencePublic:
        return AsyncInferencePublic.model_validate(
            self._json(
                "POST",
                f"{self._p(project)}/async-inference",
                json=body.model_dump(mode="json", exclude_none=True),
                idempotent=body.idempotency_key is not None,
            )
        )

    def get_async_inference(self, project: str, request_id: str) -> AsyncInferencePublic:
        return AsyncInferencePublic.model_validate(
            self._json("GET", f"{self._p(project)}/async-inference/{_q(request_id)}")
        )

    def list_async_inferences(
        self,
        project: str,
        *,
        status: AsyncInferenceStatus | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> AsyncInferencesPublic:
        params: dict[str, Any] = {"page_size": page_size}
        if status is not None:
            params["status"] = status.value
        if page_token:
            params["page_token"] = page_token
        return AsyncInferencesPublic.model_validate(
            self._json("GET", f"{self._p(project)}/async-inference", params=params)
        )

    def delete_async_inference(self, project: str, request_id: str) -> None:
        self._request("DELETE", f"{self._p(project)}/async-inference/{_q(request_id)}")

    # -- model registry ---------------------------------------------------------------------

    def _m(self, project: str, name: str) -> str:
        return f"{self._p(project)}/models/{_q(name)}"

    def _v(self, project: str, name: str, version: int) -> str:
        return f"{self._m(project, name)}/versions/{int(version)}"

    def create_registered_model(
        self, project: str, body: RegisteredModelCreate
    ) -> RegisteredModelPublic:
        return RegisteredModelPublic.model_validate(
            self._json("POST", f"{self._p(project)}/models", json=body.model_dump(mode="json"))
        )

    def get_registered_model(self, project: str, name: str) -> RegisteredModelPublic:
        return RegisteredModelPublic.model_validate(self._json("GET", self._m(project, name)))

    def list_registered_models(
        self,
        project: str,
        *,
        name_like: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> RegisteredModelsPublic:
        params: dict[str, Any] = {"page_size": page_size}
        if name_like:
            params["name_like"] = name_like
        if page_token:
            params["page_token"] = page_token
        return RegisteredModelsPublic.model_validate(
            self._json("GET", f"{self._p(project)}/models", params=params)
        )

    def update_registered_model(
        self, project: str, name: str, body: RegisteredModelUpdate
    ) -> RegisteredModelPublic:
        return RegisteredModelPublic.model_validate(
            self._json(
                "PATCH",
                self._m(project, name),
                json=body.model_dump(mode="json", exclude_none=True),
                idempotent=True,
            )
        )

    def delete_registered_model(self, project: str, name: str) -> None:
        self._request("DELETE", self._m(project, name))

    def set_registered_model_tag(self, project: str, name: str, key: str, value: str) -> None:
        self._request(
            "PUT", f"{self._m(project, name)}/tags/{quote(key)}", json={"value": str(value)}
        )

    def delete_registered_model_tag(self, project: str, name: str, key: str) -> None:
        self._request("DELETE", f"{self._m(project, name)}/tags/{quote(key)}")

    def create_model_version(
        self, project: str, name: str, body: ModelVersionCreate
    ) -> ModelVersionPublic:
        return ModelVersionPublic.model_validate(
            self._json(
                "POST", f"{self._m(project, name)}/versions", json=body.model_dump(mode="json")
            )
        )

    def register_model(self, project: str, body: RegisterModel) -> ModelVersionPublic:
        return ModelVersionPublic.model_validate(
            self._json(
                "POST", f"{self._p(project)}/model-versions", json=body.model_dump(mode="json")
            )
        )

    def get_model_version(self, project: str, name: str, version: int) -> ModelVersionPublic:
        return ModelVersionPublic.model_validate(self._json("GET", self._v(project, name, version)))

    def get_model_version_by_alias(self, project: str, name: str, alias: str) -> ModelVersionPublic:
        return ModelVersionPublic.model_validate(
            self._json("GET", f"{self._m(project, name)}/aliases/{_q(alias)}")
        )

    def search_model_versions(self, project: str, body: SearchModelVersions) -> ModelVersionsPublic:
        return ModelVersionsPublic.model_validate(
            self._json(
                "POST",
                f"{self._p(project)}/model-versions/search",
                json=body.model_dump(mode="json"),
                idempotent=True,
            )
        )

    def update_model_version(
        self, project: str, name: str, version: int, body: ModelVersionUpdate
    ) -> ModelVersionPublic:
        return ModelVersionPublic.model_validate(
            self._json(
                "PATCH",
                self._v(project, name, version),
                json=body.model_dump(mode="json", exclude_none=True),
                idempotent=True,
            )
        )

    def delete_model_version(self, project: str, name: str, version: int) -> None:
        self._request("DELETE", self._v(project, name, version))

    def set_model_version_tag(
        self, project: str, name: str, version: int, key: str, value: str
    ) -> None:
        self._request(
            "PUT",
            f"{self._v(project, name, version)}/tags/{quote(key)}",
            json={"value": str(value)},
        )

    def delete_model_version_tag(self, project: str, name: str, version: int, key: str) -> None:
        self._request("DELETE", f"{self._v(project, name, version)}/tags/{quote(key)}")

    def set_model_alias(
        self, project: str, name: str, alias: str, version: int
    ) -> ModelVersionPublic:
        return ModelVersionPublic.model_validate(
            self._json(
                "PUT", f"{self._m(project, name)}/aliases/{_q(alias)}", json={"version": version}
            )
        )

    def delete_model_alias(self, project: str, name: str, alias: str) -> None:
        self._request("DELETE", f"{self._m(project, name)}/aliases/{_q(alias)}")

    def transition_model_approval(
        self, project: str, name: str, version: int, body: ApprovalCreate
    ) -> ModelVersionPublic:
        return ModelVersionPublic.model_validate(
            self._json(
                "POST",
                f"{self._v(project, name, version)}/approvals",
                json=body.model_dump(mode="json"),
            )
        )

    def get_model_approvals(self, project: str, name: str, version: int) -> list[ApprovalPublic]:
        data = self._json("GET", f"{self._v(project, name, version)}/approvals")
        return [ApprovalPublic.model_validate(a) for a in data]

    def get_model_lineage(self, project: str, name: str, version: int) -> ModelVersionLineage:
        return ModelVersionLineage.model_validate(
            self._json("GET", f"{self._v(project, name, version)}/lineage")
        )

    def resolve_model(self, project: str, uri: str) -> ResolvedModel:
        """Fetch the model folder ``uri`` names into this machine's cache (by digest)."""
        from shipyard.core.settings import Settings
        from shipyard.models.schemas import ModelFile, ResolvedModelInfo
        from shipyard.models.uris import materialize

        info = ResolvedModelInfo.model_validate(
            self._json("GET", f"{self._p(project)}/model-versions/resolve", params={"uri": uri})
        )
        if info.flavor in ("mlflow", "unknown"):
            from shipyard.core.errors import InvalidArgument

            raise InvalidArgument.for_field("uri", f"{uri} is not a Shipyard model")
        if info.name is not None and info.version is not None:
            base = f"{self._v(project, info.name, info.version)}/files/"
        else:
            base = f"{self._p(project)}/runs/{_q(info.run_id or '')}/artifacts/{info.source_path}/"

        def fetch(f: ModelFile, target: Path) -> None:
            with self.http.stream("GET", base + quote(f.path)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from_dict(resp.json(), resp.status_code)
                with open(target, "wb") as out:
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)

        cache = getattr(self, "model_cache_dir", None) or Settings().home / "cache" / "models"
        return materialize(Path(cache), info, fetch)

    # -- training jobs ----------------------------------------------------------------------

    def submit_job(self, project: str, body: JobCreate) -> Job:
        # With an idempotency key a retried POST cannot queue a second job.
        return Job.model_validate(
            self._json(
                "POST",
                f"{self._p(project)}/jobs",
                json=body.model_dump(mode="json", exclude_unset=True),
                idempotent=body.idempotency_key is not None,
            )
        )

    def get_job(self, project: str, job_id: str) -> Job:
        return Job.model_validate(self._json("GET", f"{self._p(project)}/jobs/{_q(job_id)}"))

    def list_jobs(
        self,
        project: str,
        *,
        status: Sequence[JobStatus] | None = None,
        tuning_job_id: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> JobsPublic:
        params: list[tuple[str, str | int]] = [("page_size", page_size)]
        params += [("status", JobStatus(s).value) for s in status or ()]
        if tuning_job_id:
            params.append(("tuning_job_id", tuning_job_id))
        if page_token:
            params.append(("page_token", page_token))
        return JobsPublic.model_validate(
            self._json("GET", f"{self._p(project)}/jobs", params=params)
        )

    def stop_job(self, project: str, job_id: str, reason: str | None = None) -> Job:
        return Job.model_validate(
            self._json(
                "POST",
                f"{self._p(project)}/jobs/{_q(job_id)}/stop",
                json={"reason": reason},
                idempotent=True,
            )
        )

    def get_job_logs(
        self, project: str, job_id: str, after_seq: int = 0, limit: int = 1000
    ) -> JobLogs:
        return JobLogs.model_validate(
            self._json(
                "GET",
                f"{self._p(project)}/jobs/{_q(job_id)}/logs",
                params={"after_seq": after_seq, "limit": limit},
            )
        )

    def delete_job(self, project: str, job_id: str) -> None:
        self._request("DELETE", f"{self._p(project)}/jobs/{_q(job_id)}")
