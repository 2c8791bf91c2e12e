"""Run the server: one process, uvloop and httptools, TCP_NODELAY on every accepted socket."""

from __future__ import annotations

from shipyard.core.nodelay import nodelay_http_protocol
from shipyard.core.settings import Settings


def serve(settings: Settings, log_level: str = "warning") -> None:
    import uvicorn

    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    settings.check_bind()
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
