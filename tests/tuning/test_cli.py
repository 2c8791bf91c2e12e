"""``shipyard tuning ...`` run for real: the installed entry point in a subprocess, on an
embedded store, the tuning job and its script trials driven inside the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.tuning.conftest import SCRIPTS

ENTRY = Path(sys.executable).with_name("shipyard")
SHIPYARD = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "shipyard.cli.main"]

pytestmark = pytest.mark.timeout(180)


class Cli:
    def __init__(self, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        self.env.update(
            SHIPYARD_HOME=str(home),
            SHIPYARD_PROJECT="tuning-cli",
            # Trials start fastest with only the launcher preloaded.
            SHIPYARD_EXECUTOR_PRELOAD='["shipyard.jobs.launcher"]',
            COLUMNS="250",
            NO_COLOR="1",
        )

    def __call__(self, *args: str) -> tuple[int, str, str]:
        p = subprocess.run(
            [*SHIPYARD, *args], env=self.env, capture_output=True, text=True, timeout=150
        )
        return p.returncode, p.stdout, p.stderr


def test_create_show_list_register_and_the_refusals(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    space = json.dumps({"q": {"type": "categorical", "choices": [0.0, 1.0]}})
    code, out, err = cli(
        "tuning", "create", "--space", space, "--objective", "loss", "--strategy", "grid",
        "--max-parallel", "2", "-e", "train.py", "-s", str(SCRIPTS), "-H", "epochs=1", "-H", "report=print", "--metric-definition", "loss=loss=([0-9.]+)",
        "--name", "cli-grid", "--json",
    )  # fmt: skip
    assert code == 0, err
    job: dict[str, Any] = json.loads(out)
    assert job["status"] == "completed" and job["name"] == "cli-grid"
    assert len(job["trials"]) == 2 and job["best"]["params"] == {"q": 0.0}

    # The other commands in this process (typer's runner): only `create` needs its own.
    from typer.testing import CliRunner

    from shipyard.cli.main import app

    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        r = runner.invoke(app, list(args), env=cli.env)
        return r.exit_code, r.stdout, r.stderr

    code, out, err = run("tuning", "show", job["id"])
    assert code == 0, err
    assert "cli-grid" in out and "completed" in out and "best: trial" in out
    assert "loss" in out and " q " in out  # the trials table: objective and parameter columns
    code, out, _ = run("tuning", "show", job["id"], "--json")
    assert json.loads(out)["best"] == job["best"]
    code, out, _ = run("tuning", "list", "--json")
    assert [j["id"] for j in json.loads(out)["data"]] == [job["id"]]
    code, out, _ = run("tuning", "list", "--status", "running", "--json")
    assert json.loads(out)["data"] == []
    code, out, err = run("tuning", "register-best", job["id"], "-m", "shift", "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == 1 and json.loads(out)["run_id"] == job["best"]["run_id"]
    code, out, _ = run("tuning", "stop", job["id"], "--json")
    assert code == 0 and json.loads(out)["status"] == "completed"
    code, out, err = run("tuning", "delete", job["id"])
    assert code == 0 and "deleted" in out, err
    code, _, err = run("tuning", "show", job["id"])
    assert code == 2 and "not found" in err

    bad = json.dumps({"q": {"type": "float", "low": 2, "high": 1}})
    code, out, err = run(
        "tuning", "create", "--space", bad, "--objective", "loss", "-e", "train.py",
        "-s", str(SCRIPTS),
    )  # fmt: skip
    assert code == 2 and "space.q" in err and "above high" in err and "Traceback" not in err
    code, _, err = run("tuning", "create", "--space", "{nope", "--objective", "loss")
    assert code == 2 and "--space: not valid JSON" in err
    code, _, err = run("tuning", "show", "nope")
    assert code == 2 and "not found" in err
    code, _, err = run("tuning", "list", "--status", "sleeping")
    assert code == 2 and "--status" in err
