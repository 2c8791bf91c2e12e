"""Auth on a real server: tokens, roles per project, and the same errors in the SDK.

Users and tokens are made the two ways a deployment makes them: through ``ProjectService`` (the
``shipyard users create`` bootstrap, there are no default credentials) and through the REST API
by an administrator.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from shipyard.core import errors
from shipyard.projects.schemas import UserCreate
from tests.conftest import ServerThread, make_settings
from tests.server.conftest import assert_error


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class AuthServer:
    srv: ServerThread
    admin_token: str

    @property
    def url(self) -> str:
        return self.srv.url

    @property
    def projects(self):  # type: ignore[no-untyped-def]
        return self.srv.services.projects  # type: ignore[attr-defined]

    def client(self, token: str | None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=30)

    def user(self, prefix: str = "u", **kw: object) -> tuple[str, str]:
        """A new user made through the service (the bootstrap path); returns (name, secret)."""
        name = uniq(prefix)
        self.projects.create_user(UserCreate(name=name, **kw))
        return name, self.projects.create_token(name, "test").secret


@pytest.fixture
def auth(make_server) -> AuthServer:
    srv = make_server(auth=True)
    admin = uniq("root")
    srv.services.projects.create_user(UserCreate(name=admin, is_admin=True))
    return AuthServer(srv, srv.services.projects.create_token(admin, "bootstrap").secret)


@dataclass
class Team:
    project: str
    p: str  # URL prefix /projects/<name>
    experiment_id: str
    run_id: str
    tokens: dict[str, str]  # role -> token (viewer, editor, admin, outsider)


@pytest.fixture
def team(auth: AuthServer, project: str) -> Iterator[Team]:
    """A project made by the administrator over REST, with one user per role and an outsider."""
    with auth.client(auth.admin_token) as admin:
        assert admin.post("/projects", json={"name": project}).status_code == 201
        p = f"/projects/{project}"
        exp = admin.post(f"{p}/experiments", json={"name": "e"}).json()["id"]
        run = admin.post(f"{p}/runs", json={"experiment_id": exp}).json()["id"]
        tokens = {}
        for role in ("viewer", "editor", "admin", "outsider"):
            name, secret = auth.user(role)
            tokens[role] = secret
            if role != "outsider":
                r = admin.put(f"{p}/members", json={"user": name, "role": role})
                assert r.status_code == 200, r.text
        yield Team(project, p, exp, run, tokens)


# -- authentication -------------------------------------------------------------------------------


def test_no_token_is_401_json(auth: AuthServer, project: str) -> None:
    with auth.client(None) as c:
        for method, path in [
            ("GET", "/projects"),
            ("POST", "/projects"),
            ("GET", "/me"),
            ("GET", f"/projects/{project}/runs"),
            ("PUT", f"/projects/{project}/runs/r/artifacts/a.txt"),
            ("POST", "/users"),
        ]:
            r = c.request(method, path, json={} if method == "POST" else None)
            assert_error(r, 401, "UNAUTHENTICATED")
            assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer sy_not-a-real-token", "Bearer", "Basic dXNlcjpwYXNz", "sy_no_scheme", "Token sy_x"],
)
def test_bad_token_is_401(auth: AuthServer, header: str) -> None:
    r = httpx.get(auth.url + "/api/v1/me", headers={"authorization": header})
    assert_error(r, 401, "UNAUTHENTICATED")


def test_a_good_token_identifies_its_user(auth: AuthServer) -> None:
    name, secret = auth.user("me")
    with auth.client(secret) as c:
        assert c.get("/me").json() == {"name": name, "is_admin": False}
    with auth.client(auth.admin_token) as c:
        assert c.get("/me").json()["is_admin"] is True


def test_expired_token_is_401(auth: AuthServer) -> None:
    name, _ = auth.user("exp")
    tok = auth.projects.create_token(name, "short", expires_in_s=1)
    with auth.client(tok.secret) as c:
        assert c.get("/me").status_code == 200
        time.sleep(1.2)
        err = assert_error(c.get("/me"), 401, "UNAUTHENTICATED")
        assert "expired" in err["message"]


def test_token_lifetime_is_checked_by_the_service(auth: AuthServer) -> None:
    """The CLI path: ``expires_in_s=0`` must not quietly make a token that never expires."""
    name, _ = auth.user("life")
    for bad in (0, -10, 10**20):
        with pytest.raises(errors.InvalidArgument) as exc:
            auth.projects.create_token(name, "x", expires_in_s=bad)
        assert exc.value.details["field"] == "expires_in_s"


def test_tokens_are_stored_hashed(auth: AuthServer) -> None:
    from shipyard.projects.tables import tokens

    name, secret = auth.user("hash")
    with auth.client(auth.admin_token) as c:
        made = c.post(f"/users/{name}/tokens", json={"name": "second"})
        assert made.status_code == 201
        second = made.json()["secret"]
        listed = c.get(f"/users/{name}/tokens").json()
    assert len(listed) == 2 and all("secret" not in t for t in listed)
    with auth.projects.db.read() as conn:
        rows = [tuple(str(v) for v in r) for r in conn.execute(select(tokens)).all()]
    for s in (secret, second):
        assert not any(s in v for row in rows for v in row), "a token secret is stored in clear"
        assert any(hashlib.sha256(s.encode()).hexdigest() in row for row in rows)


# -- users and tokens over REST -------------------------------------------------------------------


def test_admin_creates_users_and_tokens_over_rest(auth: AuthServer) -> None:
    name = uniq("bob")
    with auth.client(auth.admin_token) as admin:
        r = admin.post("/users", json={"name": name})
        assert r.status_code == 201 and r.json()["name"] == name and not r.json()["is_admin"]
        assert_error(admin.post("/users", json={"name": name}), 409, "ALREADY_EXISTS", "name")
        assert_error(
            admin.post("/users", json={"name": "bad name"}), 400, "INVALID_ARGUMENT", "name"
        )
        r = admin.post(f"/users/{name}/tokens", json={"name": "laptop", "expires_in_s": 3600})
        assert r.status_code == 201
        tok = r.json()
        assert tok["secret"].startswith("sy_") and tok["expires_at"] is not None
        assert_error(admin.post("/users/nobody-here/tokens", json={}), 404, "NOT_FOUND")
        for bad in (0, -1, 10**20):
            assert_error(
                admin.post(f"/users/{name}/tokens", json={"expires_in_s": bad}),
                400,
                "INVALID_ARGUMENT",
                "expires_in_s",
            )
        assert name in [u["name"] for u in admin.get("/users").json()]
    with auth.client(tok["secret"]) as bob:
        assert bob.get("/me").json()["name"] == name
        # Not an administrator: no users, no tokens for others; own tokens are fine.
        assert_error(bob.post("/users", json={"name": uniq("eve")}), 403, "PERMISSION_DENIED")
        assert_error(bob.get("/users"), 403, "PERMISSION_DENIED")
        other, _ = auth.user("other")
        assert_error(bob.post(f"/users/{other}/tokens", json={}), 403, "PERMISSION_DENIED")
        assert_error(bob.get(f"/users/{other}/tokens"), 403, "PERMISSION_DENIED")
        assert bob.post(f"/users/{name}/tokens", json={"name": "mine"}).status_code == 201


# -- roles ----------------------------------------------------------------------------------------


def _writes(t: Team) -> list[tuple[str, str, dict]]:
    """Every kind of write a viewer must be refused, as (method, path, request kwargs)."""
    p, run = t.p, t.run_id
    metric = {"key": "m", "value": 1.0, "step": 0, "timestamp": 1}
    return [
        ("POST", f"{p}/experiments", {"json": {"name": uniq("x")}}),
        ("PATCH", f"{p}/experiments/{t.experiment_id}", {"json": {"description": "d"}}),
        ("POST", f"{p}/runs", {"json": {"experiment_id": t.experiment_id}}),
        ("PATCH", f"{p}/runs/{run}", {"json": {"status": "FINISHED"}}),
        ("POST", f"{p}/runs/{run}/batch", {"json": {"metrics": [metric]}}),
        (
            "POST",
            f"{p}/runs/{run}/metrics",
            {"json": {"keys": ["m"], "values": [1.0], "steps": [0], "timestamps": [1]}},
        ),
        ("PUT", f"{p}/runs/{run}/tags/k", {"json": {"value": "v"}}),
        ("PUT", f"{p}/runs/{run}/artifacts/a.txt", {"content": b"data"}),
        ("POST", f"{p}/runs/{run}/inputs", {"json": []}),
        ("DELETE", f"{p}/runs/{run}", {}),
        ("POST", f"{p}/runs/{run}/restore", {}),
        ("DELETE", f"{p}/experiments/{t.experiment_id}", {}),
    ]


def _admin_only(t: Team) -> list[tuple[str, str, dict]]:
    return [
        ("PUT", f"{t.p}/members", {"json": {"user": "whoever", "role": "viewer"}}),
        ("DELETE", f"{t.p}/members/whoever", {}),
        ("POST", f"{t.p}/purge", {}),
        ("DELETE", t.p, {}),
    ]


def _reads(t: Team) -> list[str]:
    return [
        t.p,
        f"{t.p}/members",
        f"{t.p}/experiments",
        f"{t.p}/experiments/{t.experiment_id}",
        f"{t.p}/runs",
        f"{t.p}/runs/{t.run_id}",
        f"{t.p}/runs/{t.run_id}/artifacts",
    ]


def test_viewer_reads_but_every_write_is_403(auth: AuthServer, team: Team) -> None:
    with auth.client(team.tokens["viewer"]) as c:
        for path in _reads(team):
            assert c.get(path).status_code == 200, path
        assert c.post(f"{team.p}/runs/search", json={}).status_code == 200
        for method, path, kw in _writes(team) + _admin_only(team):
            r = c.request(method, path, **kw)
            err = assert_error(r, 403, "PERMISSION_DENIED")
            assert err["details"]["role"] == "viewer", (method, path)
    # Nothing changed.
    with auth.client(auth.admin_token) as admin:
        run = admin.get(f"{team.p}/runs/{team.run_id}").json()
        assert run["metrics"] == {} and run["tags"] == {} and run["lifecycle"] == "active"
        assert run["status"] == "RUNNING"
        assert admin.get(f"{team.p}/runs/{team.run_id}/artifacts").json()["files"] == []
        assert len(admin.get(f"{team.p}/experiments").json()["data"]) == 1


def test_editor_writes_but_does_not_manage_members(auth: AuthServer, team: Team) -> None:
    with auth.client(team.tokens["editor"]) as c:
        for method, path, kw in _writes(team):
            r = c.request(method, path, **kw)
            assert r.status_code < 300, (method, path, r.text)
        for method, path, kw in _admin_only(team):
            assert_error(c.request(method, path, **kw), 403, "PERMISSION_DENIED")
        run = c.get(f"{team.p}/runs/{team.run_id}").json()
        assert run["metrics"]["m"]["value"] == 1.0
        assert run["created_by"] is not None


def test_project_admin_manages_members(auth: AuthServer, team: Team) -> None:
    newcomer, secret = auth.user("new")
    with auth.client(secret) as n:
        assert_error(n.get(f"{team.p}/runs"), 403, "PERMISSION_DENIED")
    with auth.client(team.tokens["admin"]) as c:
        r = c.put(f"{team.p}/members", json={"user": newcomer, "role": "viewer"})
        assert r.status_code == 200
        assert r.json() == {"project": team.project, "user": newcomer, "role": "viewer"}
        assert_error(
            c.put(f"{team.p}/members", json={"user": newcomer, "role": "owner"}),
            400,
            "INVALID_ARGUMENT",
            "role",
        )
        assert_error(
            c.put(f"{team.p}/members", json={"user": "no-such-user", "role": "viewer"}),
            404,
            "NOT_FOUND",
        )
        members = {m["user"]: m["role"] for m in c.get(f"{team.p}/members").json()}
        assert members[newcomer] == "viewer"
        # But a project admin is not a superuser.
        assert_error(c.post("/users", json={"name": uniq("z")}), 403, "PERMISSION_DENIED")
    with auth.client(secret) as n:
        assert n.get(f"{team.p}/runs").status_code == 200
        assert_error(n.post(f"{team.p}/experiments", json={"name": "no"}), 403, "PERMISSION_DENIED")
    with auth.client(team.tokens["admin"]) as c:
        assert c.put(f"{team.p}/members", json={"user": newcomer, "role": "editor"}).is_success
    with auth.client(secret) as n:
        assert n.post(f"{team.p}/experiments", json={"name": "yes"}).status_code == 201
    with auth.client(team.tokens["admin"]) as c:
        assert c.delete(f"{team.p}/members/{newcomer}").status_code == 204
    with auth.client(secret) as n:
        assert_error(n.get(f"{team.p}/runs"), 403, "PERMISSION_DENIED")


def test_no_membership_is_403_on_another_projects_data(auth: AuthServer, team: Team) -> None:
    with auth.client(team.tokens["outsider"]) as c:
        for path in _reads(team) + [f"{team.p}/runs/{team.run_id}/metrics/m"]:
            assert_error(c.get(path), 403, "PERMISSION_DENIED")
        for method, path, kw in _writes(team):
            assert_error(c.request(method, path, **kw), 403, "PERMISSION_DENIED")
        # Their own project is theirs; the list shows only it.
        mine = uniq("mine")
        assert c.post("/projects", json={"name": mine}).status_code == 201
        names = [p["name"] for p in c.get("/projects").json()["data"]]
        assert names == [mine]


# -- the SDK sees the same exception classes -------------------------------------------------------


def test_sdk_raises_the_same_error_classes(auth: AuthServer, team: Team, monkeypatch) -> None:
    from shipyard.sdk.http import HttpBackend
    from shipyard.tracking.schemas import ExperimentCreate

    monkeypatch.delenv("SHIPYARD_TOKEN", raising=False)
    for token in (None, "sy_wrong"):
        b = HttpBackend(auth.url, token=token, retry_for_s=2)
        try:
            with pytest.raises(errors.Unauthenticated):
                b.get_run(team.project, team.run_id)
        finally:
            b.close()
    b = HttpBackend(auth.url, token=team.tokens["viewer"], retry_for_s=2)
    try:
        assert b.get_run(team.project, team.run_id).id == team.run_id
        with pytest.raises(errors.PermissionDenied) as exc:
            b.create_experiment(team.project, ExperimentCreate(name="nope"))
        assert type(exc.value) is errors.PermissionDenied
        with pytest.raises(errors.PermissionDenied):
            b.log_batch(team.project, team.run_id, metrics=[("m", 1.0, 0, 1)])
    finally:
        b.close()
    b = HttpBackend(auth.url, token=team.tokens["outsider"], retry_for_s=2)
    try:
        with pytest.raises(errors.PermissionDenied):
            b.get_run(team.project, team.run_id)
    finally:
        b.close()
    # The SDK also takes its token from SHIPYARD_TOKEN.
    monkeypatch.setenv("SHIPYARD_TOKEN", team.tokens["editor"])
    b = HttpBackend(auth.url, retry_for_s=2)
    try:
        assert b.log_batch(team.project, team.run_id, metrics=[("m", 2.0, 1, 2)])
    finally:
        b.close()


# -- the CLI bootstrap ---------------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "shipyard"
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_bootstrap_token_works_against_a_server(tmp_path: Path) -> None:
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    home = tmp_path / "home"
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")} | {
        "SHIPYARD_HOME": str(home),
        "SHIPYARD_DATABASE_URL": db_url,
    }
    proc = _cli(env, "users", "create", "alice", "--admin", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["user"]["name"] == "alice" and out["user"]["is_admin"] is True
    secret = out["token"]["secret"]
    assert secret.startswith("sy_")

    again = _cli(env, "users", "create", "alice", "--admin")
    assert again.returncode != 0
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    services = Services.from_settings(make_settings(home, db_url, auth=True))
    try:
        with ServerThread(create_app(services)) as srv:
            good = {"authorization": f"Bearer {secret}"}
            r = httpx.get(srv.url + "/api/v1/me", headers=good)
            assert r.json() == {"name": "alice", "is_admin": True}
            r = httpx.post(srv.url + "/api/v1/projects", json={"name": "first"}, headers=good)
            assert r.status_code == 201
            assert_error(httpx.get(srv.url + "/api/v1/projects"), 401, "UNAUTHENTICATED")
    finally:
        services.close()
