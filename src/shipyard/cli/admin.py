"""Commands that act on the local store directly: database, users, tokens, garbage collection.

They run on the server's machine with its settings (``SHIPYARD_DATABASE_URL``, ...), which is how
the first administrator is made: there are no default credentials.
"""

from __future__ import annotations

from typing import Annotated

import typer

from shipyard.cli.common import JsonOpt, command, console, handle_errors, print_json, print_table

db_app = typer.Typer(help="The metadata database.", no_args_is_help=True)
users_app = typer.Typer(help="Users, API tokens and project roles (auth).", no_args_is_help=True)


def _services(auto_migrate: bool | None = None):  # type: ignore[no-untyped-def]
    from shipyard.core.settings import Settings
    from shipyard.server.context import Services

    settings = Settings() if auto_migrate is None else Settings(auto_migrate=auto_migrate)
    return Services.from_settings(settings)


@command(db_app)
def upgrade() -> None:
    """Bring the metadata database to the schema this version needs."""
    from shipyard.core.db import Database
    from shipyard.core.settings import Settings

    db = Database(Settings().database_url)
    before = db.current_revision()
    db.upgrade()
    console.print(f"database at {db.current_revision()} (was {before or 'empty'})")


@command(db_app)
def current(as_json: JsonOpt = False) -> None:
    """Show the database's schema revision and the one the code needs."""
    from shipyard.core.db import Database
    from shipyard.core.settings import Settings

    db = Database(Settings().database_url)
    info = {"current": db.current_revision(), "head": db.head_revision()}
    print_json(info) if as_json else console.print(
        f"current {info['current']}  head {info['head']}"
    )


@command(users_app, "create")
def create_user(
    name: str,
    admin: Annotated[bool, typer.Option("--admin")] = False,
    token: Annotated[
        bool, typer.Option("--token/--no-token", help="Also create an API token and print it once.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Create a user (``--admin`` for an administrator of everything) and an API token."""
    from shipyard.core.schemas import validate
    from shipyard.projects.schemas import UserCreate

    s = _services()
    user = s.projects.create_user(validate(UserCreate, name=name, is_admin=admin))
    tok = s.projects.create_token(name, "cli") if token else None
    if as_json:
        print_json({"user": user, "token": tok})
        return
    console.print(f"created user {user.name}{' (admin)' if user.is_admin else ''}")
    if tok:
        console.print(f"API token (shown once): {tok.secret}", highlight=False, soft_wrap=True)


@command(users_app, "token")
def create_token(
    name: str,
    label: Annotated[str, typer.Option("--name")] = "",
    expires_in_s: Annotated[int | None, typer.Option("--expires-in-s")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create another API token for a user."""
    tok = _services().projects.create_token(name, label, expires_in_s)
    print_json(tok) if as_json else console.print(
        f"API token (shown once): {tok.secret}", highlight=False, soft_wrap=True
    )


@command(users_app, "grant")
def grant(
    user: str, project: str, role: Annotated[str, typer.Argument(help="viewer, editor or admin")]
) -> None:
    """Give a user a role in a project."""
    from shipyard.core.schemas import validate
    from shipyard.projects.schemas import MembershipSet

    m = validate(MembershipSet, user=user, role=role)
    s = _services()
    s.projects.ensure_project(project)
    s.projects.set_membership(project, m.user, m.role)
    console.print(f"{user} is {role} in {project}")


@command(users_app, "list")
def list_users(as_json: JsonOpt = False) -> None:
    """List users."""
    users = _services().projects.list_users()
    if as_json:
        print_json(users)
    else:
        print_table(
            ["name", "admin", "created"], [(u.name, u.is_admin, u.created_at) for u in users]
        )


@handle_errors
def gc(project: str | None, older_than_s: int | None, as_json: bool) -> None:
    report = _services().tracking.purge(project, older_than_s=older_than_s)
    if as_json:
        print_json(report)
    else:
        console.print(
            f"purged {report.runs_purged} run(s), {report.experiments_purged} "
            f"experiment(s); freed {report.bytes_freed} bytes in "
            f"{report.blobs_deleted} blob(s)"
        )
