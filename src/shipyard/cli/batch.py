"""``shipyard batch ...``: batch transform jobs."""

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
    end_status,
    err_console,
    fail,
    fmt_time,
    need_server,
    one_of,
    print_fields,
    print_json,
    print_page,
    print_table,
    progress_bar,
    sigterm_as_interrupt,
)

app = typer.Typer(
    help="Batch transform: run a model over a CSV or Parquet file in parallel shards.",
    no_args_is_help=True,
)

DetachOpt = Annotated[
    bool,
    typer.Option("--detach", help="Return once the job is started (it runs on the server)."),
]


def _rate(job: Any) -> str:
    r = job.progress.rows_per_s
    return f"{r:,.0f} rows/s" if r else ""


def _follow(c: Any, job: Any, as_json: bool) -> None:
    """Show the job's progress until it ends; Ctrl-C (or SIGTERM) stops it, ready to resume."""
    with sigterm_as_interrupt():
        try:
            if as_json:
                job = c.wait_batch_job(job.id)
            else:
                with progress_bar("shards", "rows", "rate") as bar:
                    task = bar.add_task(
                        f"batch {job.id}",
                        total=job.progress.shards_total,
                        rows="",
                        rate="",
                    )

                    def show(j: Any) -> None:
                        p = j.progress
                        bar.update(
                            task,
                            completed=p.shards_done,
                            rows=f"{p.rows_done:,}/{p.rows_total:,} rows",
                            rate=_rate(j),
                        )

                    job = c.wait_batch_job(job.id, on_progress=show)
        except KeyboardInterrupt:
            err_console.print(f"stopping batch job {job.id} ...", highlight=False)
            job = c.stop_batch_job(job.id)
            err_console.print(
                f"stopped: {job.progress.shards_done}/{job.progress.shards_total} shards done; "
                f"`shipyard batch resume {job.id}` runs the rest",
                highlight=False,
            )
            raise typer.Exit(130) from None
    _report(job, as_json)


def _report(job: Any, as_json: bool) -> None:
    if as_json:
        print_json(job)
    elif job.status.value == "SUCCEEDED":
        console.print(
            f"[green]succeeded[/green]: {job.progress.rows_done:,} rows in "
            f"{job.progress.shards_total} files, {_rate(job) or 'done'} -> {job.output} "
            f"(manifest {job.manifest})",
            highlight=False,
            soft_wrap=True,
        )
    end_status(
        job.status.value,
        failed=f"batch job {job.id} failed: {job.error}",
        stopped=f"batch job {job.id} stopped; `shipyard batch resume {job.id}` runs the rest",
    )


_NEED_SERVER = (
    "--detach needs a server to run the job (pass --tracking-uri http://...); "
    "without one the job runs in this command"
)


@command(app, "create")
def create(
    model: Annotated[
        str, typer.Option("--model", "-m", help="churn@champion, churn/3, models:/..., runs:/...")
    ],
    input_: Annotated[str, typer.Option("--input", "-i", help="A CSV or Parquet file.")],
    output: Annotated[str, typer.Option("--output", "-o", help="A folder for the results.")],
    shards: Annotated[
        int | None, typer.Option("--shards", min=1, help="Default: one per CPU.")
    ] = None,
    join_columns: Annotated[
        str | None,
        typer.Option("--join-columns", help="Input columns to copy beside predictions: id,region"),
    ] = None,
    join_all: Annotated[
        bool, typer.Option("--join-all", help="Copy every input column beside predictions.")
    ] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="Output format: parquet or csv.")
    ] = "parquet",
    input_format: Annotated[
        str | None, typer.Option("--input-format", help="csv or parquet (default: extension).")
    ] = None,
    parallelism: Annotated[
        int | None, typer.Option("--parallelism", min=1, help="Shards at once (default: CPUs).")
    ] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, max=10)] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace earlier results in the output folder.")
    ] = False,
    trust_code: Annotated[
        bool, typer.Option("--trust-code", help="Load a python_function (pickled) model.")
    ] = False,
    detach: DetachOpt = False,
    opts: Opts = Opts(),
) -> None:
    """Run a model over a CSV or Parquet file, one output file per shard plus a manifest."""
    if join_columns and join_all:
        fail("give --join-columns or --join-all, not both", 2)
    c = opts.client()
    need_server(c, detach, _NEED_SERVER)
    job = c.batch_transform(
        model,
        input_,
        output,
        shards=shards,
        join_columns=[s.strip() for s in join_columns.split(",") if s.strip()]
        if join_columns
        else None,
        join_all=join_all,
        format=fmt,
        input_format=input_format,
        parallelism=parallelism,
        retries=retries,
        overwrite=overwrite,
        trust_code=trust_code,
        wait=False,
    )
    if detach:
        emit(job, opts.json, f"started batch job {job.id}")
        return
    _follow(c, job, opts.json)


