"""API types of the projects domain."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from shipyard.core.schemas import Model, Page, Slug


class Role(StrEnum):
    viewer = "viewer"
    editor = "editor"
    admin = "admin"


ROLE_RANK = {Role.viewer: 1, Role.editor: 2, Role.admin: 3}


class ProjectCreate(Model):
    name: Slug
    description: str = Field(default="", max_length=20_000)


class ProjectPublic(Model):
    id: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


ProjectsPublic = Page[ProjectPublic]


class UserCreate(Model):
    name: Slug
    is_admin: bool = False


class UserPublic(Model):
    id: str
    name: str
    is_admin: bool
    created_at: datetime
    updated_at: datetime


UsersPublic = Page[UserPublic]


# A hundred years: the expiry is stored in 64-bit milliseconds, so it must be bounded.
MAX_TOKEN_LIFETIME_S = 100 * 365 * 24 * 3600


class TokenCreate(Model):
    name: str = Field(default="", max_length=128)
    expires_in_s: int | None = Field(default=None, gt=0, le=MAX_TOKEN_LIFETIME_S)


class TokenPublic(Model):
    id: str
    user: str
    name: str
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class TokenCreated(TokenPublic):
    # Shown once: only its sha256 is stored.
    secret: str


class MembershipSet(Model):
    user: Slug
    role: Role


class MembershipPublic(Model):
    project: str
    user: str
    role: Role
