"""What every command shares: the client options, JSON or table output, and one-line errors.

A command is registered with ``command``; one that works on a store takes an ``Opts``."""

from __future__ import annotations

import contextlib
import functools
import inspect
import signal
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shipyard.core.errors import ShipyardError

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project", "-p", envvar="SHIPYARD_PROJECT", help="Project name (default: 'default')."
    ),
]
UriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="SHIPYARD_TRACKING_URI",
        help="http(s)://server, or empty for the local store.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
PageSizeOpt = Annotated[
    int, typer.Option("--page-size", "-n", min=1, max=10_000, help="Rows per page.")
]
PageTokenOpt = Annotated[
    str | None, typer.Option("--page-token", help="Token printed by the previous page.")
]


def client(project: str | None, uri: str | None):  # type: ignore[no-untyped-def]
    from shipyard.sdk.client import Client

    return Client(project=project, tracking_uri=uri)


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def is_local(c: Any) -> bool:
    """Whether the client works on the embedded store in this process (no server)."""
    from shipyard.sdk.local import LocalBackend

    return isinstance(c.backend, LocalBackend)


def need_server(c: Any, detach: bool, message: str) -> None:
    """``--detach`` leaves the work to a server: refuse it on the embedded store."""
    if detach and is_local(c):
        fail(message)


def end_status(status: str, *, failed: str, stopped: str) -> None:
    """Exit as a finished job ended: 1 when it failed, 130 (as Ctrl-C) when it was stopped."""
    if status.lower() == "failed":
        fail(failed)
    if status.lower() == "stopped":
        fail(stopped, 130)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While a command follows a job, SIGTERM is Ctrl-C: the job is stopped, not left running."""
    previous = signal.getsignal(signal.SIGTERM)

    def _term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def progress_bar(unit: str, *fields: str) -> Progress:
    """A bar on stderr: the task, ``done/total UNIT``, a column per field, the time taken."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} " + unit),
        *[TextColumn(f"{{task.fields[{f}]}}") for f in fields],
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def one_of(
    value: str | None, names: Collection[str], option: str, case: Callable[[str], str]
) -> str | None:
    """An option's value in the ``case`` of ``names``; one not among them, an error that lists
    them."""
    if value is None:
        return None
    if case(value) not in names:
        fail(f"{option}: expected one of {', '.join(names)}", 2)
    return case(value)


def parse_pairs(
    items: list[str] | None, option: str, *, form: str = "KEY=VALUE", need_value: bool = False
) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options into a dict (a later key wins); one that is not, an error
    that names the option. ``need_value`` refuses ``KEY=`` too."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or (need_value and not value):
            fail(f"{option}: expected {form}, got {item!r}", 2)
        out[key] = value
    return out


def handle_errors(fn: F) -> F:
    """Turn a Shipyard error into one readable line and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ShipyardError as exc:
            fail(f"{exc.message}", 2 if exc.http_status < 500 else 1)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            fail(str(exc), 2)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Opts:
    """The options of every command that works on a store: --project, --tracking-uri, --json.

    A command takes them as one parameter annotated ``Opts``; ``command`` puts the three options
    in that parameter's place on its command line.
    """

    project: str | None = None
    uri: str | None = None
    json: bool = False

    def client(self):  # type: ignore[no-untyped-def]
        return client(self.project, self.uri)


def _opts_params(with_json: bool) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("project", kw, default=None, annotation=ProjectOpt),
        inspect.Parameter("uri", kw, default=None, annotation=UriOpt),
    ]
    if with_json:
        params.append(inspect.Parameter("as_json", kw, default=False, annotation=JsonOpt))
    return params


def command(app: typer.Typer, name: str | None = None, *, json: bool = True) -> Callable[[F], F]:
    """``@app.command(name)`` with ``handle_errors``. A parameter annotated ``Opts`` stands for
    --project, --tracking-uri and (unless ``json=False``) --json, in its place among the options."""

    def register(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        opts = next((p.name for p in sig.parameters.values() if p.annotation is Opts), None)
        if opts is None:
            app.command(name)(handle_errors(fn))
            return fn
        # Typer passes every value by name: all keyword-only, the options keep their order.
        kw_only = inspect.Parameter.KEYWORD_ONLY
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            params += _opts_params(json) if p.name == opts else [p.replace(kind=kw_only)]

        @functools.wraps(fn)
        def run(**kw: Any) -> Any:
            kw[opts] = Opts(kw.pop("project"), kw.pop("uri"), kw.pop("as_json", False))
            return fn(**kw)

        run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        app.command(name)(handle_errors(run))
        return fn

    return register


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, list | tuple):
        return [to_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(to_jsonable(obj), option=orjson.OPT_INDENT_2).decode() + "\n")


def emit(obj: Any, as_json: bool, text: str) -> None:
    """What a command did: the object as JSON, or one line of text."""
    if as_json:
        print_json(obj)
    else:
        console.print(text, highlight=False)


def fmt_time(dt: datetime | None) -> str:
    if dt is None:
        return ""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    next_page_token: str | None = None,
) -> None:
    table = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        # Ids must stay whole so they can be copied, however narrow the terminal.
        table.add_column(
            c, overflow="fold", no_wrap=c in ("id", "run id"), min_width=16 if c == "id" else None
        )
    for r in rows:
        table.add_row(*[fmt_value(v) for v in r])
    console.print(table)
    if next_page_token:
        console.print(f"more: --page-token {next_page_token}", highlight=False)


def print_page(
    page: Any, as_json: bool, columns: Sequence[str], row: Callable[[Any], Sequence[Any]]
) -> None:
    """A page of a list: as JSON, or a table of a row per item and the next page's token."""
    if as_json:
        print_json(page)
        return
    print_table(columns, [row(x) for x in page.data], next_page_token=page.next_page_token)


def print_item(
    item: Any, as_json: bool, columns: Sequence[str], row: Callable[[Any], Sequence[Any]]
) -> None:
    """One item a command made or changed: as JSON, or a table of its one row."""
    if as_json:
        print_json(item)
        return
    print_table(columns, [row(item)])


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """An item's details, a ``name  value`` line each, names aligned right."""
    for k, v in fields:
        console.print(f"[bold]{k:>9}[/bold]  {v}", highlight=False, soft_wrap=True)
