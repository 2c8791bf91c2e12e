"""``shipyard jobs ...``: training jobs, thin over ``shipyard.sdk.jobs``."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
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
    fmt_time,
    is_local,
    parse_pairs,
    print_fields,
    print_json,
    print_page,
    print_table,
)

app = typer.Typer(
    help="Training jobs: a script, a function or a built-in algorithm, run on the executor.",
    no_args_is_help=True,
)


def _scalar(value: str) -> Any:
    """A hyperparameter's value as JSON reads it when that is a number, a boolean or null."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    return parsed if isinstance(parsed, int | float | bool) or parsed is None else value


def _follow(c: Any, job: Any, as_json: bool) -> Any:
    """Print the job's log as it is written until it ends; return the final job."""
    from shipyard.sdk import jobs as sdk_jobs

    if as_json:
        return sdk_jobs.wait(job.id, client=c)
    for chunk in sdk_jobs.follow_logs(job.id, client=c):
        sys.stdout.write(chunk.data)
        sys.stdout.flush()
    return sdk_jobs.get(job.id, client=c)


def _report_end(job: Any, as_json: bool) -> None:
    if as_json:
        print_json(job)
    elif job.status.value == "completed":
        err_console.print(
            f"[green]completed[/green]: job {job.id} (run {job.run_id}, "
            f"attempt {job.attempt}/{job.attempts}, {job.runtime_s:.1f} s)",
            highlight=False,
        )
    end_status(
        job.status.value,
        failed=f"job {job.id} failed: {job.failure_reason or 'no reason given'}",
        stopped=f"job {job.id} stopped",
    )


@command(app, "submit")
def submit(
    entry_point: Annotated[
        list[str] | None,
        typer.Argument(help="A .py file, or a command after `--` (e.g. -- python train.py)."),
    ] = None,
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="package.module:function")
    ] = None,
    algorithm: Annotated[
        str | None,
        typer.Option("--algorithm", "-a", help="xgboost, lightgbm, linear, random-forest, kmeans"),
    ] = None,
    source_dir: Annotated[
        str | None, typer.Option("--source-dir", "-s", help="Default: this folder.")
    ] = None,
    hp: Annotated[
        list[str] | None, typer.Option("--hp", "-H", help="A hyperparameter: KEY=VALUE.")
    ] = None,
    input_: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="An input channel: NAME=PATH.")
    ] = None,
    cpus: Annotated[int, typer.Option("--cpus", min=1)] = 1,
    memory_gb: Annotated[float | None, typer.Option("--memory-gb", min=0.001)] = None,
    gpus: Annotated[int, typer.Option("--gpus", min=0)] = 0,
    max_runtime_s: Annotated[float | None, typer.Option("--max-runtime-s", min=0.001)] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, max=100)] = 0,
    instance_count: Annotated[int, typer.Option("--instance-count", min=1)] = 1,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="NAME=REGEX with one group: loss=loss=([0-9.]+)"),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", "-e")] = "jobs",
    env: Annotated[
        list[str] | None, typer.Option("--env", help="An environment variable: KEY=VALUE.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once queued; do not follow the log.")
    ] = False,
    opts: Opts = Opts(),
) -> None:
    """Submit a job and follow its log until it ends (``--detach`` to return at once)."""
    from shipyard.sdk import jobs as sdk_jobs

    ep: Any = None
    if entry_point:
        ep = (
            entry_point[0]
            if len(entry_point) == 1 and entry_point[0].endswith(".py")
            else entry_point
        )
    c = opts.client()
    local = is_local(c)
    if detach and local:
        # The job waits in this store for `shipyard server` or `shipyard worker`: this command
        # must not start running it and then exit under it.
        c.backend.services.jobs.on_submit = None
    job = sdk_jobs.submit(
        ep,
        function=function,
        algorithm=algorithm,
        source_dir=source_dir,
        hyperparameters={k: _scalar(v) for k, v in parse_pairs(hp, "--hp").items()},
        inputs=parse_pairs(input_, "--input"),
        resources={"cpus": cpus, "memory_gb": memory_gb, "gpus": gpus},
        max_runtime_s=max_runtime_s,
        retries=retries,
        instance_count=instance_count,
        metric_definitions=parse_pairs(metric, "--metric"),
        experiment=experiment,
        environment=parse_pairs(env, "--env"),
        idempotency_key=idempotency_key,
        tags=parse_pairs(tag, "--tag"),
        name=name,
        client=c,
    )
    if detach:
        where = (
            "; it runs when `shipyard server` or `shipyard worker` runs on this store"
            if local
            else ""
        )
        emit(job, opts.json, f"queued job {job.id} (run {job.run_id}){where}")
        return
    if not opts.json:
        err_console.print(f"job {job.id} (run {job.run_id}) queued", highlight=False)
    try:
        job = _follow(c, job, opts.json)
    except KeyboardInterrupt:
        if local:
            # The job runs in this process: leaving would leave it to its lease.
            job = sdk_jobs.stop(job.id, reason="interrupted (Ctrl-C)", client=c)
            err_console.print(f"stopping job {job.id}", highlight=False)
            job = sdk_jobs.wait(job.id, timeout_s=30, client=c)
        else:
            err_console.print(
                f"detached; job {job.id} keeps running: `shipyard jobs logs -f {job.id}`",
                highlight=False,
            )
            raise typer.Exit(130) from None
    _report_end(job, opts.json)


