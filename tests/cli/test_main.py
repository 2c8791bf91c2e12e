"""The entry point's own reading of ``shipyard server``'s options: it starts the server only
where the Typer app would read the same values, and leaves everything else to the Typer app."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.cli.main import _server_options
from tests.conftest import run_python


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["server"], {"host": None, "port": None, "log_level": "warning"}),
        (["server", "--port", "8081"], {"host": None, "port": 8081, "log_level": "warning"}),
        (
            ["server", "--host=0.0.0.0", "--port=0", "--log-level", "info"],
            {"host": "0.0.0.0", "port": 0, "log_level": "info"},
        ),
        (  # the last one wins, as with Click
            ["server", "--port", "1", "--port", "2"],
            {"host": None, "port": 2, "log_level": "warning"},
        ),
    ],
)
def test_well_formed_options_start_the_server_directly(
    argv: list[str], expected: dict[str, object]
) -> None:
    assert _server_options(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["version"],
        ["--help", "server"],
        ["server", "--help"],
        ["server", "-h"],
        ["server", "extra"],
        ["server", "--bogus"],
        ["server", "--port"],
        ["server", "--port", "abc"],
        ["server", "--port", "-5"],
        ["server", "--port", "+5"],
        ["server", "--port", " 5"],
        ["server", "--port", "08080"],
        ["server", "--port="],
        ["server", "--host", "--port"],
        ["server", "--host="],
        ["server", "--ho", "x"],
    ],
)
def test_anything_else_goes_to_the_typer_app(argv: list[str]) -> None:
    assert _server_options(argv) is None


def test_shell_completion_goes_to_the_typer_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_SHIPYARD_COMPLETE", "complete_bash")
    assert _server_options(["server"]) is None


def test_the_typer_app_is_still_reachable_from_the_entry_module() -> None:
    from shipyard.cli import main

    assert main.app.info.name == "shipyard"
    assert "server" in [c.name or c.callback.__name__ for c in main.app.registered_commands]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "error: port: Input should be less than or equal to 65535"),
        (["--port=-1"], "error: port: Input should be greater than or equal to 0"),
        (
            ["--log-level", "nonsense"],
            "error: log_level: expected one of critical, error, warning, info, debug, trace, "
            "got 'nonsense'",
        ),
    ],
)
def test_a_bad_server_option_is_one_line_naming_it(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """Refused before anything starts, by either way in (the direct start or the Typer app)."""
    out = run_python(["-m", "shipyard.cli.main", "server", *args], tmp_path, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [message]
