"""``shipyard runs ...``"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shipyard.cli.common import (
    Opts,
    PageSizeOpt,
    PageTokenOpt,
    command,
    console,
    fmt_time,
    fmt_value,
    print_json,
    print_page,
    print_table,
)

app = typer.Typer(
    help="List, search, show, compare, delete and restore runs.", no_args_is_help=True
)


@command(app, "list")
def list_(
    opts: Opts = Opts(),
    experiment: Annotated[
        list[str] | None,
        typer.Option(
            "--experiment", "-e", help="Experiment id or name (repeatable; default: all)."
        ),
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option("--filter", "-f", help="e.g. \"metrics.acc > 0.9 AND params.model = 'lr'\""),
    ] = None,
    order_by: Annotated[
        list[str] | None,
        typer.Option("--order-by", "-o", help="e.g. 'metrics.acc DESC' (repeatable)."),
    ] = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Only deleted runs.")] = False,
    columns: Annotated[
        list[str] | None,
        typer.Option(
            "--column", "-c", help="Extra columns: metrics.<key>, params.<key>, tags.<key>."
        ),
    ] = None,
    page_size: PageSizeOpt = 100,
    page_token: PageTokenOpt = None,
) -> None:
    """List runs matching a filter, newest first unless ordered."""
    page = opts.client().search_runs(
        experiment,
        filter_,
        order_by,
        lifecycle="deleted" if deleted else "active",
        page_size=page_size,
        page_token=page_token,
    )
    extra = list(columns or [])
    if not extra:
        # Show the keys the runs on this page have, metrics first, a few of each.
        mkeys = sorted({k for r in page.data for k in r.metrics if not k.startswith("system/")})[:4]
        pkeys = sorted({k for r in page.data for k in r.params})[:4]
        extra = [f"metrics.{k}" for k in mkeys] + [f"params.{k}" for k in pkeys]

    def cell(run, col: str):  # type: ignore[no-untyped-def]
        kind, _, key = col.partition(".")
        if kind == "metrics":
            m = run.metrics.get(key)
            return m.value if m else None
        if kind == "params":
            return run.params.get(key)
        if kind == "tags":
            return run.tags.get(key)
        return getattr(run, col, None)

    print_page(
        page,
        opts.json,
        ["id", "name", "status", "started", *extra],
        lambda r: (
            r.id,
            r.name,
            r.status.value,
            fmt_time(r.start_time),
            *[cell(r, c) for c in extra],
        ),
    )


@command(app)
def show(run_id: str, opts: Opts = Opts()) -> None:
    """Show a run: attributes, params, latest metrics, tags, inputs and artifacts."""
    c = opts.client()
    run = c.get_run(run_id)
    arts = c.list_artifacts(run_id, recursive=True)
    if opts.json:
        print_json({"run": run, "artifacts": arts.files})
        return
    console.print(f"[bold]{run.name}[/bold]  {run.id}  {run.status.value}", highlight=False)
    console.print(
        f"experiment {run.experiment_id}  parent {run.parent_run_id or '-'}  "
        f"started {fmt_time(run.start_time)}  ended {fmt_time(run.end_time) or '-'}",
        highlight=False,
    )
    if run.params:
        print_table(["param", "value"], sorted(run.params.items()))
    if run.metrics:
        print_table(
            ["metric", "value", "step"],
            [(k, m.value, m.step) for k, m in sorted(run.metrics.items())],
        )
    if run.tags:
        print_table(["tag", "value"], sorted(run.tags.items()))
    if run.inputs:
        print_table(
            ["input", "digest", "source", "context"],
            [(i.name, i.digest, i.source, i.context) for i in run.inputs],
        )
    if arts.files:
        print_table(
            ["artifact", "size", "sha256"],
            [(a.path, a.size, (a.digest or "")[:12]) for a in arts.files],
        )


@command(app)
def compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
    opts: Opts = Opts(),
    all_params: Annotated[
        bool,
        typer.Option("--all-params", help="Show equal params too, not only those that differ."),
    ] = False,
) -> None:
    """Compare runs: params side by side (differences marked) and their latest metrics."""
    cmp = opts.client().compare_runs(run_ids)
    if opts.json:
        print_json(cmp)
        return
    table = Table(header_style="bold")
    table.add_column("")
    for r in cmp.runs:
        table.add_column(f"{r.name}\n{r.id}")
    keys = cmp.param_keys if all_params else cmp.differing_params
    for k in keys:
        mark = "[yellow]*[/yellow] " if k in cmp.differing_params else "  "
        table.add_row(f"{mark}params.{k}", *[fmt_value(r.params.get(k)) for r in cmp.runs])
    for k in cmp.metric_keys:
        table.add_row(
            f"  metrics.{k}",
            *[fmt_value(r.metrics[k].value if k in r.metrics else None) for r in cmp.runs],
        )
    console.print(table)
    if not all_params and len(cmp.param_keys) > len(keys):
        console.print(f"{len(cmp.param_keys) - len(keys)} equal params hidden (--all-params)")


@command(app, json=False)
def delete(run_ids: list[str], opts: Opts = Opts()) -> None:
    """Delete runs (restorable until purged)."""
    c = opts.client()
    for r in run_ids:
        c.delete_run(r)
    console.print(f"deleted {len(run_ids)} run(s)")


@command(app, json=False)
def restore(run_ids: list[str], opts: Opts = Opts()) -> None:
    """Restore deleted runs."""
    c = opts.client()
    for r in run_ids:
        c.restore_run(r)
    console.print(f"restored {len(run_ids)} run(s)")


@command(app)
def history(run_id: str, key: str, opts: Opts = Opts()) -> None:
    """Print a metric's whole history."""
    h = opts.client().get_metric_history(run_id, key)
    if opts.json:
        print_json(h)
        return
    print_table(
        ["step", "timestamp", "value"], list(zip(h.steps, h.timestamps, h.values, strict=True))
    )


@command(app, json=False)
def download(
    run_id: str,
    path: Annotated[str | None, typer.Argument()] = None,
    dest: Annotated[Path, typer.Option("--dest", "-d")] = Path("."),
    opts: Opts = Opts(),
) -> None:
    """Download a run's artifacts (all, or one file or folder)."""
    out = opts.client().download_artifacts(run_id, path, dest)
    console.print(f"downloaded to {out}", highlight=False)
