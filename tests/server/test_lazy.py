"""Routes added on first use (``server.lazy``), as the app factory uses them for our API and for
MLflow's REST API: until a request under /api/v1 or /api/2.0/mlflow (or the OpenAPI schema)
needs them they are not imported; then the app's routes are those of an app built with them,
and the request that added them is answered as every later one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, run_python

MLFLOW_MODULES = ("shipyard.tracking.mlflow_compat", "shipyard.models.mlflow_registry")
API_MODULES = tuple(
    f"shipyard.{domain}.router"
    for domain in ("projects", "tracking", "inference", "jobs", "models", "serving", "tuning")
)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Any]:
    from shipyard.server.context import Services

    s = Services.from_settings(make_settings(tmp_path, f"sqlite:///{tmp_path / 'shipyard.db'}"))
    yield s
    s.close()


def _ready(services: Any) -> Any:
    """An app whose MLflow routes are in place before its first request."""
    from shipyard.server.app import create_app

    app = create_app(services)
    app.openapi()
    return app


def _answer(client: TestClient, method: str, path: str, body: Any) -> tuple[int, Any, bytes]:
    r = client.request(method, path, json=body, follow_redirects=False)
    return r.status_code, r.headers.get("content-type"), r.content


@pytest.mark.parametrize(
    ("modules", "other_paths", "first_use"),
    [
        (
            MLFLOW_MODULES,
            ("/healthz", "/api/v1/projects", "/", "/nowhere"),
            "c.get('/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default')",
        ),
        (
            API_MODULES,
            ("/healthz", "/nowhere", "/api/2.0/mlflow/experiments/search"),
            "c.post('/api/v1/projects', json={'name': 'first'})",
        ),
    ],
    ids=["mlflow", "api"],
)
def test_an_app_imports_routes_only_when_a_request_needs_them(
    tmp_path: Path, modules: tuple[str, ...], other_paths: tuple[str, ...], first_use: str
) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from shipyard.server.app import create_app\n"
        "c = TestClient(create_app())\n"
        f"for path in {other_paths!r}:\n"
        "    c.get(path)\n"
        "assert c.get('/healthz').json() == {'status': 'ok'}\n"
        f"print(sorted(m for m in {modules!r} if m in sys.modules))\n"
        f"r = {first_use}\n"
        "assert r.status_code in (200, 201), r.text\n"
        f"print(sorted(m for m in {modules!r} if m in sys.modules))\n"
    )
    out = run_python(["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-2:] == ["[]", str(sorted(modules))]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/projects?page_size=1", None),
        ("POST", "/api/v1/projects", {"name": "lazy"}),
        ("POST", "/api/v1/projects", {"name": ""}),  # 400, naming the field
        ("POST", "/api/v1/projects/default/experiments", {"name": 5}),
        ("PUT", "/api/v1/projects", None),  # 405
        ("GET", "/api/v1/projects/", None),  # redirect without the slash
        ("GET", "/api/v1/nowhere", None),  # 404 in our error shape
        ("GET", "/api/v1/projects/nope/experiments", None),  # NOT_FOUND from a service
        ("GET", "/healthz", None),
        ("HEAD", "/healthz", None),
        ("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default", None),
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": "lazy"}),
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": 5}),  # MLflow's 400
        ("PUT", "/api/2.0/mlflow/experiments/get", None),  # 405
        ("GET", "/api/2.0/mlflow/experiments/get/", None),  # redirect without the slash
        ("GET", "/api/2.0/mlflow/nowhere", None),  # MLflow's 404
        ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=nope", None),
        ("POST", "/api/2.0/mlflow/registered-models/create", {"name": "lazy-model"}),
    ],
)
def test_the_request_that_adds_routes_is_answered_as_later_ones(
    services: Any, method: str, path: str, body: Any
) -> None:
    from shipyard.server.app import create_app

    lazy = create_app(services)
    with TestClient(lazy) as cold:
        first = _answer(cold, method, path, body)
        again = _answer(cold, method, path, body)
    with TestClient(_ready(services)) as warm:
        later = _answer(warm, method, path, body)
    if method == "POST" and first[0] in (200, 201):  # a create: the later ones find it made
        assert again[0] == later[0] not in (200, 201)
    else:
        assert first == again == later
    # The routes took their placeholders' places (Studio's added too, on both, to compare).
    ready = _ready(services)
    for app in (lazy, ready):
        app.url_path_for("studio-static", path="studio.css")
    assert [type(r) for r in lazy.routes] == [type(r) for r in ready.routes]


def test_the_openapi_schema_lists_the_lazy_routes_from_the_start(services: Any) -> None:
    from shipyard.server.app import create_app

    with TestClient(create_app(services)) as c:
        first = c.get("/openapi.json").json()
    with TestClient(create_app(services)) as c:
        assert c.get("/api/2.0/mlflow/experiments/search?max_results=1").status_code == 200
        assert c.get("/api/v1/projects").status_code == 200
        after_use = c.get("/openapi.json").json()
    assert first == after_use
    assert any(p.startswith("/api/2.0/mlflow/") for p in first["paths"])
    assert "/api/2.0/mlflow-artifacts/artifacts" in first["paths"]
    assert "/api/v1/projects/{project}/experiments" in first["paths"]
    # The probe answers from a plain route before the API is added; its twin documents it.
    assert first["paths"]["/healthz"]["get"]["tags"] == ["health"]
    assert list(first["paths"])[0] == "/healthz"


def test_url_for_names_a_route_not_added_yet(services: Any) -> None:
    from shipyard.server.app import create_app
    from shipyard.tracking.mlflow_compat import router

    name = router.routes[0].name  # type: ignore[attr-defined]
    assert str(create_app(services).url_path_for(name)).startswith("/api/2.0/mlflow")
    from shipyard.projects.router import router as projects

    name = projects.routes[0].name  # type: ignore[attr-defined]
    assert str(create_app(services).url_path_for(name)).startswith("/api/v1/projects")
