"""``shipyard endpoints ...``: serve models over HTTP, update and roll back with no downtime."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from shipyard.cli.common import (
    Opts,
    PageSizeOpt,
    PageTokenOpt,
    command,
    console,
    emit,
    err_console,
    fail,
    fmt_time,
    parse_pairs,
    print_json,
    print_page,
    print_table,
)

app = typer.Typer(
    help="Real-time endpoints: create, list, show, update, roll back, invoke and delete.",
    no_args_is_help=True,
)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Model URI: NAME@ALIAS, NAME/VERSION, models:/..., runs:/..."
    ),
]
VariantOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--variant",
        help="A production variant NAME=URI[:WEIGHT] (repeatable; weights are relative), "
        "e.g. --variant blue=fraud/3:0.9 --variant green=fraud/4:0.1",
    ),
]
ShadowOpt = Annotated[
    str | None,
    typer.Option("--shadow", help="A model URI that gets a copy of the traffic (never answers)."),
]
CaptureOpt = Annotated[
    float | None,
    typer.Option("--capture", min=0.0, max=1.0, help="Fraction of requests to capture (0..1)."),
]
MinWorkersOpt = Annotated[int | None, typer.Option("--min-workers", min=0)]
MaxWorkersOpt = Annotated[int | None, typer.Option("--max-workers", min=1)]
IdleOpt = Annotated[
    float | None,
    typer.Option("--idle-to-zero-s", help="Scale to zero workers after this many idle seconds."),
]
BatchOpt = Annotated[int | None, typer.Option("--max-batch-size", min=1)]
WaitMsOpt = Annotated[float | None, typer.Option("--max-wait-ms", min=0.0)]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for InService.", min=1.0)
]


def parse_variant(text: str) -> dict[str, Any]:
    """``NAME=URI[:WEIGHT]``; the weight is the part after the last ':' when it is a number
    (a URI such as models:/fraud/3 has a ':' of its own)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        fail(f"--variant: expected NAME=URI[:WEIGHT], got {text!r}", 2)
    uri, weight = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    if colon and head and not tail.startswith("/"):
        try:
            weight = float(tail)
            uri = head
        except ValueError:
            fail(f"--variant {name}: the weight {tail!r} is not a number", 2)
    return {"name": name, "model": uri, "weight": weight}


def _some(**kw: Any) -> dict[str, Any] | None:
    given = {k: v for k, v in kw.items() if v is not None}
    return given or None


def _variant_cell(v: Any) -> str:
    version = f" v{v.model_version}" if v.model_version else ""
    what = f"{v.model_name}{version}" if v.model_name else v.model
    return f"{v.name}={what}"


def _variants_text(ep: Any) -> str:
    parts = [f"{_variant_cell(v)} {v.weight * 100:.0f}%" for v in ep.variants]
    if ep.shadow is not None:
        parts.append(f"shadow {_variant_cell(ep.shadow)}")
    if ep.multi_model is not None:
        parts.append(f"{len(ep.multi_model.models)} models (multi-model)")
    return ", ".join(parts)


def _status(ep: Any) -> str:
    """The status, and whether the server answers now when it should (after a crash it is
    restarted; while it loads models it is not ready)."""
    if ep.ready is False and ep.status.value in ("InService", "Updating"):
        return f"{ep.status.value} (not ready)"
    return str(ep.status.value)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _progress():  # type: ignore[no-untyped-def]
    """A spinner on stderr that says the status and the time waited."""
    status = err_console.status("waiting for the endpoint…")

    def update(ep: Any, elapsed: float) -> None:
        status.update(f"{ep.name}: {ep.status.value} ({elapsed:.1f} s)")

    return status, update


def _print_endpoint(ep: Any) -> None:
    console.print(f"[bold]{ep.name}[/bold]  {_status(ep)}", highlight=False)
    rows = [
        ("url", ep.url or "(not serving)"),
        ("deployment", ep.deployment),
        ("variants", _variants_text(ep)),
        ("capture", f"{ep.capture.sample_rate:g} -> {ep.capture_dir}" if ep.capture else "off"),
        ("batching", f"max {ep.batching.max_batch_size} rows, wait {ep.batching.max_wait_ms} ms"),
        (
            "scaling",
            f"{ep.scaling.min_workers}..{ep.scaling.max_workers} workers"
            + (
                f", to zero after {ep.scaling.idle_to_zero_s:g} s"
                if ep.scaling.idle_to_zero_s
                else ""
            ),
        ),
        ("workers", "-" if ep.workers is None else ep.workers),
        ("requests", "-" if ep.requests is None else ep.requests),
        ("latency p50/p99", f"{_ms(ep.latency_p50_ms)} / {_ms(ep.latency_p99_ms)} ms"),
        ("restarts", ep.restarts),
        ("created", fmt_time(ep.created_at) + (f" by {ep.created_by}" if ep.created_by else "")),
    ]
    if ep.last_error:
        rows.append(("last error", ep.last_error))
    for k, v in rows:
        console.print(f"  {k:<19} {v}", highlight=False, soft_wrap=True)


