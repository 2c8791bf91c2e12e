"""HTTP for projects, users, tokens and memberships: thin over ``ProjectService``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from shipyard.core.errors import PermissionDenied
from shipyard.projects.deps import (
    CurrentPrincipal,
    ProjectAdmin,
    Superuser,
    Viewer,
    project_service,
)
from shipyard.projects.schemas import (
    MembershipPublic,
    MembershipSet,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPublic,
)
from shipyard.projects.service import ProjectService

router = APIRouter(tags=["projects"])
Projects = Annotated[ProjectService, Depends(project_service)]


@router.post("/projects", status_code=201)
def create_project(
    body: ProjectCreate, principal: CurrentPrincipal, svc: Projects
) -> ProjectPublic:
    return svc.create_project(body, owner=principal)


@router.get("/projects")
def list_projects(
    principal: CurrentPrincipal,
    svc: Projects,
    page_size: Annotated[int, Query(ge=1, le=10_000)] = 100,
    page_token: str | None = None,
) -> ProjectsPublic:
    return svc.list_projects(principal, page_size, page_token)


@router.get("/projects/{project}")
def get_project(scope: Viewer, svc: Projects) -> ProjectPublic:
    return svc.get_project(scope.project)


@router.delete("/projects/{project}", status_code=204)
def delete_project(scope: ProjectAdmin, svc: Projects) -> Response:
    svc.delete_project(scope.project)
    return Response(status_code=204)


@router.get("/projects/{project}/members")
def list_members(scope: Viewer, svc: Projects) -> list[MembershipPublic]:
    return svc.list_memberships(scope.project)


@router.put("/projects/{project}/members")
def set_member(body: MembershipSet, scope: ProjectAdmin, svc: Projects) -> MembershipPublic:
    return svc.set_membership(scope.project, body.user, body.role)


@router.delete("/projects/{project}/members/{user}", status_code=204)
def remove_member(user: str, scope: ProjectAdmin, svc: Projects) -> Response:
    svc.remove_membership(scope.project, user)
    return Response(status_code=204)


@router.get("/me")
def me(principal: CurrentPrincipal) -> dict[str, object]:
    return {"name": principal.name, "is_admin": principal.is_admin}


@router.post("/users", status_code=201)
def create_user(body: UserCreate, _: Superuser, svc: Projects) -> UserPublic:
    return svc.create_user(body)


@router.get("/users")
def list_users(_: Superuser, svc: Projects) -> list[UserPublic]:
    return svc.list_users()


def _self_or_admin(principal: CurrentPrincipal, user: str) -> None:
    if not principal.is_admin and principal.name != user:
        raise PermissionDenied(f"{principal.name} may manage only their own tokens")


@router.post("/users/{user}/tokens", status_code=201)
def create_token(
    user: str, body: TokenCreate, principal: CurrentPrincipal, svc: Projects
) -> TokenCreated:
    _self_or_admin(principal, user)
    return svc.create_token(user, body.name, body.expires_in_s)


@router.get("/users/{user}/tokens")
def list_tokens(user: str, principal: CurrentPrincipal, svc: Projects) -> list[TokenPublic]:
    _self_or_admin(principal, user)
    return svc.list_tokens(user)
