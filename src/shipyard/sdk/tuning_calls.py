"""The backends' calls for hyperparameter tuning: the protocol, and its in-process and HTTP
implementations as mixins of ``LocalBackend`` and ``HttpBackend``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from shipyard.models.schemas import ModelVersionPublic
from shipyard.tuning.schemas import (
    RegisterBest,
    TrialsReport,
    TuningJobCreate,
    TuningJobKind,
    TuningJobPublic,
    TuningJobsPublic,
    TuningJobStatus,
)

if TYPE_CHECKING:
    import httpx

    from shipyard.server.context import Services


def _q(s: str) -> str:
    return quote(s, safe="")


class TuningBackend(Protocol):
    def create_tuning_job(self, project: str, body: TuningJobCreate) -> TuningJobPublic: ...
    def get_tuning_job(
        self, project: str, tuning_job_id: str, with_trials: bool = True
    ) -> TuningJobPublic: ...
    def list_tuning_jobs(
        self,
        project: str,
        *,
        status: TuningJobStatus | None = None,
        kind: TuningJobKind | None = None,
        name_like: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> TuningJobsPublic: ...
    def stop_tuning_job(self, project: str, tuning_job_id: str) -> TuningJobPublic: ...
    def resume_tuning_job(self, project: str, tuning_job_id: str) -> TuningJobPublic: ...
    def delete_tuning_job(self, project: str, tuning_job_id: str) -> None: ...
    def report_tuning_trials(
        self, project: str, tuning_job_id: str, body: TrialsReport
    ) -> TuningJobPublic: ...
    def register_best_trial(
        self, project: str, tuning_job_id: str, body: RegisterBest
    ) -> ModelVersionPublic: ...


class LocalTuningCalls:
    """Needs ``services`` from ``LocalBackend``."""

    if TYPE_CHECKING:
        services: Services

    def create_tuning_job(self, project: str, body: TuningJobCreate) -> TuningJobPublic:
        return self.services.tuning.create(project, body, created_by=os.environ.get("USER"))

    def get_tuning_job(
        self, project: str, tuning_job_id: str, with_trials: bool = True
    ) -> TuningJobPublic:
        return self.services.tuning.get(project, tuning_job_id, with_trials=with_trials)

    def list_tuning_jobs(
        self,
        project: str,
        *,
        status: TuningJobStatus | None = None,
        kind: TuningJobKind | None = None,
        name_like: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> TuningJobsPublic:
        return self.services.tuning.list(
            project,
            status=status,
            kind=kind,
            name_like=name_like,
            page_size=page_size,
            page_token=page_token,
        )

    def stop_tuning_job(self, project: str, tuning_job_id: str) -> TuningJobPublic:
        return self.services.tuning.stop(project, tuning_job_id)

    def resume_tuning_job(self, project: str, tuning_job_id: str) -> TuningJobPublic:
        return self.services.tuning.resume(project, tuning_job_id)

    def delete_tuning_job(self, project: str, tuning_job_id: str) -> None:
        self.services.tuning.delete(project, tuning_job_id)

    def report_tuning_trials(
        self, project: str, tuning_job_id: str, body: TrialsReport
    ) -> TuningJobPublic:
        return self.services.tuning.report_trials(
            project, tuning_job_id, body, created_by=os.environ.get("USER")
        )

    def register_best_trial(
        self, project: str, tuning_job_id: str, body: RegisterBest
    ) -> ModelVersionPublic:
        return self.services.tuning.register_best(
            project, tuning_job_id, body, created_by=os.environ.get("USER")
        )


class HttpTuningCalls:
    """Needs ``_json``, ``_request`` and ``_p`` from ``HttpBackend``."""

    if TYPE_CHECKING:

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

    def _t(self, project: str, tuning_job_id: str | None = None) -> str:
        base = f"{self._p(project)}/tuning-jobs"
        return base if tuning_job_id is None else f"{base}/{_q(tuning_job_id)}"

    def create_tuning_job(self, project: str, body: TuningJobCreate) -> TuningJobPublic:
        return TuningJobPublic.model_validate(
            self._json(
                "POST",
                self._t(project),
                json=body.model_dump(mode="json", exclude_unset=True),
                idempotent=body.idempotency_key is not None,
            )
        )

    def get_tuning_job(
        self, project: str, tuning_job_id: str, with_trials: bool = True
    ) -> TuningJobPublic:
        return TuningJobPublic.model_validate(
            self._json(
                "GET",
                self._t(project, tuning_job_id),
                params={"trials": "true" if with_trials else "false"},
            )
        )

    def list_tuning_jobs(
        self,
        project: str,
        *,
        status: TuningJobStatus | None = None,
        kind: TuningJobKind | None = None,
        name_like: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> TuningJobsPublic:
        params: dict[str, Any] = {"page_size": page_size}
        if status is not None:
            params["status"] = TuningJobStatus(status).value
        if kind is not None:
            params["kind"] = TuningJobKind(kind).value
        if name_like:
            params["name_like"] = name_like
        if page_token:
            params["page_token"] = page_token
        return TuningJobsPublic.model_validate(self._json("GET", self._t(project), params=params))

    def stop_tuning_job(self, project: str, tuning_job_id: str) -> TuningJobPublic:
        return TuningJobPublic.model_validate(
            self._json("POST", f"{self._t(project, tuning_job_id)}/stop", idempotent=True)
        )

    def resume_tuning_job(self, project: str, tuning_job_id: str) -> TuningJobPublic:
        return TuningJobPublic.model_validate(
            self._json("POST", f"{self._t(project, tuning_job_id)}/resume", idempotent=True)
        )

    def delete_tuning_job(self, project: str, tuning_job_id: str) -> None:
        self._request("DELETE", self._t(project, tuning_job_id))

    def report_tuning_trials(
        self, project: str, tuning_job_id: str, body: TrialsReport
    ) -> TuningJobPublic:
        return TuningJobPublic.model_validate(
            self._json(
                "POST",
                f"{self._t(project, tuning_job_id)}/trials",
                json=body.model_dump(mode="json", exclude_none=True),
                # Safe to send again: trials already recorded are skipped.
                idempotent=True,
            )
        )

    def register_best_trial(
        self, project: str, tuning_job_id: str, body: RegisterBest
    ) -> ModelVersionPublic:
        return ModelVersionPublic.model_validate(
            self._json(
                "POST",
                f"{self._t(project, tuning_job_id)}/register-best",
                json=body.model_dump(mode="json"),
            )
        )
