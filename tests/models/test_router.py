"""The registry's REST API on a real server: the error contract, roles, and who approved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from shipyard.models.format import save_model
from tests.models.conftest import FEATURES
from tests.server.conftest import assert_error
from tests.server.test_auth import AuthServer, Team


def _log_model(c: httpx.Client, t: Team, model: Any, tmp_path: Path) -> str:
    """Upload a model folder into the team's run over REST; return its runs:/ URI."""
    save_model(model, tmp_path / "m", input_example=FEATURES[:2])
    for f in sorted((tmp_path / "m").iterdir()):
        r = c.put(f"{t.p}/runs/{t.run_id}/artifacts/model/{f.name}", content=f.read_bytes())
        assert r.status_code == 201, r.text
    return f"runs:/{t.run_id}/model"


def test_roles_and_the_approval_actor(
    auth: AuthServer, team: Team, small_model: Any, tmp_path: Path
) -> None:
    p = team.p
    with auth.client(team.tokens["editor"]) as editor, auth.client(team.tokens["viewer"]) as viewer:
        uri = _log_model(editor, team, small_model, tmp_path)
        r = editor.post(f"{p}/model-versions", json={"name": "churn", "source": uri})
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 1
        # A viewer reads everything and writes nothing.
        for path in (
            f"{p}/models",
            f"{p}/models/churn",
            f"{p}/models/churn/versions",
            f"{p}/models/churn/versions/1",
            f"{p}/models/churn/versions/1/lineage",
            f"{p}/models/churn/versions/1/files",
            f"{p}/models/churn/versions/1/files/shipyard-model.json",
            f"{p}/model-versions?filter=name%20%3D%20%27churn%27",
        ):
            assert viewer.get(path).status_code == 200, path
        writes = [
            ("POST", f"{p}/models", {"json": {"name": "x"}}),
            ("POST", f"{p}/models/churn/versions", {"json": {"source": uri}}),
            ("PUT", f"{p}/models/churn/aliases/champion", {"json": {"version": 1}}),
            ("POST", f"{p}/models/churn/versions/1/approvals", {"json": {"status": "approved"}}),
            ("PATCH", f"{p}/models/churn", {"json": {"description": "d"}}),
            ("DELETE", f"{p}/models/churn/versions/1", {}),
            ("DELETE", f"{p}/models/churn", {}),
        ]
        for method, path, kw in writes:
            err = assert_error(viewer.request(method, path, **kw), 403, "PERMISSION_DENIED")
            assert err["details"]["role"] == "viewer", (method, path)
        r = editor.post(
            f"{p}/models/churn/versions/1/approvals",
            json={"status": "approved", "comment": "AUC 0.9"},
        )
        assert r.status_code == 200 and r.json()["approval_status"] == "approved"
        history = viewer.get(f"{p}/models/churn/versions/1/approvals").json()
        editor_name = history[0]["actor"]
        assert editor_name.startswith("editor-")
        assert [(h["status"], h["actor"], h["comment"]) for h in history] == [
            ("pending", editor_name, "registered"),
            ("approved", editor_name, "AUC 0.9"),
        ]
    with auth.client(team.tokens["outsider"]) as outsider:
        assert_error(outsider.get(f"{p}/models"), 403, "PERMISSION_DENIED")
    with auth.client(None) as anonymous:
        assert_error(anonymous.get(f"{p}/models"), 401, "UNAUTHENTICATED")


def test_rest_errors_name_the_field(api: httpx.Client, proj: str) -> None:
    assert_error(api.get(f"{proj}/models/nope"), 404, "NOT_FOUND")
    assert_error(
        api.post(f"{proj}/models", json={"name": "bad name"}), 400, "INVALID_ARGUMENT", "name"
    )
    assert api.post(f"{proj}/models", json={"name": "churn"}).status_code == 201
    assert_error(api.post(f"{proj}/models", json={"name": "churn"}), 409, "ALREADY_EXISTS")
    assert_error(
        api.post(f"{proj}/models/churn/versions", json={"source": "s3://x/y"}),
        400,
        "INVALID_ARGUMENT",
        "source",
    )
    assert_error(
        api.get(f"{proj}/model-versions/resolve", params={"uri": "models:/churn"}),
        400,
        "INVALID_ARGUMENT",
        "uri",
    )
    assert_error(
        api.put(f"{proj}/models/churn/aliases/latest", json={"version": 1}),
        400,
        "INVALID_ARGUMENT",
        "alias",
    )
    assert_error(
        api.put(f"{proj}/models/churn/aliases/champion", json={"version": 0}),
        400,
        "INVALID_ARGUMENT",
        "version",
    )
    assert_error(api.get(f"{proj}/models/churn/versions/1"), 404, "NOT_FOUND")
    assert_error(
        api.post(f"{proj}/model-versions/search", json={"filter": "nope = 1"}),
        400,
        "INVALID_ARGUMENT",
        "filter",
    )
    assert_error(
        api.get(f"{proj}/models", params={"page_token": "junk!"}),
        400,
        "INVALID_ARGUMENT",
        "page_token",
    )
