"""Who is looking at a Studio page: the local administrator with auth off, otherwise the owner
of the API token kept in Studio's cookie (set by the login page)."""

from __future__ import annotations

from fastapi import Request

from shipyard.core.errors import Unauthenticated
from shipyard.projects.schemas import Role
from shipyard.projects.service import LOCAL_PRINCIPAL, Principal, ProjectService

COOKIE = "shipyard_token"
COOKIE_MAX_AGE_S = 30 * 24 * 3600


class LoginRequired(Exception):
    """No valid token in the cookie: the page redirects to the login page."""


def auth_on(request: Request) -> bool:
    return bool(request.app.state.settings.auth)


def projects_of(request: Request) -> ProjectService:
    return request.app.state.projects  # type: ignore[no-any-return]


def studio_principal(request: Request) -> Principal:
    if not auth_on(request):
        return LOCAL_PRINCIPAL
    cached = getattr(request.state, "studio_principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    secret = request.cookies.get(COOKIE, "").strip()
    if not secret:
        raise LoginRequired()
    try:
        principal = projects_of(request).authenticate(secret)
    except Unauthenticated:
        raise LoginRequired() from None
    request.state.studio_principal = principal
    return principal


def require_viewer(request: Request, project: str) -> Principal:
    """The caller, allowed to see ``project``; ``NotFound`` for a missing project and
    ``PermissionDenied`` for one the caller has no role in."""
    principal = studio_principal(request)
    projects = projects_of(request)
    if auth_on(request):
        projects.authorize(principal, project, Role.viewer)
    else:
        projects.project_id(project)
    return principal


def safe_next(target: str | None) -> str:
    """Where to go after login: a path on this site only (never ``//host`` or a full URL)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target
