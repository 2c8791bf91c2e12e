"""``Client``: the SDK's object API over a backend, for one project. The CLI is built on it."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shipyard.core.errors import NotFound
from shipyard.core.schemas import validate
from shipyard.inference.schemas import (
    AsyncInferenceCreate,
    AsyncInferencePublic,
    BatchJobCreate,
    BatchJobPublic,
    BatchJobsPublic,
    BatchJobStatus,
)
from shipyard.models.format import LoadedModel
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
from shipyard.sdk.backend import Backend
from shipyard.sdk.endpoints import Endpoint, wait_until_serving
from shipyard.serving.schemas import (
    DeploymentsPublic,
    EndpointCreate,
    EndpointEventsPublic,
    EndpointPublic,
    EndpointsPublic,
    EndpointUpdate,
    parse,
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
    PurgeReport,
    RunComparison,
    RunPublic,
    RunsPublic,
    SearchRuns,
)

DEFAULT_PROJECT = "default"


def make_backend(tracking_uri: str | None = None, token: str | None = None) -> Backend:
    """An ``HttpBackend`` for an http(s) URI (or ``SHIPYARD_TRACKING_URI``), else in-process."""
    uri = tracking_uri or os.environ.get("SHIPYARD_TRACKING_URI") or ""
    if uri.startswith(("http://", "https://")):
        from shipyard.sdk.http import HttpBackend

        return HttpBackend(uri, token)
    from shipyard.core.settings import Settings
    from shipyard.sdk.local import LocalBackend

    if uri:
        # A folder: an embedded Shipyard home other than the default.
        return LocalBackend(settings=Settings(home=Path(uri.removeprefix("file://"))))
    return LocalBackend()


class Client:
    def __init__(
        self,
        project: str | None = None,
        tracking_uri: str | None = None,
        token: str | None = None,
        backend: Backend | None = None,
        *,
        known_project: bool = False,
    ) -> None:
        """``known_project``: the project is known to exist (a training job's own), so the
        client does not check it (or make it) before its first call."""
        self.project = project or os.environ.get("SHIPYARD_PROJECT") or DEFAULT_PROJECT
        self.backend = backend or make_backend(tracking_uri, token)
        self._project_ready = known_project
        # Experiment ids by name, for ``start_run``: see ``experiment_id``.
        self._experiment_ids: dict[str, str] = {}

    def _ready(self) -> str:
        if not self._project_ready:
            self.backend.ensure_project(self.project)
            self._project_ready = True
        return self.project

    # -- experiments ------------------------------------------------------------------------

    def create_experiment(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> ExperimentPublic:
        body = validate(ExperimentCreate, name=name, description=description, tags=tags or {})
        return self.backend.create_experiment(self._ready(), body)

    def get_experiment(self, id_or_name: str) -> ExperimentPublic:
        """By id, else by name."""
        p = self._ready()
        try:
            return self.backend.get_experiment(p, id_or_name)
        except NotFound:
            return self.backend.get_experiment_by_name(p, id_or_name)

    def get_or_create_experiment(self, name: str) -> ExperimentPublic:
        p = self._ready()
        try:
            return self.backend.get_experiment_by_name(p, name)
        except NotFound:
            from shipyard.core.errors import AlreadyExists

            try:
                return self.create_experiment(name)
            except AlreadyExists:
                return self.backend.get_experiment_by_name(p, name)

    def experiment_id(self, name: str, *, refresh: bool = False) -> str:
        """The id of experiment ``name`` (made if missing), looked up once and then remembered:
        ``start_run`` asks for it on every run, and a lookup is a round trip to the server.
        ``refresh`` looks again (``start_run`` does when the store refuses the remembered id).
        An experiment renamed by another process keeps its id here, as MLflow's
        ``set_experiment`` keeps its experiment."""
        if not refresh:
            found = self._experiment_ids.get(name)
            if found is not None:
                return found
        exp_id = self._experiment_ids[name] = self.get_or_create_experiment(name).id
        return exp_id

    def remembers_experiment(self, name: str) -> bool:
        """Whether ``experiment_id(name)`` would answer without asking the store."""
        return name in self._experiment_ids

    def _forget_experiment(self, exp_id: str) -> None:
        for name in [n for n, i in self._experiment_ids.items() if i == exp_id]:
            del self._experiment_ids[name]

    def list_experiments(
        self,
        *,
        name_like: str | None = None,
        lifecycle: Lifecycle | str = Lifecycle.active,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> ExperimentsPublic:
        return self.backend.list_experiments(
            self._ready(),
            name_like=name_like,
            lifecycle=Lifecycle(lifecycle),
            page_size=page_size,
            page_token=page_token,
        )

    def rename_experiment(self, id_or_name: str, new_name: str) -> ExperimentPublic:
        exp = self.get_experiment(id_or_name)
        self._forget_experiment(exp.id)
        return self.backend.update_experiment(
            self.project, exp.id, validate(ExperimentUpdate, name=new_name)
        )

    def delete_experiment(self, id_or_name: str) -> ExperimentPublic:
        return self.backend.delete_experiment(self.project, self.get_experiment(id_or_name).id)

    def restore_experiment(self, id_or_name: str) -> ExperimentPublic:
        return self.backend.restore_experiment(self.project, self.get_experiment(id_or_name).id)

    # -- runs -------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunPublic:
        return self.backend.get_run(self._ready(), run_id)

    def search_runs(
        self,
        experiments: list[str] | None = None,
        filter: str | None = None,
        order_by: list[str] | None = None,
        *,
        lifecycle: Lifecycle | str = "active",
        page_size: int = 100,
        page_token: str | None = None,
        include_count: bool = False,
    ) -> RunsPublic:
        """Runs matching ``filter`` (the search language, e.g. ``metrics.acc > 0.9 AND
        params.model = 'lr'``) in the given experiments (ids or names; None = all)."""
        exp_ids = [self.get_experiment(e).id for e in experiments] if experiments else None
        body = validate(
            SearchRuns,
            experiment_ids=exp_ids,
            filter=filter,
            order_by=order_by,
            lifecycle=lifecycle,
            page_size=page_size,
            page_token=page_token,
        )
        return self.backend.search_runs(self._ready(), body, include_count)

    def delete_run(self, run_id: str) -> None:
        self.backend.delete_run(self._ready(), run_id)

    def restore_run(self, run_id: str) -> None:
        self.backend.restore_run(self._ready(), run_id)

    def compare_runs(
        self, run_ids: list[str], metric_keys: list[str] | None = None
    ) -> RunComparison:
        return self.backend.compare_runs(self._ready(), run_ids, metric_keys)

    def get_metric_history(self, run_id: str, key: str) -> MetricHistory:
        return self.backend.get_metric_history(self._ready(), run_id, key)

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self.backend.log_batch(self._ready(), run_id, tags=[(key, str(value))])

    def delete_tag(self, run_id: str, key: str) -> None:
        self.backend.delete_tag(self._ready(), run_id, key)

    def log_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        self.backend.log_inputs(self._ready(), run_id, inputs)

    def list_artifacts(
        self, run_id: str, path: str | None = None, recursive: bool = False
    ) -> ArtifactsPublic:
        return self.backend.list_artifacts(self._ready(), run_id, path, recursive)

    def log_artifact(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactPublic]:
        return self.backend.log_artifact(self._ready(), run_id, local_path, artifact_path)

    def download_artifacts(
        self, run_id: str, path: str | None = None, dest: str | os.PathLike[str] = "."
    ) -> Path:
        return self.backend.download_artifacts(self._ready(), run_id, path, dest)

    def purge(
        self,
        *,
        run_ids: list[str] | None = None,
        experiment_ids: list[str] | None = None,
        older_than_s: int | None = None,
    ) -> PurgeReport:
        return self.backend.purge(
            self._ready(), run_ids=run_ids, experiment_ids=experiment_ids, older_than_s=older_than_s
        )

    def close(self) -> None:
        self.backend.close()

    # -- endpoints ----------------------------------------------------------------------------

    def create_endpoint(
        self,
        name: str,
        model: str | None = None,
        *,
        variants: list[dict[str, Any]] | None = None,
        shadow: str | dict[str, Any] | None = None,
        capture: float | None = None,
        batching: dict[str, Any] | None = None,
        scaling: dict[str, Any] | None = None,
        multi_model: dict[str, Any] | None = None,
        trust_code: bool = False,
        wait: bool = True,
        timeout_s: float = 300.0,
        progress: Any = None,
    ) -> EndpointPublic:
        """Serve ``model`` (``"fraud@champion"``, ``"fraud/3"``, ``"models:/..."``) at an HTTP
        endpoint, or ``variants=[{"name", "model", "weight"}, ...]`` for A/B traffic. With
        ``wait`` (default), returns once it is ``InService`` (raises if it fails to start)."""
        from shipyard.sdk.endpoints import wait_until_serving

        fields: dict[str, Any] = {"name": name, "trust_code": trust_code}
        if model is not None:
            fields["model"] = model
        if variants is not None:
            fields["variants"] = variants
        if shadow is not None:
            fields["shadow"] = {"model": shadow} if isinstance(shadow, str) else shadow
        if capture is not None:
            fields["capture"] = {"sample_rate": capture}
        if batching is not None:
            fields["batching"] = batching
        if scaling is not None:
            fields["scaling"] = scaling
        if multi_model is not None:
            fields["multi_model"] = multi_model
        body = parse(EndpointCreate, fields)
        p = self._ready()
        ep = self.backend.create_endpoint(p, body)
        if not wait:
            return ep
        return wait_until_serving(
            lambda: self.backend.get_endpoint(p, name), timeout_s=timeout_s, progress=progress
        )

    def get_endpoint(self, name: str) -> EndpointPublic:
        return self.backend.get_endpoint(self._ready(), name)

    def list_endpoints(
        self, *, page_size: int = 100, page_token: str | None = None, stats: bool = True
    ) -> EndpointsPublic:
        """Endpoints with status, variants, traffic and latency figures."""
        return self.backend.list_endpoints(
            self._ready(), page_size=page_size, page_token=page_token, stats=stats
        )

    def update_endpoint(
        self,
        name: str,
        model: str | None = None,
        *,
        variants: list[dict[str, Any]] | None = None,
        weights: dict[str, float] | None = None,
        **settings: Any,
    ) -> EndpointPublic:
        """Serve a new model (or variants, or weights) with no failed request. Other settings
        (``shadow``, ``capture``, ``batching``, ``scaling``, ``multi_model``, ``trust_code``)
        replace the current ones; ``shadow=None``/``capture=None`` remove them."""
        fields: dict[str, Any] = {}
        if model is not None:
            fields["model"] = model
        if variants is not None:
            fields["variants"] = variants
        if weights is not None:
            fields["weights"] = weights
        current = None
        for key, value in settings.items():
            if key in ("batching", "scaling") and isinstance(value, dict):
                # A partial setting keeps the rest: {"max_workers": 4} leaves min_workers be.
                current = current or self.get_endpoint(name)
                value = getattr(current, key).model_dump() | value
            elif key == "shadow" and isinstance(value, str):
                value = {"model": value}
            elif key == "capture" and isinstance(value, int | float):
                value = {"sample_rate": value}
            fields[key] = value
        return self.backend.update_endpoint(self._ready(), name, parse(EndpointUpdate, fields))

    def rollback_endpoint(self, name: str, to: int | None = None) -> EndpointPublic:
        """Serve an earlier deployment again (default: the one before the current)."""
        return self.backend.rollback_endpoint(self._ready(), name, to)

    def stop_endpoint(self, name: str) -> EndpointPublic:
        return self.backend.stop_endpoint(self._ready(), name)

    def start_endpoint(
        self, name: str, *, wait: bool = True, timeout_s: float = 300.0, progress: Any = None
    ) -> EndpointPublic:
        p = self._ready()
        ep = self.backend.start_endpoint(p, name)
        if not wait:
            return ep
        return wait_until_serving(
            lambda: self.backend.get_endpoint(p, name), timeout_s=timeout_s, progress=progress
        )

    def delete_endpoint(self, name: str) -> None:
        self.backend.delete_endpoint(self._ready(), name)

    def list_endpoint_deployments(self, name: str) -> DeploymentsPublic:
        return self.backend.list_endpoint_deployments(self._ready(), name)

    def list_endpoint_events(self, name: str, limit: int = 100) -> EndpointEventsPublic:
        return self.backend.list_endpoint_events(self._ready(), name, limit)

    def endpoint(self, name: str) -> Endpoint:
        """A handle to call an endpoint: ``client.endpoint("fraud").predict(df)``."""
        return Endpoint(self, name)

    # -- batch transform ----------------------------------------------------------------------

    def batch_transform(
        self,
        model: str,
        input: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        shards: int | None = None,
        join_columns: list[str] | None = None,
        join_all: bool = False,
        format: str = "parquet",
        input_format: str | None = None,
        parallelism: int | None = None,
        retries: int = 0,
        overwrite: bool = False,
        trust_code: bool = False,
        wait: bool = True,
        timeout_s: float | None = None,
        on_progress: Callable[[BatchJobPublic], None] | None = None,
    ) -> BatchJobPublic:
        """Run ``model`` (``"churn@champion"``, ``"churn/3"``, ``"models:/..."``) over a CSV or
        Parquet file in parallel shards, writing one file per shard and ``_manifest.json`` to
        the ``output`` folder. Relative paths are taken from the current directory. With
        ``wait`` (default) returns the finished job; ``on_progress(job)`` sees it as it runs."""
        model_ref = str(model)
        if Path(model_ref).expanduser().is_dir():  # a model folder on this machine
            model_ref = str(Path(model_ref).expanduser().resolve())
        body = validate(
            BatchJobCreate,
            model=model_ref,
            input=str(Path(input).expanduser().resolve()),
            output=str(Path(output).expanduser().resolve()),
            shards=shards,
            join_columns=join_columns,
            join_all=join_all,
            format=format,
            input_format=input_format,
            parallelism=parallelism,
            retries=retries,
            overwrite=overwrite,
            trust_code=trust_code,
            idempotency_key=uuid.uuid4().hex,
        )
        job = self.backend.create_batch_job(self._ready(), body)
        return self.wait_batch_job(job.id, timeout_s, on_progress) if wait else job

    def get_batch_job(self, job_id: str) -> BatchJobPublic:
        return self.backend.get_batch_job(self._ready(), job_id)

    def list_batch_jobs(
        self,
        *,
        status: BatchJobStatus | str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> BatchJobsPublic:
        return self.backend.list_batch_jobs(
            self._ready(),
            status=BatchJobStatus(status) if status else None,
            page_size=page_size,
            page_token=page_token,
        )

    def wait_batch_job(
        self,
        job_id: str,
        timeout_s: float | None = None,
        on_progress: Callable[[BatchJobPublic], None] | None = None,
        poll_s: float = 0.25,
    ) -> BatchJobPublic:
        """Poll until the job succeeds, fails or stops; raise ``TimeoutError`` past
        ``timeout_s`` (the job keeps running)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get_batch_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.status.final:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch job {job_id} is still {job.status.value}")
            time.sleep(poll_s)

    def stop_batch_job(
        self, job_id: str, *, wait: bool = True, timeout_s: float | None = 60.0
    ) -> BatchJobPublic:
        """Stop a job; its running shards are cancelled and it can be resumed later."""
        job = self.backend.stop_batch_job(self._ready(), job_id)
        return self.wait_batch_job(job_id, timeout_s) if wait else job

    def resume_batch_job(
        self,
        job_id: str,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
        on_progress: Callable[[BatchJobPublic], None] | None = None,
    ) -> BatchJobPublic:
        """Run again the shards of a stopped or failed job that did not succeed."""
        job = self.backend.resume_batch_job(self._ready(), job_id)
        return self.wait_batch_job(job_id, timeout_s, on_progress) if wait else job

    def delete_batch_job(self, job_id: str) -> None:
        self.backend.delete_batch_job(self._ready(), job_id)

    # -- asynchronous inference ---------------------------------------------------------------

    def submit_async(self, model: str, payload: Any) -> AsyncInferencePublic:
        """Queue a prediction and return at once; ``payload`` is any request shape
        (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``, CSV text) or a
        DataFrame. Fetch the answer with ``get_async`` or ``wait_async``."""
        if hasattr(payload, "to_dict") and hasattr(payload, "columns"):  # a DataFrame
            import json

            payload = {"dataframe_split": json.loads(payload.to_json(orient="split", index=False))}
        body = validate(
            AsyncInferenceCreate, model=model, payload=payload, idempotency_key=uuid.uuid4().hex
        )
        return self.backend.submit_async_inference(self._ready(), body)

    def get_async(self, request_id: str) -> AsyncInferencePublic:
        return self.backend.get_async_inference(self._ready(), request_id)

    def wait_async(
        self, request_id: str, timeout_s: float = 60.0, poll_s: float = 0.02
    ) -> AsyncInferencePublic:
        """Poll until the request succeeded or failed (see ``.result`` / ``.error``); raise
        ``TimeoutError`` past ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        delay = poll_s
        while True:
            req = self.get_async(request_id)
            if req.status.final:
                return req
            if time.monotonic() > deadline:
                raise TimeoutError(f"async inference {request_id} is still {req.status.value}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- model registry -----------------------------------------------------------------------

    def create_registered_model(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> RegisteredModelPublic:
        body = validate(RegisteredModelCreate, name=name, description=description, tags=tags or {})
        return self.backend.create_registered_model(self._ready(), body)

    def get_registered_model(self, name: str) -> RegisteredModelPublic:
        return self.backend.get_registered_model(self._ready(), name)

    def list_registered_models(
        self, name_like: str | None = None, page_size: int = 100, page_token: str | None = None
    ) -> RegisteredModelsPublic:
        return self.backend.list_registered_models(
            self._ready(), name_like=name_like, page_size=page_size, page_token=page_token
        )

    def update_registered_model(self, name: str, description: str) -> RegisteredModelPublic:
        body = validate(RegisteredModelUpdate, description=description)
        return self.backend.update_registered_model(self._ready(), name, body)

    def delete_registered_model(self, name: str) -> None:
        self.backend.delete_registered_model(self._ready(), name)

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        self.backend.set_registered_model_tag(self._ready(), name, key, str(value))

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self.backend.delete_registered_model_tag(self._ready(), name, key)

    def create_model_version(
        self,
        name: str,
        source: str,
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> ModelVersionPublic:
        """A new version of the registered model ``name`` from ``runs:/<run_id>/<path>``."""
        body = validate(ModelVersionCreate, source=source, description=description, tags=tags or {})
        return self.backend.create_model_version(self._ready(), name, body)

    def register_model(
        self, uri: str, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> ModelVersionPublic:
        """Register the model at ``runs:/<run_id>/<path>`` as a new version of ``name`` (the
        registered model is created when it does not exist)."""
        body = validate(
            RegisterModel, name=name, source=uri, description=description, tags=tags or {}
        )
        return self.backend.register_model(self._ready(), body)

    def get_model_version(self, name: str, version: int | str) -> ModelVersionPublic:
        return self.backend.get_model_version(self._ready(), name, _version(version))

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersionPublic:
        return self.backend.get_model_version_by_alias(self._ready(), name, alias)

    def list_model_versions(
        self, name: str, page_size: int = 100, page_token: str | None = None
    ) -> ModelVersionsPublic:
        self.get_registered_model(name)  # NotFound for a missing model, not an empty list
        return self.search_model_versions(
            f"name = '{name}'", page_size=page_size, page_token=page_token
        )

    def search_model_versions(
        self,
        filter: str | None = None,
        order_by: list[str] | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> ModelVersionsPublic:
        """Versions matching a filter such as ``"name = 'churn' AND alias = 'champion'"``."""
        body = validate(
            SearchModelVersions,
            filter=filter,
            order_by=order_by,
            page_size=page_size,
            page_token=page_token,
        )
        return self.backend.search_model_versions(self._ready(), body)

    def update_model_version(
        self, name: str, version: int | str, description: str
    ) -> ModelVersionPublic:
        body = validate(ModelVersionUpdate, description=description)
        return self.backend.update_model_version(self._ready(), name, _version(version), body)

    def delete_model_version(self, name: str, version: int | str) -> None:
        self.backend.delete_model_version(self._ready(), name, _version(version))

    def set_model_version_tag(self, name: str, version: int | str, key: str, value: Any) -> None:
        self.backend.set_model_version_tag(self._ready(), name, _version(version), key, str(value))

    def delete_model_version_tag(self, name: str, version: int | str, key: str) -> None:
        self.backend.delete_model_version_tag(self._ready(), name, _version(version), key)

    def set_alias(self, name: str, alias: str, version: int | str) -> ModelVersionPublic:
        """Point ``alias`` (``champion``, ``staging``) at a version of ``name``."""
        return self.backend.set_model_alias(self._ready(), name, alias, _version(version))

    def delete_alias(self, name: str, alias: str) -> None:
        self.backend.delete_model_alias(self._ready(), name, alias)

    def transition_approval(
        self, name: str, version: int | str, status: str, comment: str = ""
    ) -> ModelVersionPublic:
        body = validate(ApprovalCreate, status=status, comment=comment)
        return self.backend.transition_model_approval(self._ready(), name, _version(version), body)

    def approve(self, name: str, version: int | str, comment: str = "") -> ModelVersionPublic:
        return self.transition_approval(name, version, "approved", comment)

    def reject(self, name: str, version: int | str, comment: str = "") -> ModelVersionPublic:
        return self.transition_approval(name, version, "rejected", comment)

    def get_approval_history(self, name: str, version: int | str) -> list[ApprovalPublic]:
        return self.backend.get_model_approvals(self._ready(), name, _version(version))

    def get_model_lineage(self, name: str, version: int | str) -> ModelVersionLineage:
        return self.backend.get_model_lineage(self._ready(), name, _version(version))

    def resolve_model(self, uri: str) -> ResolvedModel:
        """A local, verified folder for ``models:/...`` or ``runs:/...`` (cached by digest)."""
        return self.backend.resolve_model(self._ready(), uri)

    def load_model(self, uri: str, *, trust_code: bool = False) -> LoadedModel:
        """Load ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/<id>/<path>``
        or a local model folder; every file's sha256 is checked against the registry's record
        first, and a pickled (python_function) model needs ``trust_code=True``."""
        from shipyard.models.format import load_model

        if not uri.startswith(("models:/", "runs:/")) and Path(uri).is_dir():
            return load_model(uri, trust_code=trust_code)
        resolved = self.resolve_model(uri)
        return load_model(
            resolved.local_path, trust_code=trust_code, expected_digest=resolved.digest
        )


def _version(version: int | str) -> int:
    """A version number as given by a user (``3`` or ``"3"``), checked."""
    text = str(version)
    if not text.isdigit() or int(text) < 1:
        from shipyard.core.errors import InvalidArgument

        raise InvalidArgument.for_field("version", f"expected a positive integer, got {version!r}")
    return int(text)
