"""One endpoint's life through the surfaces a user has: the ``shipyard endpoints`` command
(the installed entry point, in a subprocess), the SDK (``Client.endpoint(...).predict``) and
the REST API of a real server on 127.0.0.1, with a real model server behind it.

The update and the rollback happen while threads keep predicting, straight to the endpoint and
through the main server: not one request may fail, and the answers switch from one model
version to the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import Models, Register, pid_alive, wait_for

ENTRY = Path(sys.executable).with_name("shipyard")
SHIPYARD = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "shipyard.cli.main"]

# The server runs on SQLite here: the service tests cover PostgreSQL.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@dataclass
class Cli:
    url: str | None  # a server, or None for the in-process backend on ``home``
    project: str
    home: Path

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        env.update(
            SHIPYARD_HOME=str(self.home), SHIPYARD_PROJECT=self.project, COLUMNS="250", NO_COLOR="1"
        )
        if self.url:
            env["SHIPYARD_TRACKING_URI"] = self.url
        p = subprocess.run(
            [*SHIPYARD, "endpoints", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        assert "Traceback" not in p.stdout + p.stderr, p
        if ok:
            assert p.returncode == 0, p
        return p

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@dataclass
class Load:
    """Threads that predict one row in a loop until stopped, recording every answer."""

    predict: list[Any]
    answers: list[tuple[float, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Load:
        def loop(fn: Any) -> None:
            while not self.stop.is_set():
                try:
                    self.answers.append((time.monotonic(), int(fn()[0])))
                except Exception as exc:  # every failure counts, whatever it is
                    self.failures.append(f"{type(exc).__name__}: {exc}")

        self.threads = [threading.Thread(target=loop, args=(fn,)) for fn in self.predict]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def since(self, t: float) -> list[Any]:
        return [a for ts, a in self.answers if ts > t]


@SQLITE_ONLY
def test_an_endpoint_through_the_cli_the_sdk_and_the_server(
    server: Any,
    services: Any,
    project: str,
    register: Register,
    models: Models,
    reap: None,
    tmp_path: Path,
) -> None:
    from shipyard.sdk.client import Client
    from shipyard.sdk.http import HttpBackend

    register(project, "fraud", models.pos, alias="champion")  # answers 1 for the test row
    register(project, "fraud", models.neg)  # answers 0
    cli = Cli(server.url, project, tmp_path / "cli-home")

    created = cli.json("create", "fraud", "--model", "fraud@champion", "--max-wait-ms", "1")
    assert created["status"] == "InService"
    assert created["variants"][0]["model_version"] == "1"
    assert created["batching"]["max_wait_ms"] == 1.0
    url = created["url"]

    client = Client(project=project, backend=HttpBackend(server.url, retry_for_s=5))
    direct = client.endpoint("fraud")
    proxied = type(direct)(client, "fraud", direct=False)  # through the main server's port
    row = models.row()
    assert direct.predict(row).tolist() == [1]
    assert proxied.predict(row).tolist() == [1]

    # The list shows status, variants, traffic and latency, as JSON and as a table.
    listed = cli.json("list")["data"]
    assert [(e["name"], e["status"], e["url"]) for e in listed] == [("fraud", "InService", url)]
    assert listed[0]["requests"] == 2 and listed[0]["latency_p50_ms"] is not None
    table = cli("list").stdout
    assert "fraud" in table and "InService" in table and "primary=fraud v1 100%" in table

    # Update to version 2 while four threads predict (three straight, one through the server).
    with Load([lambda: direct.predict(row)] * 3 + [lambda: proxied.predict(row)]) as load:
        wait_for(lambda: len(load.answers) > 20, 30)
        updated = cli.json("update", "fraud", "--model", "fraud/2")
        done = time.monotonic()
        wait_for(lambda: len(load.since(done)) > 20, 30)
    assert load.failures == []
    assert updated["deployment"] == 2 and updated["variants"][0]["model_version"] == "2"
    assert set(load.since(done)) == {0}  # only the new version answers after the update
    assert load.answers[0][1] == 1

    # Roll back with the SDK, under load again: version 1 answers.
    with Load([lambda: direct.predict(row)] * 3 + [lambda: proxied.predict(row)]) as load:
        wait_for(lambda: len(load.answers) > 20, 30)
        back = client.rollback_endpoint("fraud")
        done = time.monotonic()
        wait_for(lambda: len(load.since(done)) > 20, 30)
    assert load.failures == []
    assert back.deployment == 3 and back.variants[0].model_version == "1"
    assert set(load.since(done)) == {1}

    shown = cli.json("show", "fraud")
    assert [(d["number"], d["reason"]) for d in shown["deployments"]] == [
        (3, "rollback"),
        (2, "update"),
        (1, "create"),
    ]
    assert shown["endpoint"]["requests"] > 20  # counted since the rollback loaded v1 again
    text = cli("show", "fraud").stdout
    assert "deployments" in text and "rollback" in text

    # invoke: one request from the command line, JSON or CSV.
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    out = cli("invoke", "fraud", "--data", json.dumps(body)).stdout
    assert json.loads(out) == {"predictions": [1]}
    csv = tmp_path / "rows.csv"
    row.to_csv(csv, index=False)
    assert json.loads(cli("invoke", "fraud", "--file", str(csv)).stdout) == {"predictions": [1]}
    bad = cli(
        "invoke",
        "fraud",
        "--data",
        '{"dataframe_split": {"columns": ["f0"], "data": [[1]]}}',
        ok=False,
    )
    assert bad.returncode == 2 and "f1" in bad.stderr  # the missing column is named

    pid = client.get_endpoint("fraud").pid
    assert cli("delete", "fraud").returncode == 0
    assert not pid_alive(pid)
    assert cli.json("list")["data"] == []
    gone = cli("show", "fraud", ok=False)
    assert gone.returncode == 2 and "fraud" in gone.stderr


@SQLITE_ONLY
def test_the_rest_api_names_what_is_wrong(
    server: Any, services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    from tests.server.conftest import assert_error

    register(project, "fraud", models.pos)
    base = f"{server.url}/api/v1/projects/{project}/endpoints"
    with httpx.Client(timeout=30) as http:
        assert_error(http.get(f"{base}/nope"), 404, "NOT_FOUND", "name")
        assert_error(
            http.post(base, json={"name": "x", "model": "not a uri"}),
            400,
            "INVALID_ARGUMENT",
            "model",
        )
        assert_error(http.post(base, json={"name": "x"}), 400, "INVALID_ARGUMENT", "model")
        assert_error(
            http.post(base, json={"name": "x", "model": "fraud@champion"}),
            404,
            "NOT_FOUND",
            "model",
        )
        assert_error(
            http.post(base, json={"name": "x", "model": "fraud/1", "capture": {"sample_rate": 2}}),
            400,
            "INVALID_ARGUMENT",
            "capture.sample_rate",
        )
        assert_error(http.post(f"{base}/nope/invocations", content=b"{}"), 404, "NOT_FOUND", "name")
        assert_error(
            http.patch(f"{base}/nope", json={"model": "fraud/1"}), 404, "NOT_FOUND", "name"
        )
        assert_error(http.delete(f"{base}/nope"), 404, "NOT_FOUND", "name")

        r = http.post(base, json={"name": "fraud", "model": "fraud/1"})
        assert r.status_code == 201 and r.json()["status"] == "Creating"
        ep = wait_for(lambda: (e := http.get(f"{base}/fraud").json())["status"] != "Creating" and e)
        assert ep["status"] == "InService"
        assert_error(
            http.post(base, json={"name": "fraud", "model": "fraud/1"}),
            409,
            "ALREADY_EXISTS",
            "name",
        )
        assert_error(
            http.patch(f"{base}/fraud", json={"weights": {"blue": 1}}),
            400,
            "INVALID_ARGUMENT",
            "weights.blue",
        )
        assert_error(http.post(f"{base}/fraud/rollback", json={}), 400, "INVALID_ARGUMENT", "to")
        # The pass-through speaks the endpoint's own protocols, and nothing else of it.
        meta = http.get(f"{base}/fraud/v2/models/fraud")
        assert meta.status_code == 200 and meta.json()["name"] == "fraud"
        infer = http.post(
            f"{base}/fraud/v2/models/fraud/infer",
            json={
                "inputs": [
                    {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
                    for c, v in zip(["f0", "f1", "f2", "f3"], [3.0, 0.1, -0.2, 0.3], strict=True)
                ]
            },
        )
        assert infer.status_code == 200 and infer.json()["outputs"][0]["data"] == [1]
        missing = http.post(
            f"{base}/fraud/invocations",
            json={"dataframe_split": {"columns": ["f0"], "data": [[1.0]]}},
        )
        assert missing.status_code == 400 and "f1" in missing.text
        assert_error(http.post(f"{base}/fraud/v2/../shipyard/reload"), 404, "NOT_FOUND")
        assert http.post(f"{base}/fraud/v2/%2E%2E/shipyard/reload").status_code == 400
        assert http.delete(f"{base}/fraud").status_code == 204
        assert http.get(base).json()["data"] == []


def test_shipyard_server_stops_its_endpoints_and_starts_them_again(
    tmp_path: Path, models: Models, project: str
) -> None:
    """The real ``shipyard server`` process: its endpoints are its children, stopped when it
    stops and started again, at the same URL, when it starts."""
    import signal

    from shipyard.server.context import Services
    from tests.conftest import free_port, make_settings
    from tests.serving.conftest import register_model

    home = tmp_path / "home"
    local = Services.from_settings(make_settings(home, f"sqlite:///{home / 'shipyard.db'}"))
    register_model(local, project, "fraud", models.pos, models.X.head(5), tmp_path / "m1")
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1/projects/{project}/endpoints"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["SHIPYARD_HOME"] = str(home)

    def start_server() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*SHIPYARD, "server", "--port", str(port)], env=env)

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60)
        return proc

    def serving() -> Any:
        e = httpx.get(f"{base}/fraud").json()
        return e if e["status"] == "InService" and e["ready"] else None

    server_proc = start_server()
    try:
        assert httpx.post(base, json={"name": "fraud", "model": "fraud/1"}).status_code == 201
        first = wait_for(serving, 60)
        server_proc.send_signal(signal.SIGTERM)
        assert server_proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises it when done
        assert not pid_alive(first["pid"])  # stopped with the server
        # Still meant to serve: the store says InService.
        assert local.endpoints.get(project, "fraud", with_stats=False).status.value == "InService"

        server_proc = start_server()
        second = wait_for(serving, 60)
        assert second["pid"] != first["pid"] and second["url"] == first["url"]
        row = models.row()
        body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
        r = httpx.post(f"{second['url']}/invocations", json=body)
        assert r.status_code == 200 and r.json() == {"predictions": [1]}
        assert httpx.delete(f"{base}/fraud").status_code == 204
        assert not pid_alive(second["pid"])
    finally:
        if server_proc.poll() is None:
            server_proc.send_signal(signal.SIGTERM)
            server_proc.wait(60)
        local.close()


def test_the_cli_serves_a_model_with_no_server_running(
    tmp_path: Path, models: Models, project: str
) -> None:
    """On a laptop with no server: the command starts the endpoint, waits until it serves and
    exits; the endpoint keeps serving until deleted."""
    from shipyard.server.context import Services
    from tests.conftest import make_settings
    from tests.serving.conftest import register_model

    home = tmp_path / "home"
    local = Services.from_settings(make_settings(home, f"sqlite:///{home / 'shipyard.db'}"))
    try:
        register_model(local, project, "fraud", models.pos, models.X.head(5), tmp_path / "m1")
        cli = Cli(None, project, home)
        created = cli.json("create", "fraud", "--model", "fraud/1")
        assert created["status"] == "InService"
        row = models.row()
        body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
        r = httpx.post(f"{created['url']}/invocations", json=body)
        assert r.status_code == 200 and r.json() == {"predictions": [1]}
        listed = cli.json("list")["data"]
        assert listed[0]["ready"] is True and listed[0]["requests"] == 1
        cli("delete", "fraud")
        assert not pid_alive(created["pid"])
    finally:
        for ep in local.endpoints.list(project, with_stats=False).data:
            local.endpoints.delete(project, ep.name)
        local.close()


@SQLITE_ONLY
def test_with_auth_on_endpoints_need_a_token_and_a_role(
    sqlite_home: Path,
    db_url: str,
    services: Any,
    project: str,
    register: Register,
    models: Models,
    reap: None,
) -> None:
    from shipyard.projects.schemas import Role, UserCreate
    from shipyard.server.app import create_app
    from shipyard.server.context import Services
    from tests.conftest import ServerThread, make_settings

    register(project, "fraud", models.pos)
    tokens = {}
    for role in ("viewer", "editor", "outsider"):
        name = f"{role}-{project}"
        services.projects.create_user(UserCreate(name=name))
        tokens[role] = services.projects.create_token(name, "t").secret
        if role != "outsider":
            services.projects.set_membership(project, name, Role(role))
    authed = Services.from_settings(make_settings(sqlite_home, db_url, auth=True))
    row = models.row()
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    try:
        with ServerThread(create_app(authed)) as srv:
            base = f"{srv.url}/api/v1/projects/{project}/endpoints"

            def as_(who: str | None) -> httpx.Client:
                headers = {"authorization": f"Bearer {tokens[who]}"} if who else {}
                return httpx.Client(headers=headers, timeout=30)

            with as_(None) as anon, as_("viewer") as viewer, as_("editor") as editor:
                with as_("outsider") as outsider:
                    assert anon.get(base).status_code == 401
                    assert anon.post(f"{base}/fraud/invocations", json=body).status_code == 401
                    assert outsider.get(base).status_code == 403
                create = {"name": "fraud", "model": "fraud/1"}
                assert viewer.post(base, json=create).status_code == 403
                assert editor.post(base, json=create).status_code == 201

                def serving() -> Any:
                    e = viewer.get(f"{base}/fraud").json()
                    return e if e["status"] == "InService" else None

                ep = wait_for(serving, 60)
                r = viewer.post(f"{base}/fraud/invocations", json=body)
                assert r.status_code == 200 and r.json() == {"predictions": [1]}
                # The endpoint's own port: health probes are open, everything else wants the
                # endpoint's invoke key, which an editor (not a viewer) can read.
                own = ep["url"]
                assert httpx.get(f"{own}/v2/health/ready").status_code == 200
                assert httpx.post(f"{own}/invocations", json=body).status_code == 401
                assert httpx.get(f"{own}/shipyard/stats").status_code == 401
                assert viewer.get(f"{base}/fraud/invoke-key").status_code == 403
                key = editor.get(f"{base}/fraud/invoke-key").json()["key"]
                assert key and key not in tokens.values()
                wrong = {"authorization": f"Bearer {tokens['editor']}"}
                assert httpx.post(f"{own}/invocations", json=body, headers=wrong).status_code == 401
                ok = httpx.post(
                    f"{own}/invocations", json=body, headers={"authorization": f"Bearer {key}"}
                )
                assert ok.status_code == 200 and ok.json() == {"predictions": [1]}
                # The SDK tries the endpoint's port, is refused, and goes through the server.
                from shipyard.sdk.client import Client
                from shipyard.sdk.http import HttpBackend

                sdk = Client(project=project, backend=HttpBackend(srv.url, tokens["viewer"]))
                assert sdk.endpoint("fraud").predict(row).tolist() == [1]
                # The control plane still reads the endpoint's figures through the key.
                listed = viewer.get(base).json()["data"][0]
                assert listed["ready"] is True and listed["requests"] >= 2
                assert viewer.delete(f"{base}/fraud").status_code == 403
                assert editor.delete(f"{base}/fraud").status_code == 204
    finally:
        authed.close()
