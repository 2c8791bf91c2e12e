"""``shipyard jobs ...`` for real: the installed entry point in a subprocess, on an embedded store
(the job runs in the command's own worker) and against a real server (``logs -f``, ``stop``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.conftest import FIX, TARGET

ROOT = Path(__file__).resolve().parents[2]
ENTRY = Path(sys.executable).with_name("shipyard")
SHIPYARD = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "shipyard.cli.main"]
PROJECT = "cli-jobs"


@pytest.fixture
def db_url(sqlite_home: Path) -> str:
    # The commands are the same on any store; PostgreSQL is covered by the service tests.
    return f"sqlite:///{sqlite_home / 'shipyard.db'}"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    def __init__(self, home: Path, **env: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        self.env.update(
            SHIPYARD_HOME=str(home),
            # Only what the jobs need in the fork server: batch libraries take seconds.
            SHIPYARD_EXECUTOR_PRELOAD=json.dumps([TARGET.split(":")[0]]),
            PYTHONPATH=str(ROOT),
            COLUMNS="300",
            NO_COLOR="1",
            **env,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*SHIPYARD, *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(self, *args: str, code: int = 0) -> Result:
        p = subprocess.run(
            [*SHIPYARD, *args], capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=120
        )
        res = Result(p.returncode, p.stdout, p.stderr)
        assert "Traceback" not in res.err, res
        assert res.code == code, res
        return res


def test_submit_follows_the_log_then_list_show_logs(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    res = cli(
        "jobs", "submit", "-p", PROJECT, "-f", f"{FIX}:train",
        "--hp", "epochs=2", "--hp", "lr=1",
        "-m", "loss=loss=([0-9.]+)", "--name", "first",
    )  # fmt: skip
    assert "epoch=1 loss=0.5000" in res.out  # the job's log, followed to its end
    assert "completed: job" in res.err
    listed = cli("jobs", "list", "-p", PROJECT, "--json").json()
    assert [(j["name"], j["status"]) for j in listed["data"]] == [("first", "completed")]
    job_id = listed["data"][0]["id"]
    shown = cli("jobs", "show", job_id, "-p", PROJECT, "--json").json()
    assert shown["spec"]["hyperparameters"] == {"epochs": 2, "lr": 1}
    assert shown["attempt"] == 1
    assert "epoch=0" in cli("jobs", "logs", job_id, "-p", PROJECT).out

    failed = cli(
        "jobs", "submit", "-p", PROJECT, "-f", f"{FIX}:fail", "--hp", "message=bad rows", code=1
    )
    assert failed.err.strip().splitlines()[-1].endswith("failed: ValueError: bad rows")

    # Refusals: one line, exit 2, naming what is wrong.
    for args, says in (
        (["jobs", "submit", "-p", PROJECT], "exactly one of entry_point"),
        (["jobs", "submit", "-p", PROJECT, "-f", f"{FIX}:train", "--hp", "nokey"], "--hp"),
        (["jobs", "list", "-p", PROJECT, "--status", "bogus"], "status"),
    ):
        res = cli(*args, code=2)
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], res


def test_detach_logs_follow_and_stop_against_a_server(server, project: str) -> None:
    cli = Cli(Path("/nonexistent-home"), SHIPYARD_TRACKING_URI=server.url)
    job = cli(
        "jobs", "submit", "-p", project, "-f", f"{FIX}:sleep", "--hp", "seconds=60",
        "--detach", "--json",
    ).json()  # fmt: skip
    assert job["status"] in ("queued", "starting", "running")
    follower = cli.popen("jobs", "logs", job["id"], "-p", project, "-f")
    try:
        deadline = time.monotonic() + 30
        while cli("jobs", "show", job["id"], "-p", project, "--json").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(0.5)
        assert follower.poll() is None  # still following a running job
        stopped = cli("jobs", "stop", job["id"], "-p", project, "--wait", "--json").json()
        assert stopped["status"] == "stopped"
        out, err = follower.communicate(timeout=30)  # ends by itself once the job is final
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert "sleeping" in out and "stopped: on request" in out
