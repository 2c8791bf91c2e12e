"""``shipyard experiments ...``"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shipyard.cli.common import (
    Opts,
    PageSizeOpt,
    PageTokenOpt,
    command,
    fmt_time,
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


@command(app, "list")
def list_(
    opts: Opts = Opts(),
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
    page = opts.client().list_experiments(
        name_like=name, lifecycle=lifecycle, page_size=page_size, page_token=page_token
    )
    print_page(page, opts.json, _COLUMNS, _row)


@command(app)
def create(
    name: str,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    opts: Opts = Opts(),
) -> None:
    """Create an experiment."""
    _show(opts.client().create_experiment(name, description), opts.json)


@command(app)
def rename(experiment: str, new_name: str, opts: Opts = Opts()) -> None:
    """Rename an experiment (given by id or name)."""
    _show(opts.client().rename_experiment(experiment, new_name), opts.json)


@command(app)
def delete(experiment: str, opts: Opts = Opts()) -> None:
    """Delete an experiment and its runs (restorable until purged)."""
    _show(opts.client().delete_experiment(experiment), opts.json)


@command(app)
def restore(experiment: str, opts: Opts = Opts()) -> None:
    """Restore a deleted experiment and the runs deleted with it."""
    _show(opts.client().restore_experiment(experiment), opts.json)
