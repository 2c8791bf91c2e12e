"""``shipyard models ...``: the model registry, a thin layer over the SDK's ``Client``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shipyard.cli.common import (
    Opts,
    PageSizeOpt,
    PageTokenOpt,
    command,
    console,
    emit,
    fail,
    fmt_time,
    parse_pairs,
    print_item,
    print_json,
    print_page,
    print_table,
)

app = typer.Typer(
    help="Registered models: versions from runs, aliases, approvals.", no_args_is_help=True
)

TagOpt = Annotated[
    list[str] | None, typer.Option("--tag", "-t", help="A tag as key=value (repeatable).")
]
DescriptionOpt = Annotated[str, typer.Option("--description", "-d")]
CommentOpt = Annotated[str, typer.Option("--comment", "-m", help="Why (kept in the history).")]


def _tags(items: list[str] | None) -> dict[str, str]:
    return parse_pairs(items, "--tag", form="key=value")


_VERSION_COLUMNS = ["name", "version", "approval", "aliases", "flavor", "run id", "created"]
_MODEL_COLUMNS = ["name", "latest", "aliases", "description", "updated"]


def _version_row(v: Any) -> tuple[Any, ...]:
    return (
        v.name,
        v.version,
        v.approval_status.value,
        ", ".join(v.aliases),
        v.flavor,
        v.run_id or "",
        fmt_time(v.created_at),
    )


def _model_row(m: Any) -> tuple[Any, ...]:
    return (
        m.name,
        m.latest_version or "",
        ", ".join(f"{a}={v}" for a, v in m.aliases.items()),
        m.description[:60],
        fmt_time(m.updated_at),
    )


def _show_version(v: Any, as_json: bool) -> None:
    print_item(v, as_json, _VERSION_COLUMNS, _version_row)


@command(app, "list")
def list_(
    opts: Opts = Opts(),
    name: Annotated[
        str | None, typer.Option("--name", help="Filter: LIKE pattern, e.g. 'churn%'.")
    ] = None,
    page_size: PageSizeOpt = 100,
    page_token: PageTokenOpt = None,
) -> None:
    """List registered models by name."""
    page = opts.client().list_registered_models(
        name_like=name, page_size=page_size, page_token=page_token
    )
    print_page(page, opts.json, _MODEL_COLUMNS, _model_row)


@command(app)
def create(
    name: str,
    description: DescriptionOpt = "",
    tag: TagOpt = None,
    opts: Opts = Opts(),
) -> None:
    """Create a registered model (versions are added with `register`)."""
    m = opts.client().create_registered_model(name, description, _tags(tag))
    print_item(m, opts.json, _MODEL_COLUMNS, _model_row)


@command(app)
def show(
    name: str,
    version: Annotated[str | None, typer.Argument(help="A version number or @alias.")] = None,
    opts: Opts = Opts(),
) -> None:
    """Show a model, or one of its versions with its lineage and approval history."""
    c = opts.client()
    if version is None:
        m = c.get_registered_model(name)
        if opts.json:
            print_json(m)
            return
        print_item(m, False, _MODEL_COLUMNS, _model_row)
        if m.tags:
            console.print("tags: " + ", ".join(f"{k}={v}" for k, v in m.tags.items()))
        return
    if version.startswith("@"):
        v = c.get_model_version_by_alias(name, version[1:])
    else:
        v = c.get_model_version(name, version)
    lineage = c.get_model_lineage(name, v.version)
    if opts.json:
        print_json(lineage)
        return
    _show_version(v, False)
    console.print(f"source: {v.source_uri}   digest: {v.digest}", highlight=False)
    if lineage.run is not None:
        console.print(f"run: {lineage.run.name} ({lineage.run.id})", highlight=False)
    elif lineage.run_missing:
        console.print("run: purged", highlight=False)
    for d in lineage.datasets:
        console.print(f"dataset: {d.name} {d.digest} {d.source}", highlight=False)
    print_table(
        ["approval", "by", "when", "comment"],
        [
            (a.status.value, a.actor or "", fmt_time(a.created_at), a.comment)
            for a in lineage.approvals
        ],
    )


@command(app)
def versions(
    name: Annotated[str | None, typer.Argument(help="A model (omit to search all).")] = None,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter", "-f", help="e.g. \"alias = 'champion'\" or \"tags.team = 'risk'\"."
        ),
    ] = None,
    opts: Opts = Opts(),
    page_size: PageSizeOpt = 100,
    page_token: PageTokenOpt = None,
) -> None:
    """List a model's versions, newest first, or search versions with a filter."""
    c = opts.client()
    if name is not None:
        c.get_registered_model(name)  # a missing model is an error, not an empty list
        clause = f"name = '{name}'"
        filter_ = f"{clause} AND {filter_}" if filter_ else clause
    page = c.search_model_versions(filter_, page_size=page_size, page_token=page_token)
    print_page(page, opts.json, _VERSION_COLUMNS, _version_row)


@command(app)
def register(
    source: Annotated[str, typer.Argument(help="runs:/<run_id>/<path> of a logged model.")],
    name: str,
    description: DescriptionOpt = "",
    tag: TagOpt = None,
    opts: Opts = Opts(),
) -> None:
    """Register a model logged in a run as a new version (creating the model if needed)."""
    v = opts.client().register_model(source, name, description, _tags(tag))
    _show_version(v, opts.json)


@command(app)
def alias(
    name: str,
    alias_: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. champion, staging.")],
    version: Annotated[str | None, typer.Argument(help="The version it points at.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    opts: Opts = Opts(),
) -> None:
    """Point an alias at a version (or remove it with --delete)."""
    c = opts.client()
    if delete:
        c.delete_alias(name, alias_)
        emit(
            {"name": name, "alias": alias_, "deleted": True},
            opts.json,
            f"removed alias {alias_} of {name}",
        )
        return
    if version is None:
        fail("VERSION: expected the version the alias points at (or --delete)", 2)
        return
    _show_version(c.set_alias(name, alias_, version), opts.json)


@command(app)
def approve(name: str, version: str, comment: CommentOpt = "", opts: Opts = Opts()) -> None:
    """Approve a version (recorded with who and when)."""
    _show_version(opts.client().approve(name, version, comment), opts.json)


@command(app)
def reject(name: str, version: str, comment: CommentOpt = "", opts: Opts = Opts()) -> None:
    """Reject a version (recorded with who and when)."""
    _show_version(opts.client().reject(name, version, comment), opts.json)


@command(app)
def delete(
    name: str,
    version: Annotated[str | None, typer.Argument(help="Only this version.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    opts: Opts = Opts(),
) -> None:
    """Delete a version, or a model with all its versions (the runs keep their files)."""
    what = f"version {version} of {name}" if version else f"model {name} and all its versions"
    if not yes and not typer.confirm(f"Delete {what}?"):
        fail("not deleted", 1)
    c = opts.client()
    if version is None:
        c.delete_registered_model(name)
    else:
        c.delete_model_version(name, version)
    emit({"name": name, "version": version, "deleted": True}, opts.json, f"deleted {what}")
