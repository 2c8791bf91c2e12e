"""Studio: the web UI, served by the same app at ``/``.

Pages render on the server (Jinja2) by calling the domain services; a little plain JavaScript
adds copy buttons, live relative times and charts (Plotly.js, served from the installed
``plotly`` package: the machines have no internet, so no CDN). Every later capability adds its
pages here, under the same layout.

Auth: with auth on, a person signs in with an API token once; it is kept in an HttpOnly cookie
that only Studio's pages read. The REST API accepts only the ``Authorization`` header, so the
cookie never authorizes an API call (no cross-site request can act through it).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from shipyard.server.lazy import RoutesOnFirstUse

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add Studio's pages and static files to ``app`` (after the API routers).

    They join on the first request that no API route answers (or the first ``url_for`` that
    no API route names); until then a placeholder stands in their place. An API server never
    pays for the pages it does not serve: Jinja2, the templates' environment and the page
    modules are about 2.5 MiB of an idle server.
    """
    app.router.routes.append(RoutesOnFirstUse(app, _add))


def _add(app: FastAPI) -> None:
    from fastapi.staticfiles import StaticFiles

    from shipyard.studio.router import router

    app.include_router(router)
    app.mount("/static/studio", StaticFiles(directory=STATIC_DIR), name="studio-static")
