"""MLflow's model registry REST API 2.0, thin over ``ModelService``.

The stock ``mlflow`` client pointed at a Shipyard server creates registered models, creates
versions from a run (``runs:/<run_id>/<path>``, or the ``mlflow-artifacts:/`` location the
client resolves it to), sets and gets aliases, and searches versions, in the project
``Settings.mlflow_project``, where Shipyard's SDK, CLI and Studio see them like any other.

What differs from MLflow's server, by design:
- Names are Shipyard's (letters, digits, ``_ . -``); a name MLflow allows but Shipyard does not
  is ``INVALID_PARAMETER_VALUE`` naming the field.
- A version is ``READY`` at once, and its stage is always ``None`` (stages are deprecated in
  MLflow; Shipyard has aliases and an approval status instead, searchable as
  ``approval_status``).
- A version made from a folder without a Shipyard manifest (a model MLflow logged) is kept with
  flavor ``mlflow``; MLflow loads it through ``get-download-uri``, Shipyard cannot.
Routes, errors and auth are those of ``tracking.mlflow_compat``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.core.paging import check_page_size
from shipyard.core.schemas import validate
from shipyard.core.timeutil import dt_to_ms
from shipyard.models import search
from shipyard.models.schemas import (
    ModelVersionCreate,
    ModelVersionPublic,
    ModelVersionUpdate,
    RegisteredModelCreate,
    RegisteredModelPublic,
    RegisteredModelUpdate,
    SearchModelVersions,
)
from shipyard.models.service import ModelService
from shipyard.tracking import mlflow_translate as mt
from shipyard.tracking.mlflow_compat import (
    API,
    JsonBody,
    MlflowRoute,
    Reader,
    Writer,
    _Ids,
    _query,
)
from shipyard.tracking.mlflow_search import parse_mlflow_filter

router = APIRouter(route_class=MlflowRoute, tags=["mlflow"])
RM = f"{API}/registered-models"
MV = f"{API}/model-versions"
# MLflow's defaults for max_results.
DEFAULT_MODELS_PAGE = 100
DEFAULT_VERSIONS_PAGE = 10_000


def _models(request: Request) -> ModelService:
    return request.app.state.models  # type: ignore[no-any-return]


Models = Annotated[ModelService, Depends(_models)]


# -- shapes -----------------------------------------------------------------------------------


def _pairs(d: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in d.items()]


def version_out(v: ModelVersionPublic) -> dict[str, Any]:
    """An ``mlflow.entities.model_registry.ModelVersion``."""
    return {
        "name": v.name,
        "version": str(v.version),
        "creation_timestamp": dt_to_ms(v.created_at),
        "last_updated_timestamp": dt_to_ms(v.updated_at),
        "user_id": v.created_by or "",
        "current_stage": "None",
        "description": v.description,
        "source": v.source_uri,
        "run_id": v.run_id or "",
        "status": "READY",
        "tags": _pairs(v.tags),
        "aliases": list(v.aliases),
    }


def model_out(m: RegisteredModelPublic, latest: ModelVersionPublic | None) -> dict[str, Any]:
    """An ``mlflow.entities.model_registry.RegisteredModel``."""
    return {
        "name": m.name,
        "creation_timestamp": dt_to_ms(m.created_at),
        "last_updated_timestamp": dt_to_ms(m.updated_at),
        "user_id": m.created_by or "",
        "description": m.description,
        "latest_versions": [version_out(latest)] if latest is not None else [],
        "tags": _pairs(m.tags),
        "aliases": [{"alias": a, "version": str(v)} for a, v in m.aliases.items()],
    }


def _model(svc: ModelService, project: str, name: str) -> dict[str, Any]:
    m = svc.get_registered_model(project, name)
    latest = (
        svc.get_model_version(project, name, m.latest_version)
        if m.latest_version is not None
        else None
    )
    return model_out(m, latest)


def _source_in(source: str) -> str:
    """MLflow's ``source`` as a Shipyard ``runs:/`` URI."""
    if source.startswith("runs:/"):
        return source
    if source.startswith("mlflow-artifacts:/"):
        where = mt.split_artifact_path(source[len("mlflow-artifacts:/") :])
        if where is not None and where[1] is not None:
            return f"runs:/{where[0]}/{where[1]}"
    raise InvalidArgument.for_field(
        "source",
        f"expected runs:/<run_id>/<path> or a run's mlflow-artifacts:/ location, got {source!r}",
    )


