"""Fixtures for Studio: a real server with runs logged through the SDK, and a real Chromium.

- ``browser``: Debian's Chromium driven by Playwright for Python (no browser download). The
  test set-up installs it (``apt-get install -y chromium``); a machine without it fails loudly.
- ``studio``: one server per module on a fresh SQLite home, with an experiment of runs logged
  through the SDK's HTTP backend (params, metric histories, system metrics, artifacts, a failed
  and a running run). Studio's pages only read, so the tests of a module share it.
- ``page``: a fresh browser context per test, failing the test on any JavaScript error.
- ``bulk_runs``: inserts many runs straight into the tables, for the speed test (the SDK would
  take minutes to log 100,000 runs one by one; the pages read them the same way).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerThread, make_settings

CHROMIUM = os.environ.get("SHIPYARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_IMAGES = ROOT / "docs" / "images"


def screenshot(page: Any, name: str, *, docs_name: str | None = None) -> Path:
    """Keep a screenshot as a test artifact; with ``SHIPYARD_UPDATE_DOCS_IMAGES=1`` also
    refresh the README's copy (off by default, so a test run leaves the tree clean)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # sticky headers belong at the top of the picture
    page.screenshot(path=str(path), full_page=True)
    if docs_name and os.environ.get("SHIPYARD_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        size = page.viewport_size
        page.set_viewport_size({"width": 1400, "height": 1150})
        page.wait_for_timeout(300)  # let responsive charts settle at the new size
        page.screenshot(path=str(DOCS_IMAGES / docs_name), full_page=False)
        page.set_viewport_size(size)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Studio's tests need Chromium at {CHROMIUM}: apt-get install -y chromium "
            "(scripts/test.sh does it)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(
        viewport={"width": 1400, "height": 900}, locale="en-US", timezone_id="UTC"
    )
    ctx.set_default_timeout(15_000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def tiny_png(width: int = 24, height: int = 16, rgb: tuple[int, int, int] = (31, 95, 139)) -> bytes:
    """A valid PNG of one colour, written by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@dataclass
class Studio:
    """A running server and what was logged into it."""

    url: str
    project: str
    experiment_id: str
    experiment: str
    runs: dict[str, str] = field(default_factory=dict)  # run name -> id
    services: Any = None
    client: Any = None

    def at(self, path: str) -> str:
        return self.url + path

    @property
    def runs_url(self) -> str:
        return f"/projects/{self.project}/experiments/{self.experiment_id}"

    def run_url(self, name: str) -> str:
        return f"/projects/{self.project}/runs/{self.runs[name]}"


LRS = [0.1, 0.03, 0.01]
DEPTHS = [3, 6, 9, 12]


def _log_runs(client: Any, experiment: str, tmp: Path) -> dict[str, str]:
    """Twelve finished runs of a small grid, one failed run and one still running, logged
    through the SDK like a user's script would."""
    import shipyard as sy
    from shipyard.tracking.schemas import RunCreate

    sy.init(client=client)
    rng = random.Random(7)
    ids: dict[str, str] = {}
    for i in range(12):
        lr, depth = LRS[i % 3], DEPTHS[i % 4]
        with sy.start_run(experiment=experiment, name=f"grid-{i:02d}") as run:
            sy.log_params(
                {"lr": lr, "max_depth": depth, "optimizer": ["adam", "sgd"][i % 2], "seed": 7}
            )
            sy.set_tag("team", "churn")
            for step in range(60):
                loss = 1.2 * math.exp(-lr * 0.8 * step) + 0.04 * rng.random() + 0.02 * depth / 12
                run.log_metrics({"loss": loss, "accuracy": 1 - loss / 2}, step=step)
            if i == 0:
                for step in range(8):
                    run.log_metric("system/cpu_percent", 20 + 5 * step, step=step)
                    run.log_metric("system/memory_used_mb", 900 + 10 * step, step=step)
                art = tmp / "artifacts"
                (art / "eval").mkdir(parents=True, exist_ok=True)
                (art / "notes.txt").write_text("trained on churn-2024\nall good\n")
                (art / "eval" / "report.json").write_text('{"auc": 0.91, "classes": [0, 1]}')
                (art / "eval" / "predictions.csv").write_text(
                    "customer,churned,score\n"
                    + "\n".join(f"c{k:04d},{k % 2},{k / 1000:.3f}" for k in range(500))
                )
                (art / "eval" / "confusion.png").write_bytes(tiny_png())
                run.log_artifacts(art)
            ids[run.name] = run.id
    try:
        with sy.start_run(experiment=experiment, name="diverged") as run:
            sy.log_params({"lr": 1.0, "max_depth": 3, "optimizer": "sgd", "seed": 7})
            run.log_metric("loss", 9.5, step=0)
            ids[run.name] = run.id
            raise FloatingPointError("loss is nan")
    except FloatingPointError:
        pass
    exp = client.get_experiment(experiment)
    live = client.backend.create_run(
        client.project, RunCreate(experiment_id=exp.id, name="still-training")
    )
    client.backend.log_batch(
        client.project,
        live.id,
        metrics=[("loss", 0.7, 0, 1_700_000_000_000)],
        params=[("lr", "0.05")],
    )
    ids[live.name] = live.id
    sy.flush()
    return ids


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    from shipyard.sdk.client import Client
    from shipyard.sdk.http import HttpBackend
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    home = tmp_path_factory.mktemp("studio-home")
    services = Services.from_settings(make_settings(home, f"sqlite:///{home / 'shipyard.db'}"))
    with ServerThread(create_app(services)) as srv:
        backend = HttpBackend(srv.url, retry_for_s=5)
        client = Client(project="churn", backend=backend)
        ids = _log_runs(client, "churn-classifier", home)
        exp = client.get_experiment("churn-classifier")
        yield Studio(
            url=srv.url,
            project="churn",
            experiment_id=exp.id,
            experiment=exp.name,
            runs=ids,
            services=services,
            client=client,
        )
        backend.close()
    services.close()
    shutil.rmtree(home, ignore_errors=True)


def bulk_runs(services: Any, project: str, n: int) -> str:
    """Insert ``n`` finished runs, each with two params and two latest metrics, into a new
    experiment of ``project``. Generated inside the database by one recursive query per table
    (the same SQL on SQLite and PostgreSQL): seconds, where row-by-row inserts take minutes.
    Values are a deterministic function of the run's number. Returns the experiment id."""
    from sqlalchemy import text

    from shipyard.core.timeutil import now_ms
    from shipyard.projects.schemas import ProjectCreate
    from shipyard.tracking.schemas import ExperimentCreate

    services.projects.create_project(ProjectCreate(name=project))
    exp = services.tracking.create_experiment(project, ExperimentCreate(name="sweep"))
    seq = "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1) "
    # 6 + 10 characters: the 16 of an id. Later runs start later, as in real life.
    rid = "(:prefix || CAST(1000000000 + i AS TEXT))"
    loss = "(((i * 7919) % 1000) / 1000.0)"
    args = {
        "n": n,
        "prefix": uuid.uuid4().hex[:6],
        "pid": services.projects.project_id(project),
        "eid": exp.id,
        "t0": now_ms() - n * 1000,
    }
    with services.db.write() as conn:
        conn.execute(
            text(
                seq + "INSERT INTO runs (id, project_id, experiment_id, parent_run_id, name, "
                "status, start_time, end_time, lifecycle, deleted_at, created_by, created_at, "
                "updated_at) SELECT " + rid + ", :pid, :eid, NULL, 'trial-' || CAST(i AS TEXT), "
                "'FINISHED', :t0 + i * 1000, :t0 + i * 1000 + 900, 'active', NULL, NULL, "
                ":t0 + i * 1000, :t0 + i * 1000 FROM seq"
            ),
            args,
        )
        for key, value in (
            ("lr", "CASE i % 3 WHEN 0 THEN '0.1' WHEN 1 THEN '0.03' ELSE '0.01' END"),
            ("max_depth", "CAST(3 * (1 + i % 4) AS TEXT)"),
        ):
            conn.execute(
                text(
                    seq + "INSERT INTO run_params (run_id, key, value) "
                    f"SELECT {rid}, '{key}', {value} FROM seq"
                ),
                args,
            )
        for key, value in (("loss", loss), ("accuracy", f"(1 - {loss} / 2)")):
            conn.execute(
                text(
                    seq + "INSERT INTO latest_metrics (run_id, key, value, step, timestamp) "
                    f"SELECT {rid}, '{key}', {value}, 99, :t0 + i * 1000 + 900 FROM seq"
                ),
                args,
            )
    return str(exp.id)
