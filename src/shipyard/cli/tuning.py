"""``shipyard tuning ...``: hyperparameter tuning jobs (each trial a training job)."""

from __future__ import annotations

import json
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
    end_status,
    err_console,
    fail,
    fmt_time,
    fmt_value,
    need_server,
    one_of,
    parse_pairs,
    print_json,
    print_page,
    print_table,
    progress_bar,
    sigterm_as_interrupt,
)

app = typer.Typer(
    help="Hyperparameter tuning: search a space of hyperparameters with parallel trials.",
    no_args_is_help=True,
)


def _json_arg(raw: str, option: str) -> Any:
    """JSON given inline, or ``@file.json``."""
    text = raw
    if raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        if not path.is_file():
            fail(f"{option}: no such file: {path}", 2)
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", 2)


def _scalar(v: str) -> Any:
    """A hyperparameter given on the command line: a number or a boolean when it reads as one."""
    try:
        return json.loads(v) if v in ("true", "false") else int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def _progress(tj: Any, as_json: bool) -> Any:
    """Follow the tuning job to its end; Ctrl-C stops it (its running trials too)."""
    with sigterm_as_interrupt():
        try:
            if as_json:
                return tj.wait()
            with progress_bar("trials", "detail") as bar:
                task = bar.add_task(f"tuning {tj.id}", total=tj.info.max_trials, detail="")

                def show(info: Any) -> None:
                    n = info.trials_count
                    best = f"best {fmt_value(info.best.value)}" if info.best else ""
                    bar.update(
                        task,
                        completed=n.total - n.running,
                        detail=f"{n.running} running, {n.pruned} pruned, {n.failed} failed {best}",
                    )

                return tj.wait(on_progress=show, poll_s=0.3)
        except KeyboardInterrupt:
            err_console.print(f"stopping tuning job {tj.id} ...", highlight=False)
            tj.stop()
            raise typer.Exit(130) from None


def _print_job(info: Any) -> None:
    console.print(
        f"[bold]{info.name}[/bold] {info.id}  {info.status.value}  "
        f"{info.objective.direction.value} {info.objective.metric}  strategy {info.strategy.value}"
        f" (early stopping: {info.early_stopping.value})",
        highlight=False,
        soft_wrap=True,
    )
    if info.failure_reason:
        console.print(f"[red]failure:[/red] {info.failure_reason}", highlight=False)
    names = list(info.space)
    rows = []
    for t in info.trials or []:
        rows.append(
            [
                t.number,
                t.state.value,
                t.value,
                *[t.params.get(n) for n in names],
                len(t.intermediate_values),
                t.job_id or "",
                t.run_id or "",
            ]
        )
    print_table(["trial", "state", info.objective.metric, *names, "steps", "job", "run id"], rows)
    if info.best is not None:
        params = ", ".join(f"{k}={fmt_value(v)}" for k, v in info.best.params.items())
        console.print(
            f"[green]best[/green]: trial {info.best.number}, {info.objective.metric}="
            f"{fmt_value(info.best.value)} ({params}); run {info.best.run_id}",
            highlight=False,
            soft_wrap=True,
        )