def _show(ep: Any, as_json: bool) -> None:
    if as_json:
        print_json(ep)
    else:
        _print_endpoint(ep)


@command(app)
def create(
    name: str,
    model: ModelOpt = None,
    variant: VariantOpt = None,
    shadow: ShadowOpt = None,
    capture: CaptureOpt = None,
    min_workers: MinWorkersOpt = None,
    max_workers: MaxWorkersOpt = None,
    idle_to_zero_s: IdleOpt = None,
    max_batch_size: BatchOpt = None,
    max_wait_ms: WaitMsOpt = None,
    multi_model: Annotated[
        list[str] | None,
        typer.Option("--multi-model", help="NAME=URI of a hosted model (repeatable)."),
    ] = None,
    memory_budget_mb: Annotated[int | None, typer.Option("--memory-budget-mb", min=1)] = None,
    trust_code: Annotated[
        bool, typer.Option("--trust-code", help="Allow python_function (pickle) models.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for InService.")] = True,
    timeout: TimeoutOpt = 300.0,
    opts: Opts = Opts(),
) -> None:
    """Serve a model at an HTTP endpoint; waits (with progress) until it is InService."""
    variants = [parse_variant(v) for v in variant] if variant else None
    multi: dict[str, Any] | None = None
    if multi_model:
        multi = {"models": parse_pairs(multi_model, "--multi-model", need_value=True)}
        if memory_budget_mb is not None:
            multi["memory_budget_mb"] = memory_budget_mb
    c = opts.client()
    status, update = _progress()
    with status if wait else contextlib.nullcontext():
        ep = c.create_endpoint(
            name,
            model,
            variants=variants,
            shadow=shadow,
            capture=capture,
            batching=_some(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms),
            scaling=_some(
                min_workers=min_workers, max_workers=max_workers, idle_to_zero_s=idle_to_zero_s
            ),
            multi_model=multi,
            trust_code=trust_code,
            wait=wait,
            timeout_s=timeout,
            progress=update,
        )
    _show(ep, opts.json)


@command(app, "list")
def list_(
    opts: Opts = Opts(),
    stats: Annotated[
        bool, typer.Option("--stats/--no-stats", help="Ask each endpoint for its figures.")
    ] = True,
    page_size: PageSizeOpt = 100,
    page_token: PageTokenOpt = None,
) -> None:
    """List endpoints: status, variants, traffic and latency p50/p99."""
    page = opts.client().list_endpoints(page_size=page_size, page_token=page_token, stats=stats)
    print_page(
        page,
        opts.json,
        ["name", "status", "url", "variants", "requests", "p50 ms", "p99 ms", "workers"],
        lambda e: (
            e.name,
            _status(e),
            e.url or "",
            _variants_text(e),
            e.requests,
            _ms(e.latency_p50_ms),
            _ms(e.latency_p99_ms),
            e.workers,
        ),
    )


@command(app)
def show(
    name: str,
    opts: Opts = Opts(),
    events: Annotated[int, typer.Option("--events", min=0, max=1000)] = 10,
) -> None:
    """An endpoint: its variants and figures, its deployments and recent events."""
    c = opts.client()
    ep = c.get_endpoint(name)
    deps = c.list_endpoint_deployments(name)
    evs = c.list_endpoint_events(name, max(events, 1)).data[:events]
    if opts.json:
        print_json({"endpoint": ep, "deployments": deps.data, "events": evs})
        return
    _print_endpoint(ep)
    print_table(
        ["deployment", "reason", "variants", "by", "created"],
        [
            (
                f"{d.number}{' (current)' if d.current else ''}",
                d.reason,
                ", ".join(f"{_variant_cell(v)} {v.weight * 100:.0f}%" for v in d.variants),
                d.created_by or "",
                fmt_time(d.created_at),
            )
            for d in deps.data
        ],
        title="deployments",
    )
    if evs:
        print_table(
            ["when", "event", "message"],
            [(fmt_time(e.created_at), e.kind, e.message) for e in evs],
            title="events",
        )


