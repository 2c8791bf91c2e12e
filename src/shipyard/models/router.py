"""HTTP for the model registry: thin over ``ModelService``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from shipyard.models.schemas import (
    AliasSet,
    ApprovalCreate,
    ApprovalPublic,
    ModelFile,
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
    ResolvedModelInfo,
    SearchModelVersions,
)
from shipyard.models.service import ModelService
from shipyard.projects.deps import Editor, Viewer


def model_service(request: Request) -> ModelService:
    return request.app.state.models  # type: ignore[no-any-return]


Models = Annotated[ModelService, Depends(model_service)]
router = APIRouter(prefix="/projects/{project}", tags=["models"])
PageSize = Annotated[int, Query(ge=1, le=10_000)]


# -- registered models ------------------------------------------------------------------------


@router.post("/models", status_code=201)
def create_registered_model(
    body: RegisteredModelCreate, scope: Editor, svc: Models
) -> RegisteredModelPublic:
    return svc.create_registered_model(scope.project, body, created_by=scope.principal.name)


@router.get("/models")
def list_registered_models(
    scope: Viewer,
    svc: Models,
    name_like: str | None = None,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> RegisteredModelsPublic:
    return svc.list_registered_models(
        scope.project, name_like=name_like, page_size=page_size, page_token=page_token
    )


@router.get("/models/{name}")
def get_registered_model(name: str, scope: Viewer, svc: Models) -> RegisteredModelPublic:
    return svc.get_registered_model(scope.project, name)


@router.patch("/models/{name}")
def update_registered_model(
    name: str, body: RegisteredModelUpdate, scope: Editor, svc: Models
) -> RegisteredModelPublic:
    return svc.update_registered_model(scope.project, name, body)


@router.delete("/models/{name}", status_code=204)
def delete_registered_model(name: str, scope: Editor, svc: Models) -> Response:
    svc.delete_registered_model(scope.project, name)
    return Response(status_code=204)


@router.put("/models/{name}/tags/{key:path}", status_code=204)
def set_model_tag(
    name: str, key: str, body: dict[str, str], scope: Editor, svc: Models
) -> Response:
    svc.set_model_tag(scope.project, name, key, body.get("value", ""))
    return Response(status_code=204)


@router.delete("/models/{name}/tags/{key:path}", status_code=204)
def delete_model_tag(name: str, key: str, scope: Editor, svc: Models) -> Response:
    svc.delete_model_tag(scope.project, name, key)
    return Response(status_code=204)


# -- aliases ----------------------------------------------------------------------------------


@router.put("/models/{name}/aliases/{alias}")
def set_alias(
    name: str, alias: str, body: AliasSet, scope: Editor, svc: Models
) -> ModelVersionPublic:
    return svc.set_alias(scope.project, name, alias, body.version, actor=scope.principal.name)


@router.get("/models/{name}/aliases/{alias}")
def get_version_by_alias(name: str, alias: str, scope: Viewer, svc: Models) -> ModelVersionPublic:
    return svc.get_version_by_alias(scope.project, name, alias)


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
def delete_alias(name: str, alias: str, scope: Editor, svc: Models) -> Response:
    svc.delete_alias(scope.project, name, alias)
    return Response(status_code=204)


# -- versions ---------------------------------------------------------------------------------


@router.post("/models/{name}/versions", status_code=201)
def create_model_version(
    name: str, body: ModelVersionCreate, scope: Editor, svc: Models
) -> ModelVersionPublic:
    return svc.create_model_version(scope.project, name, body, created_by=scope.principal.name)


@router.get("/models/{name}/versions")
def list_model_versions(
    name: str,
    scope: Viewer,
    svc: Models,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> ModelVersionsPublic:
    return svc.list_model_versions(scope.project, name, page_size=page_size, page_token=page_token)


@router.get("/models/{name}/versions/{version}")
def get_model_version(name: str, version: int, scope: Viewer, svc: Models) -> ModelVersionPublic:
    return svc.get_model_version(scope.project, name, version)


@router.patch("/models/{name}/versions/{version}")
def update_model_version(
    name: str, version: int, body: ModelVersionUpdate, scope: Editor, svc: Models
) -> ModelVersionPublic:
    return svc.update_model_version(scope.project, name, version, body)


@router.delete("/models/{name}/versions/{version}", status_code=204)
def delete_model_version(name: str, version: int, scope: Editor, svc: Models) -> Response:
    svc.delete_model_version(scope.project, name, version)
    return Response(status_code=204)


@router.put("/models/{name}/versions/{version}/tags/{key:path}", status_code=204)
def set_version_tag(
    name: str, version: int, key: str, body: dict[str, str], scope: Editor, svc: Models
) -> Response:
    svc.set_version_tag(scope.project, name, version, key, body.get("value", ""))
    return Response(status_code=204)


@router.delete("/models/{name}/versions/{version}/tags/{key:path}", status_code=204)
def delete_version_tag(name: str, version: int, key: str, scope: Editor, svc: Models) -> Response:
    svc.delete_version_tag(scope.project, name, version, key)
    return Response(status_code=204)


@router.post("/models/{name}/versions/{version}/approvals")
def transition_approval(
    name: str, version: int, body: ApprovalCreate, scope: Editor, svc: Models
) -> ModelVersionPublic:
    return svc.transition_approval(
        scope.project, name, version, body.status, actor=scope.principal.name, comment=body.comment
    )


@router.get("/models/{name}/versions/{version}/approvals")
def approval_history(name: str, version: int, scope: Viewer, svc: Models) -> list[ApprovalPublic]:
    return svc.approval_history(scope.project, name, version)


@router.get("/models/{name}/versions/{version}/lineage")
def get_lineage(name: str, version: int, scope: Viewer, svc: Models) -> ModelVersionLineage:
    return svc.get_lineage(scope.project, name, version)


@router.get("/models/{name}/versions/{version}/files")
def version_files(name: str, version: int, scope: Viewer, svc: Models) -> list[ModelFile]:
    return svc.version_files(scope.project, name, version)


@router.get("/models/{name}/versions/{version}/files/{path:path}")
def download_version_file(
    name: str, version: int, path: str, scope: Viewer, svc: Models
) -> StreamingResponse:
    chunks = svc.iter_version_file(scope.project, name, version, path)
    return StreamingResponse(chunks, media_type="application/octet-stream")


# -- across models ----------------------------------------------------------------------------


@router.post("/model-versions", status_code=201)
def register_model(body: RegisterModel, scope: Editor, svc: Models) -> ModelVersionPublic:
    """Create the registered model if needed, then a version from ``source``."""
    version = ModelVersionCreate(source=body.source, description=body.description, tags=body.tags)
    return svc.register_model(scope.project, body.name, version, created_by=scope.principal.name)


@router.post("/model-versions/search")
def search_model_versions(
    body: SearchModelVersions, scope: Viewer, svc: Models
) -> ModelVersionsPublic:
    return svc.search_model_versions(scope.project, body)


@router.get("/model-versions")
def search_model_versions_get(
    scope: Viewer,
    svc: Models,
    filter: str | None = None,
    order_by: Annotated[list[str] | None, Query()] = None,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> ModelVersionsPublic:
    body = SearchModelVersions(
        filter=filter, order_by=order_by, page_size=page_size, page_token=page_token
    )
    return svc.search_model_versions(scope.project, body)


@router.get("/model-versions/resolve")
def resolve_model_uri(uri: str, scope: Viewer, svc: Models) -> ResolvedModelInfo:
    """What a model URI points at: the version, its digest and files (to fetch and verify)."""
    return svc.resolve_info(scope.project, uri)
