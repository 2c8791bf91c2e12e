"""FastAPI dependencies for who is calling and what they may do in a project.

Every router declares its needs through these: ``Viewer``, ``Editor`` or ``ProjectAdmin`` for a
route under ``/projects/{project}``, ``CurrentPrincipal`` elsewhere. With auth off (the embedded,
loopback-only default) every caller is the local administrator.

They are ``async``: FastAPI runs a sync dependency in its thread pool, one trip there per
dependency per request. What may block (a token to check, a project not seen yet) goes to the
pool on its own; a known project on a server without auth costs no trip at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from shipyard.core.errors import PermissionDenied, Unauthenticated
from shipyard.projects.schemas import Role
from shipyard.projects.service import LOCAL_PRINCIPAL, Principal, ProjectService


def project_service(request: Request) -> ProjectService:
    return request.app.state.projects  # type: ignore[no-any-return]


async def current_principal(request: Request) -> Principal:
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
    principal = await run_in_threadpool(project_service(request).authenticate, secret.strip())
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True)
class Scope:
    """The project a request acts on and who acts."""

    project: str
    principal: Principal


def _require(role: Role):  # type: ignore[no-untyped-def]
    async def dep(project: str, request: Request, principal: CurrentPrincipal) -> Scope:
        projects = project_service(request)
        if request.app.state.settings.auth:
            await run_in_threadpool(projects.authorize, principal, project, role)
        elif not projects.knows(project):
            # 404 for a missing project, whoever asks
            await run_in_threadpool(projects.project_id, project)
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