@command(app, "list")
def list_(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="queued, starting, running, completed, failed, stopped"),
    ] = None,
    tuning_job_id: Annotated[str | None, typer.Option("--tuning-job-id")] = None,
    page_size: PageSizeOpt = 100,
    page_token: PageTokenOpt = None,
    opts: Opts = Opts(),
) -> None:
    """List jobs, newest first."""
    from shipyard.sdk import jobs as sdk_jobs

    page = sdk_jobs.list(
        status=status or None,
        tuning_job_id=tuning_job_id,
        page_size=page_size,
        page_token=page_token,
        client=opts.client(),
    )
    print_page(
        page,
        opts.json,
        ["id", "name", "status", "attempt", "runtime", "run id", "created", "reason"],
        lambda j: [
            j.id,
            j.name,
            j.status.value,
            f"{j.attempt}/{j.attempts}",
            f"{j.runtime_s:.1f} s",
            j.run_id,
            fmt_time(j.created_at),
            j.failure_reason or "",
        ],
    )


@command(app, "show")
def show(job_id: str, opts: Opts = Opts()) -> None:
    """A job: its status, attempts, run and the findings of its report."""
    from shipyard.sdk import jobs as sdk_jobs

    job = sdk_jobs.get(job_id, client=opts.client())
    if opts.json:
        print_json(job)
        return
    s = job.spec
    what = s.entry_point or s.function or (f"algorithm {s.algorithm}" if s.algorithm else "")
    lines = [
        ("id", job.id),
        ("name", job.name),
        ("status", job.status.value + (" (stop requested)" if job.stop_requested else "")),
        ("runs", what if isinstance(what, str) else " ".join(what) or "a pickled function"),
        ("attempt", f"{job.attempt} of {job.attempts}"),
        ("run", job.run_id or ""),
        ("runtime", f"{job.runtime_s:.1f} s"),
        ("created", fmt_time(job.created_at)),
        ("started", fmt_time(job.started_at)),
        ("ended", fmt_time(job.ended_at)),
    ]
    if job.worker:
        lines.append(("worker", job.worker))
    if job.failure_reason:
        lines.append(("reason", job.failure_reason))
    if job.model_artifact_path:
        lines.append(("model", f"runs:/{job.run_id}/{job.model_artifact_path}"))
    print_fields(lines)
    findings = (job.report or {}).get("findings") or []
    if findings:
        print_table(
            ["rule", "severity", "finding"],
            [[f.get("rule"), f.get("severity"), f.get("message")] for f in findings],
            title="report",
        )


@command(app, "logs")
def logs(
    job_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    after_seq: Annotated[int, typer.Option("--after-seq", min=0)] = 0,
    opts: Opts = Opts(),
) -> None:
    """Print a job's log (stdout and stderr of every attempt and rank, and Shipyard's lines)."""
    from shipyard.sdk import jobs as sdk_jobs

    c = opts.client()
    if follow:
        try:
            for chunk in sdk_jobs.follow_logs(job_id, after_seq=after_seq, client=c):
                if opts.json:
                    sys.stdout.write(orjson.dumps(chunk.model_dump(mode="json")).decode() + "\n")
                else:
                    sys.stdout.write(chunk.data)
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        return
    if opts.json:
        print_json(c.backend.get_job_logs(c._ready(), job_id, after_seq, 10_000))
        return
    sys.stdout.write(sdk_jobs.logs(job_id, after_seq=after_seq, client=c))


@command(app, "stop")
def stop(
    job_id: str,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Return once it has stopped.")] = False,
    opts: Opts = Opts(),
) -> None:
    """Stop a job: a queued one at once, a running one as soon as its worker sees the request."""
    from shipyard.sdk import jobs as sdk_jobs

    c = opts.client()
    job = sdk_jobs.stop(job_id, reason=reason, client=c)
    if wait and not job.status.final:
        job = sdk_jobs.wait(job_id, timeout_s=120, client=c)
    state = job.status.value if job.status.final else "stopping"
    emit(job, opts.json, f"job {job.id} {state}")


@command(app, "delete", json=False)
def delete(job_id: str, opts: Opts = Opts()) -> None:
    """Delete a finished job and its log (its run stays)."""
    from shipyard.sdk import jobs as sdk_jobs

    sdk_jobs.delete(job_id, client=opts.client())
    console.print(f"deleted job {job_id}", highlight=False)