@command(app, "create")
def create(
    space: Annotated[
        str,
        typer.Option(
            "--space",
            help='The search space as JSON or @file.json: {"lr": {"type": "float", "low": 1e-4, '
            '"high": 0.1, "log": true}, "depth": {"type": "int", "low": 2, "high": 8}, '
            '"booster": {"type": "categorical", "choices": ["gbdt", "dart"]}}',
        ),
    ],
    objective: Annotated[
        str, typer.Option("--objective", help="The metric the trials log (latest value counts).")
    ],
    direction: Annotated[str, typer.Option("--direction", help="minimize or maximize")] = (
        "minimize"
    ),
    strategy: Annotated[
        str, typer.Option("--strategy", help="random, grid, bayesian, hyperband or asha")
    ] = "bayesian",
    early_stopping: Annotated[
        str | None, typer.Option("--early-stopping", help="none, asha or hyperband")
    ] = None,
    max_trials: Annotated[int, typer.Option("--max-trials", min=1)] = 20,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1)] = 1,
    warm_start_from: Annotated[
        list[str] | None, typer.Option("--warm-start-from", help="An earlier tuning job (repeat).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    entry_point: Annotated[
        str | None, typer.Option("--entry-point", "-e", help="The training script (.py).")
    ] = None,
    source_dir: Annotated[str | None, typer.Option("--source-dir", "-s")] = None,
    algorithm: Annotated[
        str | None,
        typer.Option("--algorithm", help="xgboost, lightgbm, linear, random-forest, kmeans"),
    ] = None,
    hyperparameter: Annotated[
        list[str] | None,
        typer.Option("--hyperparameter", "-H", help="A static hyperparameter KEY=VALUE (repeat)."),
    ] = None,
    input_: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="An input channel NAME=PATH (repeat).")
    ] = None,
    metric_definition: Annotated[
        list[str] | None,
        typer.Option("--metric-definition", help="NAME=REGEX read from the trial's log (repeat)."),
    ] = None,
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="CPUs per trial.")] = 1,
    max_runtime_s: Annotated[float | None, typer.Option("--max-runtime-s")] = None,
    trial: Annotated[
        str | None,
        typer.Option("--trial", help="The whole trial job spec as JSON or @file.json instead."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Return once started (it runs on the server).")
    ] = False,
    opts: Opts = Opts(),
) -> None:
    """Start a tuning job; each trial runs the training job with sampled hyperparameters."""
    from shipyard.sdk import tuning as sdk_tuning

    c = opts.client()
    need_server(
        c,
        detach,
        "--detach needs a server to drive the trials (pass --tracking-uri http://...); "
        "without one the tuning job runs in this command",
    )
    template: dict[str, Any] = _json_arg(trial, "--trial") if trial else {}
    if not isinstance(template, dict):
        fail("--trial: expected a JSON object", 2)
    if entry_point:
        template["entry_point"] = entry_point
    if source_dir:
        template["source_dir"] = str(Path(source_dir).expanduser().resolve())
    if algorithm:
        template["algorithm"] = algorithm
    if hyperparameter:
        template["hyperparameters"] = {
            **template.get("hyperparameters", {}),
            **{k: _scalar(v) for k, v in parse_pairs(hyperparameter, "--hyperparameter").items()},
        }
    if input_:
        template["inputs"] = {
            **template.get("inputs", {}),
            **{
                k: str(Path(v).expanduser().resolve()) if "://" not in v else v
                for k, v in parse_pairs(input_, "--input").items()
            },
        }
    if metric_definition:
        template["metric_definitions"] = [
            {"name": k, "regex": v}
            for k, v in parse_pairs(metric_definition, "--metric-definition").items()
        ]
    if cpus != 1:
        template.setdefault("resources", {})["cpus"] = cpus
    if max_runtime_s is not None:
        template["max_runtime_s"] = max_runtime_s
    space_value = _json_arg(space, "--space")
    if not isinstance(space_value, dict):
        fail("--space: expected a JSON object of parameters", 2)
    tj = sdk_tuning.create(
        space=space_value,
        objective=objective,
        direction=direction,
        strategy=strategy,
        early_stopping=early_stopping,
        max_trials=max_trials,
        max_parallel=max_parallel,
        warm_start_from=warm_start_from or [],
        name=name,
        experiment=experiment,
        seed=seed,
        trial=template,
        client=c,
    )
    if detach:
        emit(tj.info, opts.json, f"started tuning job {tj.id}")
        return
    tj = _progress(tj, opts.json)
    if opts.json:
        print_json(tj.info)
    else:
        _print_job(tj.info)
    end_status(
        tj.status.value,
        failed=f"tuning job {tj.id} failed: {tj.info.failure_reason}",
        stopped=f"tuning job {tj.id} was stopped",
    )


