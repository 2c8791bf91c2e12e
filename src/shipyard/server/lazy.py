"""Routes added to the app on first use: a surface that most servers never serve (Studio's pages,
MLflow's REST API) costs an idle server nothing until a request needs it.

``RoutesOnFirstUse`` stands where the routes go. The first request that could reach them (any
request, or one under ``prefix``) adds them in its place, so every later request meets the same
routes in the same order as if they had been added with the app; the request that added them,
already past this place in the app's loop, is matched and handled here against those same
routes. A ``url_for`` that reaches it adds them too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

# Where a request's route, found by ``matches``, waits for ``handle``.
_CHOSEN = "shipyard.lazy.route"


def _route_path(scope: Scope) -> str:
    """The path the app's routes match against (without the mount's root path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class RoutesOnFirstUse(BaseRoute):
    """A placeholder for the routes that ``add(app)`` appends to ``app``; put it where they
    belong (``app.router.routes.append(...)`` or at an index)."""

    def __init__(
        self, app: FastAPI, add: Callable[[FastAPI], None], prefix: str | None = None
    ) -> None:
        self.app = app
        self._add = add
        self._prefix = prefix
        self._routes: list[BaseRoute] | None = None
        self._lock = threading.Lock()

    def install(self) -> list[BaseRoute]:
        """Add the routes in this placeholder's place (once); return them."""
        with self._lock:
            if self._routes is None:
                routes = self.app.router.routes
                end = len(routes)
                self._add(self.app)
                added = routes[end:]
                del routes[end:]
                place = routes.index(self)
                routes[place : place + 1] = added
                self._routes = added
            return self._routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] not in ("http", "websocket"):
            return Match.NONE, {}
        if self._prefix is not None and not _route_path(scope).startswith(self._prefix):
            return Match.NONE, {}
        # As the app's router picks: the first full match, else the first partial one.
        partial: tuple[Match, Scope] | None = None
        for route in self.install():
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
        for route in self.install():
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)
