"""The ``shipyard`` command line, run for real: the installed entry point in a subprocess.

Most tests use the embedded store (``SHIPYARD_HOME`` in tmp, SQLite); ``test_against_a_server``
points the same commands at a real server (``--tracking-uri``) on SQLite and PostgreSQL. Data
is seeded through the SDK, the CLI is what is under test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ENTRY = Path(sys.executable).with_name("shipyard")
SHIPYARD = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "shipyard.cli.main"]
T0 = 1_700_000_000_000  # epoch ms of the seeded metric points


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``shipyard`` with its own environment: a home in tmp and, optionally, a server URL."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        # Wide, plain output so tables do not wrap ids or names.
        self.env.update(SHIPYARD_HOME=str(home), COLUMNS="300", NO_COLOR="1", **env)

    def __call__(self, *args: str, ok: bool = True, cwd: Path | None = None) -> Result:
        p = subprocess.run(
            [*SHIPYARD, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd,
            timeout=120,
        )
        res = Result(p.returncode, p.stdout, p.stderr)
        assert "Traceback" not in res.out + res.err, res
        if ok:
            assert res.code == 0, res
        return res

    def fails(self, *args: str) -> str:
        """Run a command that must fail; return its one stderr line."""
        res = self(*args, ok=False)
        assert res.code != 0, res
        lines = res.err.strip().splitlines()
        assert len(lines) == 1, res
        assert res.out == "", res
        return lines[0]


# -- seeding through the SDK --------------------------------------------------------------------


@dataclass
class Seeded:
    project: str
    ids: dict[str, str]  # run name -> id


def make_run(
    client,  # type: ignore[no-untyped-def]
    experiment: str,
    name: str,
    params: dict[str, str],
    acc: list[float],
    tags: dict[str, str] | None = None,
) -> str:
    from shipyard.core.schemas import validate
    from shipyard.tracking.schemas import RunCreate, RunStatus, RunUpdate

    p, b = client._ready(), client.backend
    exp = client.get_or_create_experiment(experiment)
    run = b.create_run(p, validate(RunCreate, experiment_id=exp.id, name=name, tags=tags or {}))
    b.log_batch(
        p,
        run.id,
        metrics=[("acc", v, step, T0 + step) for step, v in enumerate(acc)],
        params=list(params.items()),
    )
    b.update_run(p, run.id, RunUpdate(status=RunStatus.FINISHED))
    return str(run.id)


def seed(client, files: Path) -> Seeded:  # type: ignore[no-untyped-def]
    """Two experiments, five runs (one deleted), two artifacts, five more experiments."""
    ids = {
        "lr-high": make_run(
            client,
            "alpha",
            "lr-high",
            {"model": "lr", "lr": "0.1", "seed": "1"},
            [0.5, 0.6, 0.65, 0.68, 0.7],
            {"team": "vision"},
        ),
        "lr-low": make_run(
            client, "alpha", "lr-low", {"model": "lr", "lr": "0.01", "seed": "1"}, [0.9]
        ),
        "forest": make_run(
            client, "alpha", "forest", {"model": "rf", "depth": "5", "seed": "1"}, [0.8]
        ),
        "gone": make_run(client, "alpha", "gone", {"model": "lr"}, [0.99]),
        "beta-run": make_run(client, "beta", "beta-run", {"model": "lr"}, [0.95]),
    }
    client.delete_run(ids["gone"])
    files.mkdir(parents=True, exist_ok=True)
    (files / "weights.json").write_text('{"w": [1, 2, 3]}')
    (files / "notes.txt").write_text("trained on a laptop\n")
    client.log_artifact(ids["lr-high"], files / "weights.json", "model/weights.json")
    client.log_artifact(ids["lr-high"], files / "notes.txt")
    for i in range(5):
        client.create_experiment(f"sweep-{i}")
    return Seeded(client.project, ids)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-home")


@pytest.fixture(scope="module")
def seeded(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    from shipyard.core.settings import Settings
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    backend = LocalBackend(settings=Settings(home=home))
    try:
        return seed(Client(project="cli", backend=backend), tmp_path_factory.mktemp("files"))
    finally:
        backend.services.close()


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


def names(page: dict[str, Any]) -> list[str]:
    return [r["name"] for r in page["data"]]


# -- the embedded store -------------------------------------------------------------------------


def test_demo_completes_and_says_where_to_look(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    res = cli("demo", "--runs", "2")
    assert "Tracked 2 runs in project 'demo', experiment 'churn'." in res.out
    assert "shipyard runs list -p demo -e churn" in res.out
    assert "shipyard server" in res.out
    runs = cli("runs", "list", "-p", "demo", "-e", "churn", "--json").json()["data"]
    assert sorted(r["name"] for r in runs) == ["lr-0.03", "lr-0.09", "sweep"]
    assert {r["status"] for r in runs} == {"FINISHED"}
    children = [r for r in runs if r["parent_run_id"]]
    assert len(children) == 2 and all(len(r["metrics"]) >= 2 for r in children)
    db = cli("db", "current", "--json").json()
    assert db["current"] == db["head"] is not None


def test_experiments_create_rename_delete_restore(cli: Cli) -> None:
    p = f"exp-{uuid.uuid4().hex[:8]}"
    created = cli("experiments", "create", "first", "-d", "a note", "-p", p, "--json").json()
    assert (created["name"], created["description"], created["lifecycle"]) == (
        "first",
        "a note",
        "active",
    )
    exp_id = created["id"]
    renamed = cli("experiments", "rename", "first", "second", "-p", p, "--json").json()
    assert (renamed["id"], renamed["name"]) == (exp_id, "second")
    assert names(cli("experiments", "list", "-p", p, "--json").json()) == ["second"]

    deleted = cli("experiments", "delete", exp_id, "-p", p, "--json").json()
    assert deleted["lifecycle"] == "deleted" and deleted["deleted_at"]
    assert cli("experiments", "list", "-p", p, "--json").json()["data"] == []
    assert names(cli("experiments", "list", "-p", p, "--deleted", "--json").json()) == ["second"]

    restored = cli("experiments", "restore", "second", "-p", p, "--json").json()
    assert restored["lifecycle"] == "active"
    table = cli("experiments", "list", "-p", p).out
    assert exp_id in table and "second" in table


def test_experiments_name_filter_and_pages(cli: Cli, seeded: Seeded) -> None:
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        args = ["experiments", "list", "-p", seeded.project, "--name", "sweep-%"]
        args += ["--page-size", "2", "--json"] + (["--page-token", token] if token else [])
        page = cli(*args).json()
        pages += 1
        assert len(page["data"]) == (2 if pages < 3 else 1)
        seen += names(page)
        token = page["next_page_token"]
        if token is None:
            break
    assert pages == 3
    assert sorted(seen) == [f"sweep-{i}" for i in range(5)]  # each once, no other experiment
    # The table says how to get the next page.
    table = cli("experiments", "list", "-p", seeded.project, "--name", "sweep-%", "-n", "2").out
    assert re.search(r"more: --page-token \S+", table)


def test_runs_list_by_experiment_filter_and_order(cli: Cli, seeded: Seeded) -> None:
    ids, p = seeded.ids, seeded.project

    def listed(*args: str) -> list[str]:
        return [r["id"] for r in cli("runs", "list", "-p", p, "--json", *args).json()["data"]]

    assert sorted(listed("-e", "alpha")) == sorted([ids["lr-high"], ids["lr-low"], ids["forest"]])
    assert sorted(listed()) == sorted(
        [ids["lr-high"], ids["lr-low"], ids["forest"], ids["beta-run"]]
    )
    assert listed(
        "-e", "alpha", "-e", "beta", "-f", "metrics.acc > 0.75", "-o", "metrics.acc DESC"
    ) == [ids["beta-run"], ids["lr-low"], ids["forest"]]
    assert listed("-f", "params.model = 'lr'", "-o", "metrics.acc") == [
        ids["lr-high"],
        ids["lr-low"],
        ids["beta-run"],
    ]
    assert listed("--deleted") == [ids["gone"]]
    table = cli(
        "runs", "list", "-p", p, "-e", "alpha", "-c", "params.lr", "-o", "metrics.acc DESC"
    ).out
    rows = [line for line in table.splitlines() if ids["lr-low"] in line or ids["lr-high"] in line]
    assert len(rows) == 2 and "0.01" in rows[0] and "0.1" in rows[1]


def test_runs_list_pages(cli: Cli, seeded: Seeded) -> None:
    ids, p = seeded.ids, seeded.project
    base = ["runs", "list", "-p", p, "-o", "metrics.acc DESC", "-n", "2", "--json"]
    first = cli(*base).json()
    assert [r["id"] for r in first["data"]] == [ids["beta-run"], ids["lr-low"]]
    assert first["next_page_token"]
    second = cli(*base, "--page-token", first["next_page_token"]).json()
    assert [r["id"] for r in second["data"]] == [ids["forest"], ids["lr-high"]]
    assert second["next_page_token"] is None


def test_runs_show(cli: Cli, seeded: Seeded) -> None:
    rid = seeded.ids["lr-high"]
    shown = cli("runs", "show", rid, "-p", seeded.project, "--json").json()
    run = shown["run"]
    assert run["id"] == rid and run["name"] == "lr-high" and run["status"] == "FINISHED"
    assert run["params"] == {"model": "lr", "lr": "0.1", "seed": "1"}
    assert run["metrics"]["acc"] == {"value": 0.7, "step": 4, "timestamp": T0 + 4}
    assert run["tags"]["team"] == "vision"
    files = {a["path"]: a for a in shown["artifacts"]}
    assert set(files) == {"model/weights.json", "notes.txt"}
    assert files["notes.txt"]["size"] == len("trained on a laptop\n")
    table = cli("runs", "show", rid, "-p", seeded.project).out
    assert "lr-high" in table and "vision" in table and "model/weights.json" in table


def test_runs_compare_marks_differing_params(cli: Cli, seeded: Seeded) -> None:
    ids, p = seeded.ids, seeded.project
    three = [ids["lr-high"], ids["lr-low"], ids["forest"]]
    cmp = cli("runs", "compare", *three, "-p", p, "--json").json()
    assert [r["id"] for r in cmp["runs"]] == three
    assert cmp["param_keys"] == ["depth", "lr", "model", "seed"]
    assert cmp["differing_params"] == ["depth", "lr", "model"]
    assert cmp["metric_keys"] == ["acc"]
    assert [h["values"] for h in cmp["histories"]["acc"]] == [
        [0.5, 0.6, 0.65, 0.68, 0.7],
        [0.9],
        [0.8],
    ]

    table = cli("runs", "compare", *three, "-p", p).out
    assert re.search(r"\*\s+params\.lr\b", table)
    assert re.search(r"\*\s+params\.model\b", table)
    assert "params.seed" not in table  # equal: hidden by default, and said so
    assert "1 equal params hidden" in table
    full = cli("runs", "compare", *three, "-p", p, "--all-params").out
    seed_line = next(line for line in full.splitlines() if "params.seed" in line)
    assert "*" not in seed_line.split("params.seed")[0]
    lr_line = next(line for line in full.splitlines() if "params.lr" in line)
    assert "0.1" in lr_line and "0.01" in lr_line


def test_runs_delete_and_restore(cli: Cli, home: Path) -> None:
    p = f"del-{uuid.uuid4().hex[:8]}"
    from shipyard.core.settings import Settings
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    backend = LocalBackend(settings=Settings(home=home))
    client = Client(project=p, backend=backend)
    keep, drop = (make_run(client, "e", n, {"n": n}, [1.0]) for n in ("keep", "drop"))
    backend.services.close()

    def active() -> list[str]:
        return [r["id"] for r in cli("runs", "list", "-p", p, "--json").json()["data"]]

    assert "deleted 1 run(s)" in cli("runs", "delete", drop, "-p", p).out
    assert active() == [keep]
    deleted = cli("runs", "list", "-p", p, "--deleted", "--json").json()["data"]
    assert [(r["id"], r["lifecycle"]) for r in deleted] == [(drop, "deleted")]
    assert "restored 1 run(s)" in cli("runs", "restore", drop, "-p", p).out
    assert sorted(active()) == sorted([keep, drop])


def test_runs_history(cli: Cli, seeded: Seeded) -> None:
    rid = seeded.ids["lr-high"]
    h = cli("runs", "history", rid, "acc", "-p", seeded.project, "--json").json()
    assert h["steps"] == [0, 1, 2, 3, 4]
    assert h["values"] == [0.5, 0.6, 0.65, 0.68, 0.7]
    assert h["timestamps"] == [T0 + s for s in range(5)]
    table = cli("runs", "history", rid, "acc", "-p", seeded.project).out
    assert re.search(r"\b4\b.*\b0\.7\b", table)


def test_runs_download(cli: Cli, seeded: Seeded, tmp_path: Path) -> None:
    rid, p = seeded.ids["lr-high"], seeded.project
    res = cli("runs", "download", rid, "-p", p, "--dest", str(tmp_path / "all"))
    assert str(tmp_path / "all") in res.out
    assert (tmp_path / "all/model/weights.json").read_text() == '{"w": [1, 2, 3]}'
    assert (tmp_path / "all/notes.txt").read_text() == "trained on a laptop\n"
    cli("runs", "download", rid, "model", "-p", p, "--dest", "one", cwd=tmp_path)
    got = sorted(str(f.relative_to(tmp_path / "one")) for f in (tmp_path / "one").rglob("*.*"))
    assert got == ["model/weights.json"]
    err = cli.fails("runs", "download", rid, "nothing-here", "-p", p, "--dest", str(tmp_path))
    assert "nothing-here" in err


def test_gc_purges_deleted_runs_and_frees_storage(tmp_path: Path) -> None:
    from shipyard.core.settings import Settings
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    home = tmp_path / "home"
    backend = LocalBackend(settings=Settings(home=home))
    client = Client(project="gc", backend=backend)
    keep, drop = (make_run(client, "e", n, {"n": n}, [1.0]) for n in ("keep", "drop"))
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"x" * 1000)
    client.log_artifact(drop, blob)
    backend.services.close()

    cli = Cli(home)
    nothing = cli("gc", "--older-than-s", "0", "--json").json()
    assert nothing == {
        "runs_purged": 0,
        "experiments_purged": 0,
        "blobs_deleted": 0,
        "bytes_freed": 0,
    }
    cli("runs", "delete", drop, "-p", "gc")
    report = cli("gc", "--older-than-s", "0", "--json").json()
    assert report == {
        "runs_purged": 1,
        "experiments_purged": 0,
        "blobs_deleted": 1,
        "bytes_freed": 1000,
    }
    assert cli("runs", "list", "-p", "gc", "--deleted", "--json").json()["data"] == []
    assert [r["id"] for r in cli("runs", "list", "-p", "gc", "--json").json()["data"]] == [keep]
    assert drop in cli.fails("runs", "show", drop, "-p", "gc")


def test_db_current_and_version(cli: Cli, seeded: Seeded) -> None:
    import shipyard

    db = cli("db", "current", "--json").json()
    assert db["current"] == db["head"] is not None
    assert cli("version").out.strip() == shipyard.__version__


@pytest.mark.parametrize(
    ("args", "names_problem"),
    [
        (["runs", "show", "nosuchrun0000"], ["nosuchrun0000", "not found"]),
        (["runs", "list", "--filter", "metrics.acc >"], ["filter"]),
        (["experiments", "create", ""], ["name"]),
        (["experiments", "create", "alpha"], ["alpha", "already exists"]),
    ],
    ids=["unknown-run", "invalid-filter", "empty-name", "duplicate-experiment"],
)
def test_errors_are_one_line_and_a_nonzero_exit(
    cli: Cli, seeded: Seeded, args: list[str], names_problem: list[str]
) -> None:
    line = cli.fails(*args, "-p", seeded.project)
    for word in names_problem:
        assert word in line, line


# -- the same commands against a server ---------------------------------------------------------


def test_against_a_server(server, project: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from shipyard.sdk.client import Client
    from shipyard.sdk.http import HttpBackend

    backend = HttpBackend(server.url, retry_for_s=5)
    s = seed(Client(project=project, backend=backend), tmp_path / "files")
    backend.close()
    ids = s.ids
    home = tmp_path / "untouched-home"
    cli = Cli(home)  # the URL given by option here, by environment below
    uri = ["--tracking-uri", server.url, "-p", project]

    exps = cli("experiments", "list", *uri, "--name", "sweep-%", "-n", "3", "--json").json()
    assert len(exps["data"]) == 3 and exps["next_page_token"]
    listed = cli(
        "runs",
        "list",
        *uri,
        "-e",
        "alpha",
        "-f",
        "params.model = 'lr'",
        "-o",
        "metrics.acc DESC",
        "--json",
    ).json()
    assert [r["id"] for r in listed["data"]] == [ids["lr-low"], ids["lr-high"]]

    cli = Cli(home, SHIPYARD_TRACKING_URI=server.url, SHIPYARD_PROJECT=project)
    shown = cli("runs", "show", ids["lr-high"], "--json").json()
    assert shown["run"]["params"]["lr"] == "0.1"
    assert {a["path"] for a in shown["artifacts"]} == {"model/weights.json", "notes.txt"}
    cmp = cli("runs", "compare", ids["lr-high"], ids["forest"], "--json").json()
    assert cmp["differing_params"] == ["depth", "lr", "model"]
    assert cli("runs", "history", ids["lr-high"], "acc", "--json").json()["steps"] == [
        0,
        1,
        2,
        3,
        4,
    ]
    cli("runs", "download", ids["lr-high"], "--dest", str(tmp_path / "dl"))
    assert (tmp_path / "dl/model/weights.json").read_text() == '{"w": [1, 2, 3]}'
    cli("runs", "delete", ids["forest"])
    deleted = cli("runs", "list", "--deleted", "--json").json()["data"]
    assert sorted(r["id"] for r in deleted) == sorted([ids["forest"], ids["gone"]])

    assert "nosuchrun0000" in cli.fails("runs", "show", "nosuchrun0000")
    assert "filter" in cli.fails("runs", "list", "--filter", "metrics.acc >")
    assert "already exists" in cli.fails("experiments", "create", "alpha")
    # Everything went to the server: the local home was never used.
    assert not (home / "shipyard.db").exists()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SHIPYARD_PORT",
            "eighty",
            "error: port: Input should be a valid integer, unable to parse string as an "
            "integer (set by SHIPYARD_PORT)",
        ),
        (
            "SHIPYARD_ARTIFACT_STORAGE_OPTIONS",
            "endpoint_url=x",
            "error: artifact_storage_options: SHIPYARD_ARTIFACT_STORAGE_OPTIONS must be JSON "
            "(a list or an object), got 'endpoint_url=x'",
        ),
    ],
)
@pytest.mark.parametrize("command", [["runs", "list", "-p", "demo"], ["server"]])
def test_a_bad_setting_in_the_environment_is_one_line_naming_it(
    tmp_path: Path, name: str, value: str, message: str, command: list[str]
) -> None:
    res = Cli(tmp_path, **{name: value})(*command, ok=False)
    assert res.code != 0
    assert res.err.strip().splitlines() == [message]