@command(app)
def update(
    name: str,
    model: ModelOpt = None,
    variant: VariantOpt = None,
    weight: Annotated[
        list[str] | None,
        typer.Option("--weight", help="New weight of a variant: NAME=WEIGHT (repeatable)."),
    ] = None,
    shadow: ShadowOpt = None,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Remove the shadow.")] = False,
    capture: CaptureOpt = None,
    no_capture: Annotated[bool, typer.Option("--no-capture", help="Stop capturing.")] = False,
    min_workers: MinWorkersOpt = None,
    max_workers: MaxWorkersOpt = None,
    idle_to_zero_s: IdleOpt = None,
    max_batch_size: BatchOpt = None,
    max_wait_ms: WaitMsOpt = None,
    opts: Opts = Opts(),
) -> None:
    """Serve a new model version, variants or weights, with no failed request."""
    settings: dict[str, Any] = {}
    if shadow is not None or no_shadow:
        settings["shadow"] = None if no_shadow else shadow
    if capture is not None or no_capture:
        settings["capture"] = None if no_capture else capture
    if b := _some(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms):
        settings["batching"] = b
    if s := _some(min_workers=min_workers, max_workers=max_workers, idle_to_zero_s=idle_to_zero_s):
        settings["scaling"] = s
    weights = None
    if weight:
        weights = {}
        for k, v in parse_pairs(weight, "--weight", need_value=True).items():
            try:
                weights[k] = float(v)
            except ValueError:
                fail(f"--weight {k}: {v!r} is not a number", 2)
    variants = [parse_variant(v) for v in variant] if variant else None
    with err_console.status(f"{name}: updating…"):
        ep = opts.client().update_endpoint(
            name, model, variants=variants, weights=weights, **settings
        )
    _show(ep, opts.json)


@command(app)
def rollback(
    name: str,
    to: Annotated[
        int | None, typer.Option("--to", min=1, help="Deployment number (default: previous).")
    ] = None,
    opts: Opts = Opts(),
) -> None:
    """Serve an earlier deployment again, with no failed request."""
    with err_console.status(f"{name}: rolling back…"):
        ep = opts.client().rollback_endpoint(name, to)
    _show(ep, opts.json)


@command(app)
def stop(name: str, opts: Opts = Opts()) -> None:
    """Stop an endpoint's server but keep the endpoint (``start`` brings it back)."""
    _show(opts.client().stop_endpoint(name), opts.json)


@command(app)
def start(name: str, timeout: TimeoutOpt = 300.0, opts: Opts = Opts()) -> None:
    """Start a Stopped or Failed endpoint again and wait until it is InService."""
    status, update = _progress()
    with status:
        ep = opts.client().start_endpoint(name, timeout_s=timeout, progress=update)
    _show(ep, opts.json)


@command(app)
def delete(name: str, opts: Opts = Opts()) -> None:
    """Stop an endpoint's server and delete the endpoint (captured data is kept)."""
    opts.client().delete_endpoint(name)
    emit({"name": name, "deleted": True}, opts.json, f"deleted endpoint {name}")


@command(app)
def invoke(
    name: str,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Request body: JSON (dataframe_split, ...) or CSV."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Read the body from a .json or .csv file ('-': stdin)."),
    ] = None,
    opts: Opts = Opts(),
) -> None:
    """Send one request to an endpoint's /invocations and print the answer."""
    import orjson

    if data is not None and file is not None:
        fail("give --data or --file, not both", 2)
    if file is not None:
        body = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        is_csv = file.suffix.lower() == ".csv"
    elif data is not None:
        body = data.encode()
        is_csv = not data.lstrip().startswith(("{", "["))
    else:
        fail("give the request body with --data or --file", 2)
        return
    content_type = "text/csv" if is_csv else "application/json"
    answer = opts.client().endpoint(name).invoke(body, content_type)
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        sys.stdout.write(answer.decode("utf-8", errors="replace") + "\n")
        return
    if opts.json:
        print_json(parsed)
    else:
        sys.stdout.write(orjson.dumps(parsed).decode() + "\n")
