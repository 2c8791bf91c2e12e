"""The HTTP backend: the same calls as ``LocalBackend``, over the REST API.

Transport failures are retried with backoff when a retry cannot do harm: always when the
connection was refused (nothing reached the server), and for any transient failure (a dropped
connection, a 502/503/504) when the call is idempotent: reads, PUT/DELETE, and metric batches,
which carry a batch id the server applies once.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from shipyard.core.artifacts import clean_relpath, sha256_file
from shipyard.core.errors import Internal, Unavailable, error_from_dict
from shipyard.core.schemas import validate
from shipyard.projects.schemas import ProjectCreate, ProjectPublic
from shipyard.sdk.http_platform import PlatformCallsMixin, _q
from shipyard.sdk.keepalive import ConnectFailed, KeepAlivePool, SendFailed, usable_for
from shipyard.sdk.tuning_calls import HttpTuningCalls
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

_TRANSIENT_STATUS = {502, 503, 504}


class HttpBackend(PlatformCallsMixin, HttpTuningCalls):
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        retry_for_s: float = 120.0,
        timeout_s: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry_for_s = retry_for_s
        headers = {"user-agent": "shipyard-sdk"}
        token = token or os.environ.get("SHIPYARD_TOKEN")
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout_s)
        # The calls a script makes for every run (find its experiment, create it, end it) go
        # through the standard library's lighter client where it does the same on the wire.
        self._lean = (
            KeepAlivePool(self.url + "/api/v1", headers, timeout_s)
            if usable_for(self.url)
            else None
        )

    # -- transport --------------------------------------------------------------------------

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
        lean: bool = False,
    ) -> httpx.Response:
        """``lean``: through ``KeepAlivePool`` where it serves this URL (a JSON or empty body,
        no query): for the small calls made once or twice per run."""
        if idempotent is None:
            idempotent = method in ("GET", "PUT", "DELETE", "HEAD")
        body = orjson.dumps(json) if json is not None else content
        hdrs = dict(headers or {})
        if json is not None:
            hdrs["content-type"] = "application/json"
        pool = self._lean if lean and params is None and content is None else None
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.05
        while True:
            try:
                if pool is not None:
                    status, answer = pool.request(method, path, body, hdrs)
                    resp = httpx.Response(status, content=answer)
                else:
                    resp = self.http.request(
                        method, path, content=body, params=params, headers=hdrs
                    )
            except (httpx.ConnectError, ConnectFailed) as exc:  # nothing reached the server
                err: Exception = exc
            except (httpx.TransportError, SendFailed) as exc:
                if not idempotent:
                    raise Unavailable(f"{method} {path}: {exc}") from exc
                err = exc
            else:
                if resp.status_code in _TRANSIENT_STATUS and idempotent:
                    err = Unavailable(f"HTTP {resp.status_code}")
                elif resp.status_code >= 400:
                    try:
                        data = resp.json()
                    except ValueError:
                        data = {"error": {"code": "INTERNAL", "message": resp.text[:500]}}
                    raise error_from_dict(data, resp.status_code)
                else:
                    return resp
            if time.monotonic() + delay > deadline:
                raise Unavailable(f"{method} {self.url}{path}: server unavailable ({err})") from err
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return orjson.loads(self._request(method, path, **kw).content)

    @staticmethod
    def _p(project: str) -> str:
        return f"/projects/{_q(project)}"

    # -- projects ---------------------------------------------------------------------------

    def ensure_project(self, project: str) -> ProjectPublic:
        from shipyard.core.errors import AlreadyExists, NotFound

        try:
            return ProjectPublic.model_validate(self._json("GET", self._p(project)))
        except NotFound:
            try:
                return ProjectPublic.model_validate(
                    self._json(
                        "POST", "/projects", json=validate(ProjectCreate, name=project).model_dump()
                    )
                )
            except AlreadyExists:
                return ProjectPublic.model_validate(self._json("GET", self._p(project)))

    # -- experiments ------------------------------------------------------------------------

    def create_experiment(self, project: str, body: ExperimentCreate) -> ExperimentPublic:
        return ExperimentPublic.model_validate(
            self._json("POST", f"{self._p(project)}/experiments", json=body.model_dump(mode="json"))
        )

    def get_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        return ExperimentPublic.model_validate(
            self._json("GET", f"{self._p(project)}/experiments/{_q(experiment_id)}")
        )

    def get_experiment_by_name(self, project: str, name: str) -> ExperimentPublic:
        return ExperimentPublic.model_validate(
            self._json("GET", f"{self._p(project)}/experiments/by-name/{_q(name)}", lean=True)
        )

    def list_experiments(
        self,
        project: str,
        *,
        name_like: str | None = None,
        lifecycle: Lifecycle = Lifecycle.active,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> ExperimentsPublic:
        params = {"lifecycle": lifecycle.value, "page_size": page_size}
        if name_like:
            params["name_like"] = name_like
        if page_token:
            params["page_token"] = page_token
        return ExperimentsPublic.model_validate(
            self._json("GET", f"{self._p(project)}/experiments", params=params)
        )

    def update_experiment(
        self, project: str, experiment_id: str, body: ExperimentUpdate
    ) -> ExperimentPublic:
        return ExperimentPublic.model_validate(
            self._json(
                "PATCH",
                f"{self._p(project)}/experiments/{_q(experiment_id)}",
                json=body.model_dump(mode="json", exclude_none=True),
            )
        )

    def delete_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        return ExperimentPublic.model_validate(
            self._json("DELETE", f"{self._p(project)}/experiments/{_q(experiment_id)}")
        )

    def restore_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        return ExperimentPublic.model_validate(
            self._json(
                "POST",
                f"{self._p(project)}/experiments/{_q(experiment_id)}/restore",
                idempotent=True,
            )
        )

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, project: str, body: RunCreate) -> RunPublic:
        return RunPublic.model_validate(
            self._json(
                "POST", f"{self._p(project)}/runs", json=body.model_dump(mode="json"), lean=True
            )
        )

    def get_run(self, project: str, run_id: str) -> RunPublic:
        return RunPublic.model_validate(
            self._json("GET", f"{self._p(project)}/runs/{_q(run_id)}", lean=True)
        )

    def update_run(self, project: str, run_id: str, body: RunUpdate) -> RunPublic:
        return RunPublic.model_validate(
            self._json(
                "PATCH",
                f"{self._p(project)}/runs/{_q(run_id)}",
                json=body.model_dump(mode="json", exclude_none=True),
                idempotent=True,
                lean=True,
            )
        )

    def update_run_quietly(self, project: str, run_id: str, body: RunUpdate) -> None:
        """``update_run`` answered with no body (the server reads nothing back for it)."""
        self._request(
            "PATCH",
            f"{self._p(project)}/runs/{_q(run_id)}",
            json=body.model_dump(mode="json", exclude_none=True),
            headers={"Prefer": "return=minimal"},
            idempotent=True,
            lean=True,
        )

    def delete_run(self, project: str, run_id: str) -> None:
        self._request("DELETE", f"{self._p(project)}/runs/{_q(run_id)}")

    def restore_run(self, project: str, run_id: str) -> None:
        self._request("POST", f"{self._p(project)}/runs/{_q(run_id)}/restore", idempotent=True)

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
        # A batch always carries an id, so retrying it after a lost answer is harmless.
        if metrics and not params and not tags:
            return self.log_metric_columns(project, run_id, metrics, batch_id=batch_id)
        body = {
            "metrics": [
                {"key": k, "value": v, "step": s, "timestamp": t} for k, v, s, t in metrics
            ],
            "params": [{"key": k, "value": v} for k, v in params],
            "tags": [{"key": k, "value": v} for k, v in tags],
            "batch_id": batch_id or uuid.uuid4().hex,
        }
        out = self._json(
            "POST", f"{self._p(project)}/runs/{_q(run_id)}/batch", json=body, idempotent=True
        )
        return bool(out.get("applied", True))

    def log_metric_columns(
        self,
        project: str,
        run_id: str,
        metrics: Sequence[MetricRow],
        *,
        batch_id: str | None = None,
    ) -> bool:
        """Metric points as four columns (``POST .../runs/{id}/metrics``): the server parses
        them once instead of validating one object per point."""
        keys, values, steps, timestamps = zip(*metrics, strict=True)
        body = {
            "keys": keys,
            "values": values,
            "steps": steps,
            "timestamps": timestamps,
            "batch_id": batch_id or uuid.uuid4().hex,
        }
        out = self._json(
            "POST", f"{self._p(project)}/runs/{_q(run_id)}/metrics", json=body, idempotent=True
        )
        return bool(out.get("applied", True))

    def delete_tag(self, project: str, run_id: str, key: str) -> None:
        self._request("DELETE", f"{self._p(project)}/runs/{_q(run_id)}/tags/{_q(key)}")

    def log_inputs(self, project: str, run_id: str, inputs: list[DatasetInput]) -> None:
        self._request(
            "POST",
            f"{self._p(project)}/runs/{_q(run_id)}/inputs",
            json=[i.model_dump(mode="json", by_alias=True) for i in inputs],
            idempotent=True,
        )

    def get_metric_history(self, project: str, run_id: str, key: str) -> MetricHistory:
        return MetricHistory.model_validate(
            self._json("GET", f"{self._p(project)}/runs/{_q(run_id)}/metrics/{_q(key)}")
        )

    def search_runs(
        self, project: str, body: SearchRuns, include_count: bool = False
    ) -> RunsPublic:
        return RunsPublic.model_validate(
            self._json(
                "POST",
                f"{self._p(project)}/runs/search",
                json=body.model_dump(mode="json"),
                params={"include_count": str(include_count).lower()},
                idempotent=True,
            )
        )

    def compare_runs(
        self, project: str, run_ids: list[str], metric_keys: list[str] | None = None
    ) -> RunComparison:
        params: list[tuple[str, str]] = [("run_id", r) for r in run_ids]
        params += [("metric_key", k) for k in metric_keys or []]
        return RunComparison.model_validate(
            self._json("POST", f"{self._p(project)}/runs/compare", params=params, idempotent=True)
        )

    def purge(
        self,
        project: str,
        *,
        run_ids: list[str] | None = None,
        experiment_ids: list[str] | None = None,
        older_than_s: int | None = None,
    ) -> PurgeReport:
        params: list[tuple[str, str]] = [("run_id", r) for r in run_ids or []]
        params += [("experiment_id", e) for e in experiment_ids or []]
        if older_than_s is not None:
            params.append(("older_than_s", str(older_than_s)))
        return PurgeReport.model_validate(
            self._json("POST", f"{self._p(project)}/purge", params=params, idempotent=True)
        )

    # -- artifacts --------------------------------------------------------------------------

    def log_artifact(
        self,
        project: str,
        run_id: str,
        local_path: str | os.PathLike[str],
        artifact_path: str | None = None,
    ) -> list[ArtifactPublic]:
        src = Path(local_path)
        if not src.exists():
            from shipyard.core.errors import InvalidArgument

            raise InvalidArgument.for_field("local_path", f"{src} does not exist")
        base = clean_relpath(artifact_path or src.name, "artifact_path")
        files = (
            [
                (p, f"{base}/{p.relative_to(src).as_posix()}")
                for p in sorted(src.rglob("*"))
                if p.is_file()
            ]
            if src.is_dir()
            else [(src, base)]
        )
        out = []
        for fpath, rel in files:
            digest, _ = sha256_file(fpath)
            with open(fpath, "rb") as f:
                resp = self._request(
                    "PUT",
                    f"{self._p(project)}/runs/{_q(run_id)}/artifacts/{quote(rel)}",
                    content=f.read(),
                    headers={
                        "x-shipyard-sha256": digest,
                        "content-type": "application/octet-stream",
                    },
                )
            out.append(ArtifactPublic.model_validate(orjson.loads(resp.content)))
        return out

    def list_artifacts(
        self, project: str, run_id: str, path: str | None = None, recursive: bool = False
    ) -> ArtifactsPublic:
        params: dict[str, Any] = {"recursive": str(recursive).lower()}
        if path:
            params["path"] = path
        return ArtifactsPublic.model_validate(
            self._json("GET", f"{self._p(project)}/runs/{_q(run_id)}/artifacts", params=params)
        )

    def download_artifacts(
        self, project: str, run_id: str, path: str | None, dest: str | os.PathLike[str]
    ) -> Path:
        listing = self.list_artifacts(project, run_id, None, recursive=True)
        rel = clean_relpath(path) if path else ""
        chosen = [
            a for a in listing.files if not rel or a.path == rel or a.path.startswith(rel + "/")
        ]
        if not chosen:
            from shipyard.core.errors import NotFound

            raise NotFound(f"artifact {path!r} not found in run {run_id!r}", {"field": "path"})
        root = Path(dest).resolve()
        for a in chosen:
            target = root / a.path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
            h = hashlib.sha256()
            try:
                url = f"{self._p(project)}/runs/{_q(run_id)}/artifacts/{quote(a.path)}"
                with self.http.stream("GET", url) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise error_from_dict(resp.json(), resp.status_code)
                    with open(tmp, "wb") as out:
                        for chunk in resp.iter_bytes(1 << 20):
                            h.update(chunk)
                            out.write(chunk)
                if h.hexdigest() != a.digest:
                    raise Internal(f"artifact {a.path!r} arrived corrupt (sha256 mismatch)")
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return root / rel if rel else root

    def close(self) -> None:
        self.http.close()
        if self._lean is not None:
            self._lean.close()
