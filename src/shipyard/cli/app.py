"""The ``shipyard`` command line: a Typer app with a command group per resource.

``shipyard.cli.main`` is the entry point; it starts ``shipyard server`` without importing this
module when the options are well formed (see there).
"""

from __future__ import annotations

from typing import Annotated

import typer

from shipyard.cli import admin, experiments, runs
from shipyard.cli import batch as batch_cli
from shipyard.cli import endpoints as endpoints_cli
from shipyard.cli import jobs as jobs_cli
from shipyard.cli import models as models_cli
from shipyard.cli import tuning as tuning_cli
from shipyard.cli.common import JsonOpt, command, console

app = typer.Typer(
    name="shipyard",
    help="Shipyard: an open, self-hosted ML platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(experiments.app, name="experiments")
app.add_typer(runs.app, name="runs")
app.add_typer(models_cli.app, name="models")
app.add_typer(endpoints_cli.app, name="endpoints")
app.add_typer(batch_cli.app, name="batch")
app.add_typer(jobs_cli.app, name="jobs")
app.add_typer(tuning_cli.app, name="tuning")
app.add_typer(admin.db_app, name="db")
app.add_typer(admin.users_app, name="users")


@command(app)
def server(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    log_level: Annotated[str, typer.Option()] = "warning",
) -> None:
    """Serve the REST API (/api/v1, docs at /docs) on this machine."""
    from shipyard.cli.main import run_server

    run_server(host, port, log_level)


@command(app)
def worker(
    slots: Annotated[
        int | None,
        typer.Option("--slots", min=1, help="CPUs' worth of jobs at once (default: one per CPU)."),
    ] = None,
) -> None:
    """Run training jobs from the queue on this machine (or on the Ray cluster in settings)
    until stopped (Ctrl-C or SIGTERM: running jobs go back to the queue)."""
    from shipyard.core.settings import Settings
    from shipyard.jobs.worker import JobWorker
    from shipyard.server.context import Services

    settings = Settings(job_workers_embedded=False)
    services = Services.from_settings(settings)
    try:
        w = JobWorker(services.jobs, services.executor, settings, slots=slots)
        console.print(
            f"worker {w.owner}: {w.slots} slots, lease {settings.job_lease_s:g} s; Ctrl-C to stop",
            highlight=False,
        )
        w.serve_forever()
    finally:
        services.close()


@command(app)
def demo(
    runs_: Annotated[int, typer.Option("--runs", min=1, max=50)] = 4,
    project: Annotated[str, typer.Option("--project", "-p")] = "demo",
) -> None:
    """Train a few small models, tracking each as a run, then say where to look."""
    from shipyard.cli.demo import run_demo

    run_demo(project, runs_)


@app.command()
def gc(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    older_than_s: Annotated[
        int | None,
        typer.Option(
            "--older-than-s",
            help="Purge what was deleted longer ago than this "
            "(default: the restore window; 0 purges every deleted item).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Purge deleted runs and experiments past their restore window and free their storage."""
    admin.gc(project, older_than_s, as_json)


@app.command()
def version() -> None:
    """Print the version."""
    from shipyard import __version__

    console.print(__version__)
