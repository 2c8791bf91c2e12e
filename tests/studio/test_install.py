"""Studio joins the app on the first request that no API route answers: until then a server
has not imported it, and from then on the app's routes are those of Studio added up front.
The request that adds it is answered as every later one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, run_python


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Any]:
    from shipyard.server.context import Services

    s = Services.from_settings(make_settings(tmp_path, f"sqlite:///{tmp_path / 'shipyard.db'}"))
    yield s
    s.close()


def _answer(client: TestClient, method: str, path: str) -> tuple[int, str | None, bytes]:
    r = client.request(method, path, follow_redirects=False)
    return r.status_code, r.headers.get("content-type"), r.content


def test_an_app_imports_studio_only_for_its_first_page(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from shipyard.server.app import create_app\n"
        "app = create_app()\n"
        "c = TestClient(app)\n"
        "assert c.get('/healthz').status_code == 200\n"
        "assert c.get('/api/v1/projects').status_code == 200\n"
        "print(sorted(m for m in ('jinja2', 'shipyard.studio.router') if m in sys.modules))\n"
        "r = c.get('/')\n"
        "assert r.status_code == 200 and r.headers['content-type'].startswith('text/html'), r\n"
        "print(sorted(m for m in ('jinja2', 'shipyard.studio.router') if m in sys.modules))\n"
    )
    out = run_python(["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-2:] == ["[]", "['jinja2', 'shipyard.studio.router']"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),  # a page
        ("POST", "/"),  # a page's path with another method: 405
        ("GET", "/projects/nope"),  # a page's 404
        ("GET", "/projects/nope/"),  # a redirect to the path without the slash
        ("GET", "/static/studio/studio.css"),  # the static mount
        ("PUT", "/static/studio/studio.css"),
        ("GET", "/nowhere"),  # neither Studio nor the API: the JSON 404
        ("GET", "/api/v1/nowhere"),
    ],
)
def test_the_request_that_adds_studio_is_answered_as_later_ones(
    services: Any, method: str, path: str
) -> None:
    from shipyard.server.app import create_app

    ready = create_app(services)
    ready.url_path_for("studio-static", path="studio.css")  # adds Studio without a request
    lazy = create_app(services)
    with TestClient(ready) as warm, TestClient(lazy) as cold:
        first = _answer(cold, method, path)
        assert first == _answer(warm, method, path)
        assert first == _answer(cold, method, path)
    # Studio took the placeholder's place: the same routes, in the same order (MLflow's API,
    # also added on first use, added on both to compare).
    for app in (lazy, ready):
        app.openapi()
    assert [type(r) for r in lazy.routes] == [type(r) for r in ready.routes]
    assert type(lazy.routes[-1]).__name__ == "Mount"


def test_the_openapi_schema_is_the_same_before_and_after_studio_joins(services: Any) -> None:
    from shipyard.server.app import create_app

    app = create_app(services)
    with TestClient(app) as c:
        before = c.get("/openapi.json").json()
        assert c.get("/").status_code == 200
        assert c.get("/openapi.json").json() == before
