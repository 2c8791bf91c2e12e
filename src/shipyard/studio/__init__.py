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

import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"

# Where a request's Studio route, found by ``matches``, waits for ``handle``.
_CHOSEN = "shipyard.studio.route"


def install(app: FastAPI) -> None:
    """Add Studio's pages and static files to ``app`` (after the API routers).

    They are added on the first request that no API route answers (or the first ``url_for``
    that no API route names): until then a placeholder stands last among the routes. An API
    server never pays for the pages it does not serve: Jinja2, the templates' environment and
    the page modules are about 3 MiB of an idle server and a tenth of a second of its start.
    """
    app.router.routes.append(_StudioOnFirstUse(app))


def _install_now(app: FastAPI) -> None:
    from fastapi.staticfiles import StaticFiles

    from shipyard.studio.router import router

    app.include_router(router)
    app.mount("/static/studio", StaticFiles(directory=STATIC_DIR), name="studio-static")


class _StudioOnFirstUse(BaseRoute):
    """The last route until Studio is needed. Its first ``matches`` adds Studio's routes after
    it and takes itself out, so every later request meets the same routes, in the same order,
    as if Studio had been added with the app. The request that added them (already past this
    route in the app's loop) is matched and handled here, against those same routes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._routes: list[BaseRoute] | None = None
        self._lock = threading.Lock()

    def _studio_routes(self) -> list[BaseRoute]:
        with self._lock:
            if self._routes is None:
                routes = self.app.router.routes
                first = len(routes)
                _install_now(self.app)
                self._routes = routes[first:]
                routes.remove(self)
            return self._routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # As the app's router picks: the first full match, else the first partial one.
        partial: tuple[Match, Scope] | None = None
        for route in self._studio_routes():
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return match, {**child_scope, _CHOSEN: route}
            if match is Match.PARTIAL and partial is None:
                partial = match, {**child_scope, _CHOSEN: route}
        return partial or (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: BaseRoute = scope.pop(_CHOSEN)
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        for route in self._studio_routes():
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)
