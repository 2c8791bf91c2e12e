"""Run the server: one process, uvloop and httptools, TCP_NODELAY on every accepted socket."""

from __future__ import annotations

import warnings

from shipyard.core.nodelay import nodelay_http_protocol
from shipyard.core.settings import Settings

# pydantic's warning that FastAPI silences where it makes a route's adapters.
UNUSED_ALIAS_WARNING = (
    r"The 'alias' attribute with value .* was provided to the `Field\(\)` function"
)


def serve(settings: Settings, log_level: str = "warning") -> None:
    import uvicorn

    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    settings.check_bind()
    # FastAPI gives each route's body and response adapter the field's alias and silences
    # pydantic's warning that the alias has no effect there; our models build on first use
    # (``defer_build``), after that silence, so the warning would reach the log.
    warnings.filterwarnings("ignore", message=UNUSED_ALIAS_WARNING, category=UserWarning)
    # A long-lived process: a migration runs in a child, so Alembic never stays loaded here.
    app = create_app(Services.from_settings(settings, migrate_apart=True))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        http=nodelay_http_protocol(),
        loop="uvloop",
        # No WebSocket routes, so no WebSocket protocol: uvicorn would import the websockets
        # package for it (about 0.5 MiB of an idle server). An upgrade request is then
        # answered as plain HTTP (and logged), where it was refused after the handshake.
        ws="none",
        access_log=False,
        timeout_keep_alive=30,
    )