def _version_number(f: mt.Fields) -> int:
    return mt.to_int(f.req("version"), "version")


def _max_results(f: mt.Fields, default: int) -> int:
    n = f.integer("max_results")
    return check_page_size(default if n is None else n)


def _order_by(f: mt.Fields) -> list[str]:
    return [str(o) for o in f.items("order_by")]


# -- registered models --------------------------------------------------------------------------


@router.post(f"{RM}/create")
def create_registered_model(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    created = svc.create_registered_model(
        scope.project,
        validate(
            RegisteredModelCreate,
            name=f.req("name"),
            description=f.text("description") or "",
            tags=dict(f.key_values("tags")),
        ),
        created_by=scope.principal.name,
    )
    return {"registered_model": model_out(created, None)}


@router.get(f"{RM}/get")
def get_registered_model(request: Request, scope: Reader, svc: Models) -> dict[str, Any]:
    return {"registered_model": _model(svc, scope.project, _query(request).req("name"))}


@router.patch(f"{RM}/update")
def update_registered_model(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    name = f.req("name")
    update = validate(RegisteredModelUpdate, description=f.text("description") or "")
    svc.update_registered_model(scope.project, name, update)
    return {"registered_model": _model(svc, scope.project, name)}


@router.delete(f"{RM}/delete")
def delete_registered_model(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    svc.delete_registered_model(scope.project, mt.Fields(body).req("name"))
    return {}


_NEGATIVE = {"!=", "NOT IN", "NOT LIKE", "NOT ILIKE"}


def _model_matches(m: RegisteredModelPublic, clauses: list[Any]) -> bool:
    """MLflow's registry semantics: a negative comparison on a tag the model lacks is true (its
    client adds ``tags.`mlflow.prompt.is_prompt` != 'true'`` to every model search)."""
    for c in clauses:
        if c.kind == "tag":
            actual = m.tags.get(c.key)
            if actual is None and c.op in _NEGATIVE:
                continue
        else:
            actual = m.name
        if not search._compare(actual, c.op, c.value):
            return False
    return True


def _search_models(f: mt.Fields, project: str, svc: ModelService) -> dict[str, Any]:
    clauses = parse_mlflow_filter(f.text("filter"), {"name"})
    size = _max_results(f, DEFAULT_MODELS_PAGE)
    like = next(
        (str(c.value) for c in clauses if c.kind == "attribute" and c.op in ("LIKE", "ILIKE")),
        None,
    )
    page = svc.list_registered_models(
        project, name_like=like, page_size=size, page_token=f.text("page_token")
    )
    found = [model_out(m, None) for m in page.data if _model_matches(m, clauses)]
    out: dict[str, Any] = {"registered_models": found}
    if page.next_page_token:
        out["next_page_token"] = page.next_page_token
    return out


@router.get(f"{RM}/search")
def search_registered_models(request: Request, scope: Reader, svc: Models) -> dict[str, Any]:
    return _search_models(_query(request, "order_by"), scope.project, svc)


@router.post(f"{RM}/search")
def search_registered_models_post(
    scope: Reader, svc: Models, body: JsonBody = None
) -> dict[str, Any]:
    return _search_models(mt.Fields(body), scope.project, svc)


@router.post(f"{RM}/set-tag")
def set_registered_model_tag(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    svc.set_model_tag(scope.project, f.req("name"), f.req("key"), f.text("value") or "")
    return {}


@router.delete(f"{RM}/delete-tag")
def delete_registered_model_tag(
    scope: Writer, svc: Models, body: JsonBody = None
) -> dict[str, Any]:
    f = mt.Fields(body)
    svc.delete_model_tag(scope.project, f.req("name"), f.req("key"))
    return {}


@router.post(f"{RM}/alias")
def set_alias(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    svc.set_alias(
        scope.project, f.req("name"), f.req("alias"), _version_number(f), scope.principal.name
    )
    return {}


@router.delete(f"{RM}/alias")
def delete_alias(
    request: Request, scope: Writer, svc: Models, body: JsonBody = None
) -> dict[str, Any]:
    # MLflow's client sends DELETE parameters in the query string; accept a body as well.
    f = mt.Fields(body) if body else _query(request)
    svc.delete_alias(scope.project, f.req("name"), f.req("alias"))
    return {}


@router.get(f"{RM}/alias")
def get_model_version_by_alias(request: Request, scope: Reader, svc: Models) -> dict[str, Any]:
    f = _query(request)
    v = svc.get_version_by_alias(scope.project, f.req("name"), f.req("alias"))
    return {"model_version": version_out(v)}


@router.post(f"{RM}/get-latest-versions")
def get_latest_versions(scope: Reader, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    """The newest version (every version's stage is ``None``; other stages have none)."""
    f = mt.Fields(body)
    name = f.req("name")
    stages = [str(s).lower() for s in f.items("stages")]
    m = svc.get_registered_model(scope.project, name)
    if m.latest_version is None or (stages and "none" not in stages):
        return {"model_versions": []}
    return {
        "model_versions": [
            version_out(svc.get_model_version(scope.project, name, m.latest_version))
        ]
    }


# -- model versions -----------------------------------------------------------------------------


@router.post(f"{MV}/create")
def create_model_version(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    source = _source_in(f.req("source"))
    run_id = f.text("run_id")
    if run_id and source.split("/")[1] != run_id:
        raise InvalidArgument.for_field("run_id", f"the source {source!r} is not in run {run_id!r}")
    v = svc.create_model_version(
        scope.project,
        f.req("name"),
        validate(
            ModelVersionCreate,
            source=source,
            description=f.text("description") or "",
            tags=dict(f.key_values("tags")),
        ),
        created_by=scope.principal.name,
        require_manifest=False,
    )
    return {"model_version": version_out(v)}


@router.get(f"{MV}/get")
def get_model_version(request: Request, scope: Reader, svc: Models) -> dict[str, Any]:
    f = _query(request)
    v = svc.get_model_version(scope.project, f.req("name"), _version_number(f))
    return {"model_version": version_out(v)}


@router.patch(f"{MV}/update")
def update_model_version(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    update = validate(ModelVersionUpdate, description=f.text("description") or "")
    v = svc.update_model_version(scope.project, f.req("name"), _version_number(f), update)
    return {"model_version": version_out(v)}


@router.delete(f"{MV}/delete")
def delete_model_version(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    svc.delete_model_version(scope.project, f.req("name"), _version_number(f))
    return {}


def _search_versions(f: mt.Fields, project: str, svc: ModelService) -> dict[str, Any]:
    page = svc.search_model_versions(
        project,
        validate(
            SearchModelVersions,
            filter=f.text("filter"),
            order_by=_order_by(f) or None,
            page_size=_max_results(f, DEFAULT_VERSIONS_PAGE),
            page_token=f.text("page_token"),
        ),
    )
    out: dict[str, Any] = {"model_versions": [version_out(v) for v in page.data]}
    if page.next_page_token:
        out["next_page_token"] = page.next_page_token
    return out


@router.get(f"{MV}/search")
def search_model_versions(request: Request, scope: Reader, svc: Models) -> dict[str, Any]:
    return _search_versions(_query(request, "order_by"), scope.project, svc)


@router.post(f"{MV}/search")
def search_model_versions_post(scope: Reader, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    return _search_versions(mt.Fields(body), scope.project, svc)


@router.post(f"{MV}/set-tag")
def set_model_version_tag(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    svc.set_version_tag(
        scope.project, f.req("name"), _version_number(f), f.req("key"), f.text("value") or ""
    )
    return {}


@router.delete(f"{MV}/delete-tag")
def delete_model_version_tag(scope: Writer, svc: Models, body: JsonBody = None) -> dict[str, Any]:
    f = mt.Fields(body)
    svc.delete_version_tag(scope.project, f.req("name"), _version_number(f), f.req("key"))
    return {}


@router.get(f"{MV}/get-download-uri")
def get_download_uri(request: Request, scope: Reader, svc: Models) -> dict[str, Any]:
    """Where MLflow's client downloads a version's files: its run's artifacts, via the proxy."""
    f = _query(request)
    v = svc.get_model_version(scope.project, f.req("name"), _version_number(f))
    if not v.run_id or not v.source_path:
        raise NotFound(f"version {v.version} of {v.name!r} has no source run")
    run = svc.tracking.get_run(scope.project, v.run_id)
    experiment_id = _Ids(svc.tracking, scope.project).outward(run.experiment_id)
    return {"artifact_uri": f"{mt.artifact_uri(experiment_id, run.id)}/{v.source_path}"}
