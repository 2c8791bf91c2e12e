"""``shipyard batch ...`` run for real: the installed entry point in a subprocess, on an embedded
store (SQLite in tmp) with models registered through the services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.inference.conftest import FEATURES, make_frame, read_output, register, slow_predictions

ENTRY = Path(sys.executable).with_name("shipyard")
SHIPYARD = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "shipyard.cli.main"]
PROJECT = "scoring"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    def __init__(self, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        self.env.update(SHIPYARD_HOME=str(home), COLUMNS="300", NO_COLOR="1")

    def __call__(self, *args: str, ok: bool = True, cwd: Path | None = None) -> Result:
        p = subprocess.run(
            [*SHIPYARD, *args], capture_output=True, text=True, env=self.env, cwd=cwd, timeout=180
        )
        res = Result(p.returncode, p.stdout, p.stderr)
        assert "Traceback" not in res.out + res.err, res
        if ok:
            assert res.code == 0, res
        return res

    def fails(self, *args: str, cwd: Path | None = None) -> str:
        res = self(*args, ok=False, cwd=cwd)
        assert res.code != 0, res
        lines = res.err.strip().splitlines()
        assert len(lines) == 1, res
        return lines[0]


@pytest.fixture
def home(tmp_path: Path, model_dir: Path, slow_model_dir: Path) -> Path:
    from shipyard.core.settings import Settings
    from shipyard.server.context import Services

    home = tmp_path / "home"
    services = Services.from_settings(Settings(home=home))
    try:
        register(services, PROJECT, model_dir)
        register(services, PROJECT, slow_model_dir, name="slow")
    finally:
        services.close()
    return home


def test_create_list_show_and_the_refusals(home: Path, tmp_path: Path, loaded: Any) -> None:
    cli = Cli(home)
    src = make_frame(1000)
    src.to_csv(tmp_path / "in.csv", index=False)
    common = ["-p", PROJECT, "-m", "churn@champion", "-i", "in.csv"]

    res = cli(
        "batch",
        "create",
        *common,
        "-o",
        "out",
        "--shards",
        "2",
        "--join-columns",
        "id,region",
        cwd=tmp_path,
    )
    assert "2/2 shards" in res.err  # the progress bar, on stderr
    assert "1,000/1,000 rows" in res.err
    assert res.out.startswith("succeeded: 1,000 rows in 2 files")
    out = read_output(tmp_path / "out")  # relative to where the command ran
    assert list(out.columns) == ["id", "region", "prediction"]
    np.testing.assert_array_equal(out["prediction"], loaded.predict(src[FEATURES]))

    jobs = cli("batch", "list", "-p", PROJECT, "--json").json()["data"]
    assert [j["status"] for j in jobs] == ["SUCCEEDED"]
    job_id = jobs[0]["id"]
    shown = cli("batch", "show", job_id, "-p", PROJECT, "--json").json()
    assert [s["attempts"] for s in shown["shards"]] == [1, 1]
    assert shown["output"] == str(tmp_path / "out")
    table = cli("batch", "show", job_id, "-p", PROJECT).out
    assert "part-00001.parquet" in table and "SUCCEEDED" in table

    assert "already succeeded" in cli.fails("batch", "stop", job_id, "-p", PROJECT)
    assert "already succeeded" in cli.fails("batch", "resume", job_id, "-p", PROJECT)
    assert "not both" in cli.fails(
        "batch", "create", *common, "-o", "x", "--join-columns", "id", "--join-all", cwd=tmp_path
    )
    assert "input: no such file" in cli.fails(
        "batch",
        "create",
        "-p",
        PROJECT,
        "-m",
        "churn@champion",
        "-i",
        "nope.csv",
        "-o",
        "x",
        cwd=tmp_path,
    )
    assert "--detach needs a server" in cli.fails(
        "batch", "create", *common, "-o", "z", "--detach", cwd=tmp_path
    )
    assert "--status" in cli.fails("batch", "list", "-p", PROJECT, "--status", "bogus")
    cli("batch", "delete", job_id, "-p", PROJECT)
    assert cli("batch", "list", "-p", PROJECT, "--json").json()["data"] == []


def test_ctrl_c_stops_the_job_and_resume_finishes_only_the_rest(home: Path, tmp_path: Path) -> None:
    from shipyard.core.settings import Settings
    from shipyard.server.context import Services

    cli = Cli(home)
    src = make_frame(500)
    src.to_parquet(tmp_path / "in.parquet")
    proc = subprocess.Popen(
        [
            *SHIPYARD,
            "batch",
            "create",
            "-p",
            PROJECT,
            "-m",
            "slow@champion",
            "--trust-code",
            "-i",
            str(tmp_path / "in.parquet"),
            "-o",
            str(tmp_path / "out"),
            "--shards",
            "5",
            "--parallelism",
            "1",
        ],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    services = Services.from_settings(Settings(home=home))
    try:
        deadline = time.monotonic() + 90
        while True:
            jobs = services.batch.list_jobs(PROJECT).data
            if jobs and jobs[0].progress.shards_done >= 1:
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job_id = jobs[0].id
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (out, err)
        assert "Traceback" not in err
        assert f"shipyard batch resume {job_id}" in err
        stopped = services.batch.get_job(PROJECT, job_id)
        assert stopped.status == "STOPPED"
        done = {s.index for s in stopped.shards if s.status == "SUCCEEDED"}
        assert 1 <= len(done) < 5

        res = cli("batch", "resume", job_id, "-p", PROJECT, "--json")
        assert res.err == ""  # --json: no progress bar, one JSON object
        final = res.json()
        assert final["status"] == "SUCCEEDED"
        for s in final["shards"]:
            if s["index"] in done:
                assert s["attempts"] == 1
        out_df = read_output(tmp_path / "out")
        np.testing.assert_array_equal(out_df["prediction"], slow_predictions(src))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        services.close()
