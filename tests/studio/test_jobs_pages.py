"""Studio's training job and tuning job pages in a real Chromium, over a real server whose
embedded worker runs real script jobs in subprocesses, and a real function tuning job
(``sy.tune`` through the HTTP backend).

What a user sees: the jobs list (status, entry, attempt, filter, pages), a job's status,
failure reason, findings, spec, log, metric and resource charts; a live log tail that grows
while the job runs, and a Stop button that stops it; the tuning job's best trial, trials table
(sorted by a click) and its charts; empty states that teach.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerThread, make_settings
from tests.studio.conftest import screenshot

PROJECT = "shop"

TRAIN = """
import os, time
import shipyard as sy
print("hello from train", flush=True)
for step in range(6):
    # A loss that does not go down: the report's rule check flags it.
    sy.log_metric("loss", 0.9, step=step)
    sy.log_metric("accuracy", 0.5 + step / 20, step=step)
    print(f"epoch {step} loss=0.9", flush=True)
    time.sleep(0.15)
with open(os.path.join(os.environ["SHIPYARD_MODEL_DIR"], "weights.bin"), "wb") as f:
    f.write(b"0" * 64)
print("saved the model", flush=True)
"""

BROKEN = """
print("loading data", flush=True)
raise ValueError("the label column 'churned' is missing")
"""

SLOW = """
import time
for i in range(600):
    print(f"tick {i}", flush=True)
    time.sleep(0.25)
