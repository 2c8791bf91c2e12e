"""``shipyard experiments ...``"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shipyard.cli.common import (
    JsonOpt,
    PageSizeOpt,
    PageTokenOpt,
    ProjectOpt,
    UriOpt,
    client,
    fmt_time,
    handle_errors,
    print_item,
    print_page,
)

app = typer.Typer(
    help="Create, list, rename, delete and restore experiments.", no_args_is_help=True
)


_COLUMNS = ["id", "name", "lifecycle", "created"]


def _row(e: Any) -> tuple[Any, ...]:
    return (e.id, e.name, e.lifecycle.value, fmt_time(e.created_at))


def _show(exp: Any, as_json: bool) -> None:
    print_item(exp, as_json, _COLUMNS, _row)


@app.command("list")
@handle_errors
def list_(
    project: ProjectOpt = None,
    uri: UriOpt = None,
    as_json: JsonOpt = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Filter: SQL LIKE pattern, e.g. 'churn%'.")
    ] = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Only deleted experiments.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Active and deleted.")] = False,
    page_size: PageSizeOpt = 100,
    page_token: PageTokenOpt = None,
) -> None:
    """List experiments, newest first."""
    lifecycle = "all" if all_ else "deleted" if deleted else "active"
    page = client(project, uri).list_experiments(
        name_like=name, lifecycle=lifecycle, page_size=page_size, page_token=page_token
    )
    print_page(page, as_json, _COLUMNS, _row)


@app.command()
@handle_errors
def create(
    name: str,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    project: ProjectOpt = None,
    uri: UriOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an experiment."""
    _show(client(project, uri).create_experiment(name, description), as_json)


@app.command()
@handle_errors
def rename(
    experiment: str,
    new_name: str,
    project: ProjectOpt = None,
    uri: UriOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename an experiment (given by id or name)."""
    _show(client(project, uri).rename_experiment(experiment, new_name), as_json)


@app.command()
@handle_errors
def delete(
    experiment: str, project: ProjectOpt = None, uri: UriOpt = None, as_json: JsonOpt = False
) -> None:
    """Delete an experiment and its runs (restorable until purged)."""
    _show(client(project, uri).delete_experiment(experiment), as_json)


@app.command()
@handle_errors
def restore(
    experiment: str, project: ProjectOpt = None, uri: UriOpt = None, as_json: JsonOpt = False
) -> None:
    """Restore a deleted experiment and the runs deleted with it."""
    _show(client(project, uri).restore_experiment(experiment), as_json)
