"""Fixtures for the server tests: a server built from custom settings, and a REST client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerThread, make_settings


def assert_error(resp: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    """Assert the JSON error contract; return the ``error`` object."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "details"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["details"], dict), err
    if field is not None:
        fields = [err["details"].get("field")] + [
            e.get("field") for e in err["details"].get("errors", [])
        ]
        # A query parameter is named with its place ("query.page_size").
        assert any(f in (field, f"query.{field}") for f in fields), err
        if status == 400:
            assert field in err["message"], err
    return err


@pytest.fixture
def make_server(sqlite_home: Path, db_url: str) -> Iterator[Callable[..., ServerThread]]:
    """Start a real server on this test's database with extra settings: ``make_server(auth=True)``."""
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    with ExitStack() as stack:

        def start(**settings: Any) -> ServerThread:
            services = Services.from_settings(make_settings(sqlite_home, db_url, **settings))
            stack.callback(services.close)
            srv = stack.enter_context(ServerThread(create_app(services)))
            srv.services = services  # type: ignore[attr-defined]
            return srv

        yield start


@pytest.fixture
def api(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as c:
        yield c


@pytest.fixture
def proj(api: httpx.Client, project: str) -> str:
    """This test's project, created over REST; returns the URL prefix ``/projects/<name>``."""
    r = api.post("/projects", json={"name": project})
    assert r.status_code == 201, r.text
    return f"/projects/{project}"