"""


@dataclass
class Yard:
    url: str
    services: Any
    client: Any
    src: Path
    jobs: dict[str, str] = field(default_factory=dict)  # name -> job id
    tuning_id: str = ""

    def at(self, path: str) -> str:
        return self.url + path


def _objective(params: dict[str, Any], trial: Any) -> float:
    from shipyard.sdk import tuning

    x, depth, booster = params["lr"], params["depth"], params["booster"]
    base = (math.log10(x) + 2) ** 2 + 0.1 * depth + (0.3 if booster == "dart" else 0.0)
    value = base
    for step in range(6):
        value = base + 1.0 / (step + 1)
        trial.report(value, step)
        if trial.should_prune():
            raise tuning.TrialPruned()
    return value


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Yard]:
    from shipyard.core.executors import LocalExecutor
    from shipyard.jobs.schemas import JobCreate
    from shipyard.sdk import tuning
    from shipyard.sdk.client import Client
    from shipyard.sdk.http import HttpBackend
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    home = tmp_path_factory.mktemp("studio-jobs")
    services = Services.from_settings(
        make_settings(home, f"sqlite:///{home / 'shipyard.db'}", job_lease_s=5.0)
    )
    # An executor that preloads only the launcher: the first job starts in well under a second
    # (the default one also preloads the batch-inference libraries).
    services.executor.shutdown()
    services.executor = LocalExecutor(
        home / "tasks", 3, kill_grace_s=2.0, preload=["shipyard.jobs.launcher"]
    )
    src = home / "src"
    src.mkdir()
    for name, code in (("train.py", TRAIN), ("broken.py", BROKEN), ("slow.py", SLOW)):
        (src / name).write_text(textwrap.dedent(code))
    for p in (PROJECT, "live", "empty"):
        services.projects.ensure_project(p)
    with ServerThread(create_app(services)) as srv:
        backend = HttpBackend(srv.url, retry_for_s=5)
        client = Client(project=PROJECT, backend=backend)
        yard = Yard(srv.url, services, client, src)
        for name, entry, hps in (
            ("churn-train", "train.py", {"lr": 0.05, "epochs": 6, "optimizer": "adam"}),
            ("churn-broken", "broken.py", {}),
        ):
            job = services.jobs.submit(
                PROJECT,
                JobCreate(
                    name=name,
                    entry_point=entry,
                    source_dir=str(src),
                    hyperparameters=hps,
                    inputs={"train": str(src / "train.py")},
                    resources={"cpus": 1, "memory_gb": 2},  # type: ignore[arg-type]
                ),
            )
            yard.jobs[name] = job.id
        # A job that runs until it is stopped, for the live page (in its own project).
        live = services.jobs.submit(
            "live", JobCreate(name="forever", entry_point="slow.py", source_dir=str(src))
        )
        yard.jobs["forever"] = live.id
        # A function tuning job, trials in this process, while the jobs run in theirs.
        tj = tuning.tune(
            _objective,
            space={
                "lr": tuning.loguniform(1e-4, 1.0),
                "depth": tuning.integer(2, 8),
                "booster": tuning.categorical(["gbtree", "dart"]),
            },
            max_trials=24,
            strategy="asha",
            metric="val_loss",
            name="churn-search",
            seed=3,
            client=client,
        )
        yard.tuning_id = tj.id
        for name in ("churn-train", "churn-broken"):
            done = services.jobs.wait(PROJECT, yard.jobs[name], timeout_s=60)
            assert done.status.final, f"job {done.name} is still {done.status.value}"
        yield yard
        backend.close()
    services.close()
    shutil.rmtree(home, ignore_errors=True)


def _traces(page: Any, selector: str) -> int:
    """How many traces Plotly drew in the chart at ``selector`` (0 when it drew none)."""
    return int(
        page.evaluate(
            "(s) => { const d = document.querySelector(s); return d && d.data ? d.data.length : 0 }",
            selector,
        )
    )


def _rendered_final(page: Any) -> bool:
    """Whether the page on screen was rendered by the server with the job final (it may be
    reloading itself: then not yet)."""
    from playwright.sync_api import Error

    try:
        text = page.locator("#job-live").text_content(timeout=2000)
    except Error:
        return False
    return bool(text) and json.loads(text)["final"] is True


# -- the jobs list ----------------------------------------------------------------------------


def test_jobs_list_shows_each_job_filters_by_status_and_pages(yard: Yard, page: Any) -> None:
    page.goto(yard.at(f"/projects/{PROJECT}"))
    page.locator("nav.mainnav").get_by_role("link", name="Jobs").click()
    page.wait_for_url(f"**/projects/{PROJECT}/jobs")
    assert page.locator("nav.mainnav a[aria-current=page]").inner_text() == "Jobs"
    rows = page.locator("table.jobs tbody tr")
    assert rows.count() == 2
    train = page.locator('tr[data-job="churn-train"]')
    assert train.locator("[data-status]").inner_text() == "Completed"
    assert "script" in train.inner_text().lower() and "train.py" in train.inner_text()
    assert train.locator('[data-figure="attempt"]').inner_text() == "1/1"
    assert re.fullmatch(r"\d+\.\ds|\d+s", train.locator('[data-figure="runtime"]').inner_text())
    broken = page.locator('tr[data-job="churn-broken"]')
    assert broken.locator("[data-status]").inner_text() == "Failed"
    assert "ValueError" in broken.locator(".reason").inner_text()
    screenshot(page, "jobs-list")

    # Filter by status: a chip per status with its count; the URL holds the filter.
    page.locator('[data-chip="failed"]').click()
    page.wait_for_url("**/jobs?status=failed")
    assert page.locator("table.jobs tbody tr").count() == 1
    assert page.locator('tr[data-job="churn-broken"]').count() == 1
    assert "1" in page.locator('[data-chip="failed"]').inner_text()
    page.locator('[data-chip="running"]').click()
    assert page.locator('[data-empty="filtered"]').is_visible()

    # One job a page: two pages, newest first.
    page.goto(yard.at(f"/projects/{PROJECT}/jobs?size=1"))
    assert page.locator("table.jobs tbody tr").count() == 1
    assert "Page 1 of 2" in page.locator(".pager").inner_text()
    first = page.locator("table.jobs tbody tr").get_attribute("data-job")
    page.locator('[data-page="next"]').click()
    page.wait_for_url("**page=2**")
    second = page.locator("table.jobs tbody tr").get_attribute("data-job")
    assert {first, second} == {"churn-train", "churn-broken"}

    # Each row links to its run.
    page.goto(yard.at(f"/projects/{PROJECT}/jobs"))
    page.locator('tr[data-job="churn-train"] [data-run-link]').click()
    page.wait_for_url("**/runs/**")
    assert page.locator("h1").inner_text().startswith("churn-train")
    # ...and the run page links back to its job.
    page.locator("#run-job").click()
    page.wait_for_url(f"**/jobs/{yard.jobs['churn-train']}")


# -- a job ------------------------------------------------------------------------------------


def test_job_page_shows_findings_spec_log_metrics_and_resources(yard: Yard, page: Any) -> None:
    job_id = yard.jobs["churn-train"]
    page.goto(yard.at(f"/projects/{PROJECT}/jobs"))
    page.get_by_role("link", name="churn-train").click()
    page.wait_for_url(f"**/jobs/{job_id}")
    assert page.locator("#job-status [data-status]").inner_text() == "Completed"
    # The report's findings, up top: the flat loss is flagged, with its severity and message.
    finding = page.locator('#findings [data-rule="loss_not_decreasing"]')
    assert finding.locator("[data-severity]").inner_text().lower() == "warning"
    assert "loss not decreasing" in finding.inner_text()
    # What it ran.
    assert page.locator("[data-entry]").inner_text() == "train.py"
    assert page.locator('[data-hp="lr"] td').inner_text() == "0.05"
    assert page.locator('[data-hp="optimizer"] td').inner_text() == "adam"
    assert "1 CPU, 2 GB memory" in page.locator("[data-resources]").inner_text()
    assert page.locator('[data-channel="train"]').count() == 1
    # A completed job has no Stop button.
    assert page.locator('[data-action="stop"]').count() == 0
    # The whole log is read once, then the tail stops.
    log = page.locator("#job-log")
    page.wait_for_function(
        "() => document.getElementById('log-state').textContent === 'end of log'"
    )
    text = log.inner_text()
    assert "hello from train" in text and "epoch 5 loss=0.9" in text and "saved the model" in text
    assert text.index("hello from train") < text.index("saved the model")
    # The run's metrics and the resource profile, as charts with data.
    page.wait_for_function(
        "() => { const d = document.querySelector('[data-metric=\"loss\"]'); "
        "return d && d.data && d.data.length > 0 }"
    )
    assert _traces(page, '[data-metric="accuracy"]') == 1
    assert (
        page.evaluate("() => document.querySelector('[data-metric=\"loss\"]').data[0].y.length")
        == 6
    )
    for chart, traces in (("cpu", 1), ("memory", 1), ("disk", 2), ("network", 2)):
        assert _traces(page, f'[data-profile="{chart}"]') == traces, chart
    assert page.locator('[data-metric^="profile/"]').count() == 0  # not drawn twice
    assert "Memory peak" in page.locator("#profile-summary").inner_text()
    screenshot(page, "job-page")
    # Links to its run and its model folder.
    assert page.locator("[data-model-link]").inner_text() == "model/"
    href = page.locator("[data-model-link]").get_attribute("href")
    assert href.endswith("#artifacts")
    run_page = httpx.get(yard.at(href.split("#")[0]))
    assert run_page.status_code == 200 and "weights.bin" in run_page.text


def test_failed_job_shows_its_reason_and_log(yard: Yard, page: Any) -> None:
    page.goto(yard.at(f"/projects/{PROJECT}/jobs/{yard.jobs['churn-broken']}"))
    assert page.locator("#job-status [data-status]").inner_text() == "Failed"
    reason = page.locator("[data-failure-reason]")
    assert "ValueError" in reason.inner_text() and "churned" in reason.inner_text()
    page.wait_for_function("() => document.getElementById('job-log').textContent.length > 0")
    page.wait_for_function(
        "() => document.getElementById('job-log').textContent.includes('loading data')"
    )
    assert page.locator('[data-empty="metrics"]').is_visible()


def test_live_log_tail_grows_and_the_stop_button_stops_the_job(yard: Yard, page: Any) -> None:
    job_id = yard.jobs["forever"]
    page.goto(yard.at(f"/projects/live/jobs/{job_id}"))
    page.wait_for_function(
        "() => document.getElementById('job-log').textContent.includes('tick 1')", timeout=20_000
    )
    assert page.locator("#job-status [data-status]").inner_text() == "Running"
    # Lines the job prints after the page opened appear in the tail.
    ticks = [int(n) for n in re.findall(r"tick (\d+)", page.locator("#job-log").inner_text())]
    later = max(ticks) + 3
    page.wait_for_function(
        f"() => document.getElementById('job-log').textContent.includes('tick {later}')"
    )
    # Appended, not repeated: each tick once, in order.
    seen = [int(n) for n in re.findall(r"tick (\d+)", page.locator("#job-log").inner_text())]
    assert seen == list(range(seen[0], seen[-1] + 1))
    # Following: the log is scrolled to its end.
    assert page.evaluate(
        "() => { const l = document.getElementById('job-log'); "
        "return l.scrollHeight - l.scrollTop - l.clientHeight < 30 }"
    )
    # The resource charts are live too: more samples are drawn as the job goes on.
    cpu_points = (
        "() => { const d = document.querySelector('[data-profile=\"cpu\"]'); "
        "return d && d.data ? d.data[0].x.length : 0 }"
    )
    page.wait_for_function(f"() => ({cpu_points})() > 0", timeout=15_000)
    before = page.evaluate(cpu_points)
    page.wait_for_function(f"() => ({cpu_points})() > {before}", timeout=15_000)
    screenshot(page, "job-running")

    page.locator('[data-action="stop"]').click()
    page.wait_for_url("**done=**")
    assert page.locator("[data-notice]").inner_text() in ("Stop requested", "Stopped")
    # When the job is final the page reloads itself, rendered with the final status.
    deadline = time.monotonic() + 20
    while not _rendered_final(page):
        assert time.monotonic() < deadline, "the page did not show the stopped job"
        page.wait_for_timeout(200)
    assert page.locator("#job-status [data-status]").get_attribute("data-status") == "stopped"
    assert yard.services.jobs.get("live", job_id).status.value == "stopped"
    assert page.locator('[data-action="stop"]').count() == 0
    page.wait_for_function(
        "() => document.getElementById('log-state').textContent === 'end of log'"
    )


# -- tuning -----------------------------------------------------------------------------------


def test_tuning_job_pages_show_best_trial_trials_and_charts(yard: Yard, page: Any) -> None:
    tj = yard.services.tuning.get(PROJECT, yard.tuning_id)
    trials = tj.trials or []
    pruned = [t for t in trials if t.state.value == "pruned"]
    assert pruned, "the fixture's ASHA search should prune some trials"

    page.goto(yard.at(f"/projects/{PROJECT}"))
    page.locator("nav.mainnav").get_by_role("link", name="Tuning").click()
    page.wait_for_url(f"**/projects/{PROJECT}/tuning-jobs")
    row = page.locator('tr[data-tuning-job="churn-search"]')
    assert row.locator("[data-status]").inner_text() == "Completed"
    assert "asha" in row.inner_text() and "val_loss" in row.inner_text()
    assert row.locator('[data-figure="pruned"]').inner_text() == str(len(pruned))
    screenshot(page, "tuning-list")

    row.get_by_role("link", name="churn-search").click()
    page.wait_for_url(f"**/tuning-jobs/{tj.id}")
    assert tj.best is not None
    assert "asha" in page.locator("[data-strategy]").inner_text()
    assert page.locator("[data-objective]").inner_text() == "val_loss (minimize)"
    shown_best = float(page.locator("[data-best-value]").inner_text())
    assert shown_best == pytest.approx(tj.best.value, rel=1e-5)
    assert page.locator('[data-best-param="booster"] td').inner_text() == tj.best.params["booster"]
    # Every trial in the table, pruned ones marked with the last value they reported.
    assert page.locator("table.trials tbody tr").count() == len(trials)
    assert page.locator('table.trials tr[data-state="pruned"]').count() == len(pruned)
    assert (
        "@"
        in page.locator(
            'table.trials tr[data-state="pruned"] [data-figure="value"]'
        ).first.inner_text()
    )
    assert page.locator(f'table.trials tr[data-trial="{tj.best.number}"].is-best').count() == 1

    # Objective against trial: completed, pruned and the running best (never worse as it goes).
    page.wait_for_function(
        "() => { const d = document.getElementById('objective-chart'); return d && d.data }"
    )
    names = page.evaluate("() => document.getElementById('objective-chart').data.map(t => t.name)")
    assert names[0] == "completed" and "best so far" in names and any("pruned" in n for n in names)
    best_line = page.evaluate(
        "() => document.getElementById('objective-chart').data.find(t => t.name === 'best so far').y"
    )
    assert all(b <= a for a, b in zip(best_line, best_line[1:], strict=False))
    assert best_line[-1] == pytest.approx(tj.best.value)
    # One chart per parameter; the categorical one on a category axis, the log one on a log axis.
    for name in ("lr", "depth", "booster"):
        assert _traces(page, f'[data-param-chart="{name}"]') >= 1, name
    axis = '(n) => document.querySelector(`[data-param-chart="${n}"]`).layout.xaxis.type'
    assert page.evaluate(axis, "booster") == "category"
    assert page.evaluate(axis, "lr") == "log"
    screenshot(page, "tuning-job")

    # Sort by the objective with a click: the best trial first; again: the worst first.
    # Sort by the objective with a click: the lowest first; again: the highest first (pruned
    # trials count with the last value they reported).
    valued = sorted((t for t in trials if t.value is not None), key=lambda t: (t.value, t.number))
    page.locator('a[data-sort="value"]').click()
    page.wait_for_url("**sort=value**")
    first = page.locator("table.trials tbody tr").first
    assert first.get_attribute("data-trial") == str(valued[0].number)
    assert page.locator('th:has(a[data-sort="value"])').get_attribute("aria-sort") == "ascending"
    page.locator('a[data-sort="value"]').click()
    page.wait_for_url("**desc=1**")
    first = page.locator("table.trials tbody tr").first
    assert float(first.locator('[data-figure="value"]').inner_text().split(" @")[0]) == (
        pytest.approx(valued[-1].value, rel=1e-5)
    )
    # The best trial's run.
    href = page.locator("[data-best-run]").get_attribute("href")
    assert href == f"/projects/{PROJECT}/runs/{tj.best.run_id}"
    assert httpx.get(yard.at(href)).status_code == 200


def test_a_tuning_job_with_no_trials_yet_and_its_stop_button(yard: Yard, page: Any) -> None:
    from shipyard.tuning.schemas import TuningJobCreate

    tj = yard.services.tuning.create(
        "live",
        TuningJobCreate.model_validate(
            {
                "name": "waiting",
                "kind": "function",
                "objective": {"metric": "auc", "direction": "maximize"},
                "space": {"c": {"type": "float", "low": 0.01, "high": 10, "log": True}},
            }
        ),
    )
    page.goto(yard.at(f"/projects/live/tuning-jobs/{tj.id}"))
    assert page.locator("[data-objective]").inner_text() == "auc (maximize)"
    assert page.locator("[data-no-best]").is_visible()
    assert page.locator('[data-empty="trials"]').is_visible()
    page.locator('[data-action="stop"]').click()
    page.wait_for_url("**done=**")
    assert page.locator("[data-notice]").inner_text() == "Stopped"
    assert page.locator(".page-head [data-status]").get_attribute("data-status") == "stopped"
    assert page.locator('[data-action="stop"]').count() == 0
    assert yard.services.tuning.get("live", tj.id).status.value == "stopped"


# -- empty states and errors ------------------------------------------------------------------


def test_empty_states_and_clear_errors(yard: Yard, page: Any) -> None:
    page.goto(yard.at("/projects/empty/jobs"))
    empty = page.locator('[data-empty="jobs"]')
    assert "No training jobs in empty yet" in empty.inner_text()
    assert 'sy.jobs.submit("train.py"' in empty.locator("code").first.inner_text()
    page.goto(yard.at("/projects/empty/tuning-jobs"))
    assert "sy.tune(" in page.locator('[data-empty="tuning"] code').first.inner_text()
    screenshot(page, "tuning-empty")

    # A status that does not exist: a 400 page that names the field and the choices.
    resp = page.goto(yard.at(f"/projects/{PROJECT}/jobs?status=done"))
    assert resp is not None and resp.status == 400
    assert "status: expected one of queued" in page.locator(".error-message").inner_text()
    resp = page.goto(yard.at(f"/projects/{PROJECT}/tuning-jobs/{yard.tuning_id}?sort=nope"))
    assert resp is not None and resp.status == 400
    assert "p.booster" in page.locator(".error-message").inner_text()
    # A missing job: a 404 page with a way back to the project.
    resp = page.goto(yard.at(f"/projects/{PROJECT}/jobs/nosuchjob"))
    assert resp is not None and resp.status == 404
    assert page.get_by_role("link", name=PROJECT).count() >= 1


def test_stop_refuses_a_form_from_another_site(yard: Yard) -> None:
    from shipyard.jobs.schemas import JobCreate

    job = yard.services.jobs.submit(
        "live", JobCreate(name="guarded", entry_point="slow.py", source_dir=str(yard.src))
    )
    try:
        r = httpx.post(
            yard.at(f"/projects/live/jobs/{job.id}/stop"),
            headers={"origin": "http://evil.example"},
            follow_redirects=False,
        )
        assert r.status_code == 403
        assert not yard.services.jobs.get("live", job.id).stop_requested
    finally:
        yard.services.jobs.stop("live", job.id, reason="test over")
        deadline = time.monotonic() + 20
        while not yard.services.jobs.get("live", job.id).status.final:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_with_auth_only_editors_stop_and_the_cookie_reads_only_studio(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from shipyard.jobs.schemas import JobCreate
    from shipyard.projects.schemas import ProjectCreate, Role, UserCreate
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    home = tmp_path_factory.mktemp("studio-jobs-auth")
    # No worker: the job stays queued, so what is checked is the page and the stop, not a run.
    services = Services.from_settings(
        make_settings(
            home, f"sqlite:///{home / 'shipyard.db'}", auth=True, job_workers_embedded=False
        )
    )
    try:
        p = services.projects
        p.create_project(ProjectCreate(name="team"))
        for name, role in (("vic", Role.viewer), ("eve", Role.editor)):
            p.create_user(UserCreate(name=name))
            p.set_membership("team", name, role)
        vic, eve = p.create_token("vic").secret, p.create_token("eve").secret
        job = services.jobs.submit(
            "team", JobCreate(name="queued-one", entry_point="/nowhere/train.py")
        )
        page = f"/projects/team/jobs/{job.id}"
        with ServerThread(create_app(services)) as srv:
            with httpx.Client(base_url=srv.url) as anon:
                r = anon.get(page + "/log")
                assert r.status_code == 303 and r.headers["location"].startswith("/login")
            with httpx.Client(base_url=srv.url, cookies={"shipyard_token": vic}) as c:
                r = c.get(page)
                assert r.status_code == 200 and 'data-action="stop"' not in r.text
                log = c.get(page + "/log", params={"after_seq": 0}).json()
                assert log["status"] == "queued" and log["done"] is False
                assert c.post(page + "/stop").status_code == 403
                # The cookie never authorizes the REST API.
                assert c.post(f"/api/v1/projects/team/jobs/{job.id}/stop").status_code == 401
            assert services.jobs.get("team", job.id).status.value == "queued"
            with httpx.Client(base_url=srv.url, cookies={"shipyard_token": eve}) as c:
                r = c.get(page)
                assert 'data-action="stop"' in r.text
                r = c.post(page + "/stop")
                assert r.status_code == 303 and "done=Stopped" in r.headers["location"]
            stopped = services.jobs.get("team", job.id)
            assert stopped.status.value == "stopped"
    finally:
        services.close()
