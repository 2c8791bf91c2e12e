"""FastAPI dependencies for who is calling and what they may do in a project.

Every router declares its needs through these: ``Viewer``, ``Editor`` or ``ProjectAdmin`` for a
route under ``/projects/{project}``, ``CurrentPrincipal`` elsewhere. With auth off (the embedded,
loopback-only default) every caller is the local administrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from shipyard.core.errors import PermissionDenied, Unauthenticated
from shipyard.projects.schemas import Role
from shipyard.projects.service import LOCAL_PRINCIPAL, Principal, ProjectService


def project_service(request: Request) -> ProjectService:
    return request.app.state.projects  # type: ignore[no-any-return]


def current_principal(request: Request) -> Principal:
    if not request.app.state.settings.auth:
        return LOCAL_PRINCIPAL
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated(
            "this server needs an API token: send 'Authorization: Bearer <token>'"
        )
    principal = project_service(request).authenticate(secret.strip())
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True)
class Scope:
    """The project a request acts on and who acts."""

    project: str
    principal: Principal


def _require(role: Role):  # type: ignore[no-untyped-def]
    def dep(project: str, request: Request, principal: CurrentPrincipal) -> Scope:
        projects = project_service(request)
        if request.app.state.settings.auth:
            projects.authorize(principal, project, role)
        else:
            projects.project_id(project)  # 404 for a missing project, whoever asks
        return Scope(project=project, principal=principal)

    return dep


Viewer = Annotated[Scope, Depends(_require(Role.viewer))]
Editor = Annotated[Scope, Depends(_require(Role.editor))]
ProjectAdmin = Annotated[Scope, Depends(_require(Role.admin))]


def require_superuser(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied(f"{principal.name} is not an administrator")
    return principal


Superuser = Annotated[Principal, Depends(require_superuser)]
