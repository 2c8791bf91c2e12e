"""``shipyard``: the command line entry point.

``shipyard server`` with well-formed options starts the server straight away, without building
the rest of the command line: Typer, Rich and the command modules would stay imported for the
server's whole life (about 4 MiB of an idle server's memory). Anything else (another command,
``--help``, an option that is unknown or malformed, shell completion) goes to the Typer app in
``shipyard.cli.app``, which also declares ``server`` for its help and its errors. Both ways run
``run_server`` and report a failure the same way.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, NoReturn

from shipyard.core.errors import ShipyardError

# What `handle_errors` turns into one line and an exit status, as for every other command.
_REPORTED = (ShipyardError, FileNotFoundError, PermissionError, IsADirectoryError)
_PORT = re.compile(r"0|[1-9][0-9]{0,5}")


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def run_server(host: str | None, port: int | None, log_level: str) -> None:
    """``shipyard server``: settings from the environment, the options over them (checked as
    the settings check them: a port outside 0-65535 is refused, naming it), then serve."""
    from shipyard.core.errors import InvalidArgument
    from shipyard.core.settings import Settings
    from shipyard.server.serve import serve

    if log_level.lower() not in LOG_LEVELS:
        raise InvalidArgument.for_field(
            "log_level", f"expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
        )
    given = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    serve(Settings(**given), log_level=log_level.lower())


def _server_options(argv: list[str]) -> dict[str, Any] | None:
    """``server``'s options from ``argv`` when they are exactly what the Typer app would read
    (``--host``, ``--port`` and ``--log-level``, as ``--opt value`` or ``--opt=value``, the
    last one winning), else None: the Typer app then reads them, with its help and errors."""
    if not argv or argv[0] != "server":
        return None
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return None  # a shell asking for completions
    opts: dict[str, Any] = {"host": None, "port": None, "log_level": "warning"}
    rest = argv[1:]
    while rest:
        name, eq, value = rest.pop(0).partition("=")
        if name not in ("--host", "--port", "--log-level"):
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        # An empty value, or one that looks like an option, is left to the parser that knows
        # what it means; a port is plain digits, read the same by every integer parser.
        if not value or value.startswith("-"):
            return None
        if name == "--port":
            if not _PORT.fullmatch(value):
                return None
            opts["port"] = int(value)
        else:
            opts[name[2:].replace("-", "_")] = value
    return opts


def _exit_reporting(exc: BaseException) -> NoReturn:
    """Exit as the Typer app exits when a command raises ``exc``: one line, a non-zero status."""
    import typer

    from shipyard.cli.common import handle_errors

    def reraise() -> None:
        raise exc

    try:
        handle_errors(reraise)()
    except typer.Exit as done:
        sys.exit(done.exit_code)
    raise AssertionError("handle_errors did not exit")  # pragma: no cover


def main() -> None:
    opts = _server_options(sys.argv[1:])
    if opts is None:
        from shipyard.cli.app import app

        app()
        return
    try:
        run_server(**opts)
    except KeyboardInterrupt:
        sys.exit(130)  # as Typer exits on Ctrl-C
    except _REPORTED as exc:
        _exit_reporting(exc)


def __getattr__(name: str) -> Any:
    if name == "app":  # the Typer app, built on first use
        from shipyard.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
