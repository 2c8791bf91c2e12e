"""``shipyard.cli.common.command``: the store options stand where a command's ``Opts`` does, and
a Shipyard error is one line and exit 2. In this process, with typer's runner (no store)."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.testing import CliRunner

from shipyard.cli.common import Opts, command
from shipyard.core.errors import NotFound


def _app() -> typer.Typer:
    app = typer.Typer()

    @command(app)
    def show(
        name: str,
        opts: Opts = Opts(),
        limit: Annotated[int, typer.Option("--limit", min=1)] = 5,
    ) -> None:
        """Print what the command was given."""
        if name == "missing":
            raise NotFound(f"thing {name!r} not found")
        print(name, opts.project, opts.uri, opts.json, limit)

    @command(app, "drop", json=False)
    def drop(name: str, opts: Opts = Opts()) -> None:
        print(name, opts.project, opts.json)

    return app


def _params(app: typer.Typer, name: str) -> list[str]:
    group = typer.main.get_command(app)
    return [p.name or "" for p in group.commands[name].params]  # type: ignore[attr-defined]


def test_the_options_stand_where_opts_does() -> None:
    app = _app()
    assert _params(app, "show") == ["name", "project", "uri", "as_json", "limit"]
    assert _params(app, "drop") == ["name", "project", "uri"]


def test_the_command_gets_them_as_one_opts() -> None:
    runner = CliRunner()
    app = _app()
    res = runner.invoke(app, ["show", "a", "-p", "p1", "--tracking-uri", "http://x", "--json"])
    assert res.exit_code == 0, res.output
    assert res.stdout == "a p1 http://x True 5\n"
    env = {"SHIPYARD_PROJECT": "p2", "SHIPYARD_TRACKING_URI": None}
    res = runner.invoke(app, ["show", "b", "--limit", "2"], env=env)
    assert res.stdout == "b p2 None False 2\n"
    res = runner.invoke(app, ["drop", "c", "--project", "p3"])
    assert res.stdout == "c p3 False\n"
    res = runner.invoke(app, ["drop", "c", "--json"])
    assert res.exit_code == 2 and "--json" in res.output


def test_a_shipyard_error_is_one_line_and_exit_2() -> None:
    res = CliRunner().invoke(_app(), ["show", "missing"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: thing 'missing' not found"
    assert res.stdout == ""


def test_a_bad_value_names_the_option() -> None:
    res = CliRunner().invoke(_app(), ["show", "a", "--limit", "0"])
    assert res.exit_code == 2
    assert "--limit" in res.output
