"""Projects, users, tokens and roles. The only module that queries the projects tables."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.db import Database
from shipyard.core.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.schemas import validate
from shipyard.core.timeutil import ms_to_dt, now_ms
from shipyard.projects.schemas import (
    MAX_TOKEN_LIFETIME_S,
    ROLE_RANK,
    MembershipPublic,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    Role,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPublic,
)
from shipyard.projects.tables import memberships, projects, tokens, users

TOKEN_PREFIX = "sy_"


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``None`` user with ``is_admin`` means auth is off (a local, trusted caller)."""

    user_id: str | None
    name: str
    is_admin: bool


LOCAL_PRINCIPAL = Principal(user_id=None, name="local", is_admin=True)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _project(row) -> ProjectPublic:  # type: ignore[no-untyped-def]
    return ProjectPublic(
        id=row.id,
        name=row.name,
        description=row.description,
        created_at=ms_to_dt(row.created_at),
        updated_at=ms_to_dt(row.updated_at),
    )


def _user(row) -> UserPublic:  # type: ignore[no-untyped-def]
    return UserPublic(
        id=row.id,
        name=row.name,
        is_admin=row.is_admin,
        created_at=ms_to_dt(row.created_at),
        updated_at=ms_to_dt(row.updated_at),
    )


class ProjectService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._ids: dict[str, str] = {}

    # -- projects ---------------------------------------------------------------------------

    def create_project(
        self, body: ProjectCreate, owner: Principal = LOCAL_PRINCIPAL
    ) -> ProjectPublic:
        now = now_ms()
        pid = new_id()
        try:
            with self.db.write() as conn:
                conn.execute(
                    projects.insert().values(
                        id=pid,
                        name=body.name,
                        description=body.description,
                        created_at=now,
                        updated_at=now,
                    )
                )
                if owner.user_id is not None:
                    conn.execute(
                        memberships.insert().values(
                            project_id=pid,
                            user_id=owner.user_id,
                            role=Role.admin.value,
                            created_at=now,
                            updated_at=now,
                        )
                    )
        except IntegrityError:
            raise AlreadyExists(
                f"project {body.name!r} already exists", {"field": "name"}
            ) from None
        return self.get_project(body.name)

    def get_project(self, name: str) -> ProjectPublic:
        with self.db.read() as conn:
            row = conn.execute(select(projects).where(projects.c.name == name)).first()
        if row is None:
            raise NotFound(f"project {name!r} not found", {"project": name})
        return _project(row)

    def ensure_project(self, name: str) -> ProjectPublic:
        """Get a project, creating it if missing (the embedded, auth-off convenience)."""
        try:
            return self.get_project(name)
        except NotFound:
            try:
                return self.create_project(validate(ProjectCreate, name=name))
            except AlreadyExists:
                return self.get_project(name)

    def knows(self, name: str) -> bool:
        """Whether the project's id is known here already (``project_id`` needs no query)."""
        return name in self._ids

    def project_id(self, name: str) -> str:
        pid = self._ids.get(name)
        if pid is None:
            pid = str(self.get_project(name).id)
            self._ids[name] = pid
        return pid

    def project_name(self, project_id: str) -> str:
        for name, pid in self._ids.items():
            if pid == project_id:
                return name
        with self.db.read() as conn:
            found = conn.execute(
                select(projects.c.name).where(projects.c.id == project_id)
            ).scalar_one_or_none()
        if found is None:
            raise NotFound(f"project {project_id!r} not found", {"project": project_id})
        self._ids[found] = project_id
        return str(found)

    def list_projects(
        self,
        principal: Principal = LOCAL_PRINCIPAL,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> ProjectsPublic:
        check_page_size(page_size)
        offset = decode_page_token(page_token)
        q = select(projects).order_by(projects.c.name)
        cq = select(func.count()).select_from(projects)
        if not principal.is_admin:
            mine = select(memberships.c.project_id).where(
                memberships.c.user_id == principal.user_id
            )
            q = q.where(projects.c.id.in_(mine))
            cq = cq.where(projects.c.id.in_(mine))
        with self.db.read() as conn:
            rows = conn.execute(q.limit(page_size + 1).offset(offset)).all()
            count = conn.execute(cq).scalar_one()
        return ProjectsPublic(
            data=[_project(r) for r in rows[:page_size]],
            count=count,
            next_page_token=next_token(offset, page_size, len(rows)),
        )

    def delete_project(self, name: str) -> None:
        with self.db.write() as conn:
            n = conn.execute(delete(projects).where(projects.c.name == name)).rowcount
        self._ids.pop(name, None)
        if not n:
            raise NotFound(f"project {name!r} not found", {"project": name})

    # -- users and tokens -------------------------------------------------------------------

    def create_user(self, body: UserCreate) -> UserPublic:
        now = now_ms()
        try:
            with self.db.write() as conn:
                conn.execute(
                    users.insert().values(
                        id=new_id(),
                        name=body.name,
                        is_admin=body.is_admin,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"user {body.name!r} already exists", {"field": "name"}) from None
        return self.get_user(body.name)

    def get_user(self, name: str) -> UserPublic:
        with self.db.read() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        if row is None:
            raise NotFound(f"user {name!r} not found", {"user": name})
        return _user(row)

    def list_users(self) -> list[UserPublic]:
        with self.db.read() as conn:
            return [_user(r) for r in conn.execute(select(users).order_by(users.c.name))]

    def create_token(
        self, user_name: str, name: str = "", expires_in_s: int | None = None
    ) -> TokenCreated:
        if expires_in_s is not None and not 0 < expires_in_s <= MAX_TOKEN_LIFETIME_S:
            raise InvalidArgument.for_field(
                "expires_in_s", f"expected 1 to {MAX_TOKEN_LIFETIME_S} seconds, got {expires_in_s}"
            )
        user = self.get_user(user_name)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = now_ms()
        tid = new_id()
        expires = now + expires_in_s * 1000 if expires_in_s else None
        with self.db.write() as conn:
            conn.execute(
                tokens.insert().values(
                    id=tid,
                    user_id=user.id,
                    name=name,
                    secret_hash=_hash(secret),
                    expires_at=expires,
                    created_at=now,
                    updated_at=now,
                )
            )
        return TokenCreated(
            id=tid,
            user=user.name,
            name=name,
            expires_at=ms_to_dt(expires),
            last_used_at=None,
            created_at=ms_to_dt(now),
            secret=secret,
        )

    def list_tokens(self, user_name: str) -> list[TokenPublic]:
        user = self.get_user(user_name)
        with self.db.read() as conn:
            rows = conn.execute(
                select(tokens).where(tokens.c.user_id == user.id).order_by(tokens.c.created_at)
            ).all()
        return [
            TokenPublic(
                id=r.id,
                user=user.name,
                name=r.name,
                expires_at=ms_to_dt(r.expires_at),
                last_used_at=ms_to_dt(r.last_used_at),
                created_at=ms_to_dt(r.created_at),
            )
            for r in rows
        ]

    def revoke_token(self, token_id: str) -> None:
        with self.db.write() as conn:
            if not conn.execute(delete(tokens).where(tokens.c.id == token_id)).rowcount:
                raise NotFound(f"token {token_id!r} not found", {"token": token_id})

    def authenticate(self, secret: str) -> Principal:
        """Map a bearer secret to its user; raise ``Unauthenticated`` for anything else."""
        now = now_ms()
        with self.db.read() as conn:
            row = conn.execute(
                select(
                    tokens.c.id,
                    tokens.c.expires_at,
                    users.c.id.label("uid"),
                    users.c.name,
                    users.c.is_admin,
                )
                .join(users, users.c.id == tokens.c.user_id)
                .where(tokens.c.secret_hash == _hash(secret))
            ).first()
        if row is None or (row.expires_at is not None and row.expires_at < now):
            raise Unauthenticated("invalid or expired API token")
        return Principal(user_id=row.uid, name=row.name, is_admin=row.is_admin)

    # -- roles ------------------------------------------------------------------------------

    def set_membership(self, project: str, user_name: str, role: Role) -> MembershipPublic:
        pid = self.project_id(project)
        user = self.get_user(user_name)
        now = now_ms()
        with self.db.write() as conn:
            updated = conn.execute(
                update(memberships)
                .where(memberships.c.project_id == pid, memberships.c.user_id == user.id)
                .values(role=role.value, updated_at=now)
            ).rowcount
            if not updated:
                conn.execute(
                    memberships.insert().values(
                        project_id=pid,
                        user_id=user.id,
                        role=role.value,
                        created_at=now,
                        updated_at=now,
                    )
                )
        return MembershipPublic(project=project, user=user.name, role=role)

    def remove_membership(self, project: str, user_name: str) -> None:
        pid = self.project_id(project)
        user = self.get_user(user_name)
        with self.db.write() as conn:
            conn.execute(
                delete(memberships).where(
                    memberships.c.project_id == pid, memberships.c.user_id == user.id
                )
            )

    def list_memberships(self, project: str) -> list[MembershipPublic]:
        pid = self.project_id(project)
        with self.db.read() as conn:
            rows = conn.execute(
                select(users.c.name, memberships.c.role)
                .join(users, users.c.id == memberships.c.user_id)
                .where(memberships.c.project_id == pid)
                .order_by(users.c.name)
            ).all()
        return [MembershipPublic(project=project, user=r.name, role=Role(r.role)) for r in rows]

    def role_in(self, principal: Principal, project: str) -> Role | None:
        if principal.is_admin:
            return Role.admin
        pid = self.project_id(project)
        with self.db.read() as conn:
            role = conn.execute(
                select(memberships.c.role).where(
                    memberships.c.project_id == pid, memberships.c.user_id == principal.user_id
                )
            ).scalar_one_or_none()
        return Role(role) if role else None

    def authorize(self, principal: Principal, project: str, needed: Role) -> None:
        """Raise ``PermissionDenied`` unless the principal holds ``needed`` or more in project."""
        role = self.role_in(principal, project)
        if role is None or ROLE_RANK[role] < ROLE_RANK[needed]:
            raise PermissionDenied(
                f"{principal.name} needs the {needed.value} role in project {project!r}"
                + (f" (has {role.value})" if role else ""),
                {"project": project, "needed": needed.value, "role": role.value if role else None},
            )