@command(app, "list")
def list_(
    status: Annotated[
        str | None, typer.Option("--status", help="RUNNING, SUCCEEDED, FAILED, STOPPED, ...")
    ] = None,
    page_size: PageSizeOpt = 100,
    page_token: PageTokenOpt = None,
    opts: Opts = Opts(),
) -> None:
    """List batch jobs, newest first."""
    from shipyard.inference.schemas import BatchJobStatus

    status = one_of(status, BatchJobStatus.__members__, "--status", str.upper)
    page = opts.client().list_batch_jobs(
        status=status or None, page_size=page_size, page_token=page_token
    )
    print_page(
        page,
        opts.json,
        ["id", "status", "model", "shards", "rows", "rate", "output", "created"],
        lambda j: [
            j.id,
            j.status.value,
            f"{j.model_name}/{j.model_version}" if j.model_name else j.model,
            f"{j.progress.shards_done}/{j.progress.shards_total}",
            f"{j.progress.rows_done:,}/{j.progress.rows_total:,}",
            _rate(j),
            j.output,
            fmt_time(j.created_at),
        ],
    )


@command(app, "show")
def show(job_id: str, opts: Opts = Opts()) -> None:
    """A job with its progress and its shards."""
    job = opts.client().get_batch_job(job_id)
    if opts.json:
        print_json(job)
        return
    p = job.progress
    lines = [
        ("id", job.id),
        ("status", job.status.value),
        ("model", job.model + (f" (version {job.model_version})" if job.model_version else "")),
        ("input", f"{job.input} ({job.input_format.value})"),
        ("output", f"{job.output} ({job.format.value})"),
        (
            "progress",
            f"{p.shards_done}/{p.shards_total} shards, {p.rows_done:,}/{p.rows_total:,} rows",
        ),
        ("rate", _rate(job)),
        ("started", fmt_time(job.started_at)),
        ("finished", fmt_time(job.finished_at)),
    ]
    if job.join_columns or job.join_all:
        lines.append(("join", "all columns" if job.join_all else ", ".join(job.join_columns or [])))
    if job.error:
        lines.append(("error", job.error))
    if job.manifest:
        lines.append(("manifest", job.manifest))
    print_fields(lines)
    print_table(
        ["shard", "status", "rows", "attempts", "file", "error"],
        [
            [
                s.index,
                s.status.value,
                f"{s.start_row:,}-{s.stop_row:,}",
                s.attempts,
                s.output_file if s.status.value == "SUCCEEDED" else "",
                s.error or "",
            ]
            for s in job.shards or []
        ],
    )


@command(app, "stop")
def stop(job_id: str, opts: Opts = Opts()) -> None:
    """Stop a job: running shards are cancelled; finished shards are kept for a resume."""
    job = opts.client().stop_batch_job(job_id)
    emit(
        job,
        opts.json,
        f"batch job {job.id} {job.status.value.lower()}: {job.progress.shards_done}/"
        f"{job.progress.shards_total} shards done",
    )


@command(app, "resume")
def resume(job_id: str, detach: DetachOpt = False, opts: Opts = Opts()) -> None:
    """Run the shards of a stopped or failed job that have not succeeded."""
    c = opts.client()
    need_server(c, detach, _NEED_SERVER)
    job = c.resume_batch_job(job_id, wait=False)
    if detach:
        emit(job, opts.json, f"resumed batch job {job.id}")
        return
    _follow(c, job, opts.json)


@command(app, "delete", json=False)
def delete(job_id: str, opts: Opts = Opts()) -> None:
    """Forget a finished or stopped job (its output files stay)."""
    opts.client().delete_batch_job(job_id)
    console.print(f"deleted batch job {job_id}", highlight=False)