@command(app, "list")
def list_(
    status: Annotated[
        str | None,
        typer.Option("--status", help="running, stopping, completed, failed or stopped"),
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="job or function")] = None,
    page_size: PageSizeOpt = 100,
    page_token: PageTokenOpt = None,
    opts: Opts = Opts(),
) -> None:
    """List tuning jobs, newest first."""
    from shipyard.tuning.schemas import TuningJobKind, TuningJobStatus

    status = one_of(status, TuningJobStatus.__members__, "--status", str.lower)
    kind = one_of(kind, TuningJobKind.__members__, "--kind", str.lower)
    c = opts.client()
    page = c.backend.list_tuning_jobs(
        c._ready(),
        status=TuningJobStatus(status) if status else None,
        kind=TuningJobKind(kind) if kind else None,
        page_size=page_size,
        page_token=page_token,
    )
    print_page(
        page,
        opts.json,
        ["id", "name", "kind", "status", "objective", "trials", "best", "created"],
        lambda j: [
            j.id,
            j.name,
            j.kind.value,
            j.status.value,
            f"{j.objective.direction.value} {j.objective.metric}",
            f"{j.trials_count.total}/{j.max_trials}",
            j.best.value if j.best else None,
            fmt_time(j.created_at),
        ],
    )


@command(app, "show")
def show(tuning_job_id: str, opts: Opts = Opts()) -> None:
    """A tuning job: its trials (params, objective, state) and the best one."""
    c = opts.client()
    info = c.backend.get_tuning_job(c._ready(), tuning_job_id)
    if opts.json:
        print_json(info)
        return
    _print_job(info)


@command(app, "stop")
def stop(tuning_job_id: str, opts: Opts = Opts()) -> None:
    """Stop a tuning job and its running trials."""
    c = opts.client()
    info = c.backend.stop_tuning_job(c._ready(), tuning_job_id)
    emit(info, opts.json, f"tuning job {info.id}: {info.status.value}")


@command(app, "resume")
def resume(
    tuning_job_id: str,
    detach: Annotated[
        bool, typer.Option("--detach", help="Return at once (the server drives it).")
    ] = False,
    opts: Opts = Opts(),
) -> None:
    """Drive a tuning job whose process ended (a closed notebook): on the server, or here."""
    from shipyard.sdk import tuning as sdk_tuning

    c = opts.client()
    need_server(c, detach, "--detach needs a server (pass --tracking-uri http://...)")
    tj = sdk_tuning.TuningJob(c, c.backend.resume_tuning_job(c._ready(), tuning_job_id))
    if not detach:
        tj = _progress(tj, opts.json)
    if opts.json:
        print_json(tj.info)
    else:
        _print_job(tj.info)


@command(app, "delete", json=False)
def delete(tuning_job_id: str, opts: Opts = Opts()) -> None:
    """Forget a finished tuning job (its trials' jobs and runs stay)."""
    c = opts.client()
    c.backend.delete_tuning_job(c._ready(), tuning_job_id)
    console.print(f"deleted tuning job {tuning_job_id}", highlight=False)


@command(app, "register-best")
def register_best(
    tuning_job_id: str,
    model_name: Annotated[str, typer.Option("--model-name", "-m", help="The registered model.")],
    artifact_path: Annotated[
        str, typer.Option("--artifact-path", help="The model folder in the best trial's run.")
    ] = "model",
    opts: Opts = Opts(),
) -> None:
    """Register the best trial's model as a new version of a registered model."""
    from shipyard.tuning.schemas import RegisterBest

    c = opts.client()
    mv = c.backend.register_best_trial(
        c._ready(),
        tuning_job_id,
        RegisterBest(model_name=model_name, artifact_path=artifact_path),
    )
    emit(mv, opts.json, f"registered {mv.name} version {mv.version} from {mv.source_uri}")
