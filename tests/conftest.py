"""Fixtures shared by every test: real databases, a real server on 127.0.0.1, both backends.

- ``db_url`` is parametrized over SQLite (a file in tmp) and PostgreSQL (a fresh database made
  for this test session on 127.0.0.1:5432, dropped at the end).
- Every test gets its own project (``project``), so tests sharing the PostgreSQL database never
  see each other's rows and can assert exact counts.
- ``backend`` is parametrized over the in-process ``LocalBackend`` and the ``HttpBackend``
  talking to a real uvicorn server on a free port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("SHIPYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def run_python(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python <args>`` in a fresh process whose only Shipyard setting is ``SHIPYARD_HOME``
    (none of this environment's), its output captured as text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    return subprocess.run(
        [sys.executable, *args],
        env=env | {"SHIPYARD_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    import psycopg

    name = f"shipyard_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - CI always has PostgreSQL
        pytest.fail(f"PostgreSQL is required for the tests: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    from shipyard.core.db import Database

    db = Database(url)
    db.upgrade()
    db.dispose()
    yield url
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def sqlite_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shipyard-home")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, sqlite_home: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{sqlite_home / 'shipyard.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def project() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def make_settings(home: Path, db_url: str, **kw: object):  # type: ignore[no-untyped-def]
    from shipyard.core.settings import Settings

    return Settings(
        home=home,
        database_url=db_url,
        artifact_root=str(home / "artifacts"),
        auto_migrate=True,
        **kw,
    )


@pytest.fixture
def settings(sqlite_home: Path, db_url: str):  # type: ignore[no-untyped-def]
    return make_settings(sqlite_home, db_url)


@pytest.fixture
def services(settings):  # type: ignore[no-untyped-def]
    from shipyard.server.context import Services

    s = Services.from_settings(settings)
    yield s
    s.close()


class ServerThread:
    """A real uvicorn server on 127.0.0.1:<free port>, in a thread of the test process."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def server(services) -> Iterator[ServerThread]:  # type: ignore[no-untyped-def]
    from shipyard.server.app import create_app

    with ServerThread(create_app(services)) as srv:
        yield srv


@pytest.fixture(params=["local", "http"])
def backend(request: pytest.FixtureRequest, services):  # type: ignore[no-untyped-def]
    if request.param == "local":
        from shipyard.sdk.local import LocalBackend

        yield LocalBackend(services)
    else:
        from shipyard.sdk.http import HttpBackend

        srv = request.getfixturevalue("server")
        b = HttpBackend(srv.url, retry_for_s=5)
        yield b
        b.close()


@pytest.fixture
def client(backend, project):  # type: ignore[no-untyped-def]
    from shipyard.sdk.client import Client

    return Client(project=project, backend=backend)


@pytest.fixture
def sy(client):  # type: ignore[no-untyped-def]
    """The ``shipyard`` module, initialised on this test's client; runs left open are ended."""
    import shipyard

    shipyard.init(client=client)
    yield shipyard
    while shipyard.active_run() is not None:
        shipyard.end_run()
    shipyard.flush()
