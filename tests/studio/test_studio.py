"""Studio in a real Chromium: what a person sees on each page, driven by clicks and typing.

Runs are logged through the SDK into a real server (``studio`` fixture); each test opens pages
as a user would and checks what is on the screen and in the URL. Screenshots of the main pages
land in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.conftest import ServerThread, make_settings
from tests.studio.conftest import Studio, bulk_runs, screenshot


def query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query, keep_blank_values=True)


def column_texts(page: Any, col: str) -> list[str]:
    return page.locator(f'#runs-table tbody td[data-col="{col}"]').all_inner_texts()


def run_names(page: Any) -> list[str]:
    return page.locator("#runs-table tbody td.name a").all_inner_texts()


def wait_for_charts(page: Any, selector: str = ".chart[data-key]") -> None:
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(d => d.querySelector('svg.main-svg'))",
        arg=selector,
    )


# -- experiments and the runs table ------------------------------------------------------------


def test_experiments_list_leads_to_the_runs_table(studio: Studio, page: Any) -> None:
    page.goto(studio.at(f"/projects/{studio.project}"))
    assert page.locator("h1").inner_text().startswith(studio.project)
    link = page.get_by_role("link", name=studio.experiment, exact=True)
    screenshot(page, "experiments")
    link.click()
    page.wait_for_url(f"**{studio.runs_url}")
    assert page.locator("#run-count").inner_text() == "14 runs"
    assert len(run_names(page)) == 14
    crumbs = page.locator("nav.crumbs li").all_inner_texts()
    assert crumbs == [studio.project, studio.experiment]
    # The project switcher knows this project and shows it as the current one.
    assert page.locator("#project-switcher").input_value() == studio.project


def test_runs_table_shows_status_words_times_ids_and_default_columns(
    studio: Studio, page: Any
) -> None:
    page.goto(studio.at(studio.runs_url))
    rows = page.locator("#runs-table tbody tr")
    assert rows.count() == 14

    def status_of(name: str) -> str:
        row = page.locator(f'#runs-table tbody tr[data-run-id="{studio.runs[name]}"]')
        return row.locator(".status").inner_text().strip()

    # Statuses are words, not colour alone.
    assert status_of("grid-00") == "Finished"
    assert status_of("diverged") == "Failed"
    assert status_of("still-training") == "Running"
    # Every run's id is shown in monospace with a copy button; the name links to the run.
    first = rows.first
    assert first.locator("code.id").inner_text() == first.get_attribute("data-run-id")
    assert first.locator("button.copy").count() == 1
    # Relative start time, with the exact UTC time on hover.
    t = first.locator("time")
    assert re.fullmatch(r"just now|\d+ (minute|hour)s? ago", t.inner_text())
    assert t.get_attribute("title").endswith("UTC)")  # local time, then the UTC original
    # Default columns: the page's metrics and params.
    headers = page.locator("#runs-table thead th[data-col]")
    cols = [headers.nth(i).get_attribute("data-col") for i in range(headers.count())]
    for c in ("metrics.accuracy", "metrics.loss", "params.lr", "params.max_depth"):
        assert c in cols
    assert not any(c.startswith("metrics.system/") for c in cols)  # system metrics: opt in
    # The header stays visible while the table scrolls.
    position = page.eval_on_selector("#runs-table thead th", "th => getComputedStyle(th).position")
    assert position == "sticky"
    screenshot(page, "runs-table", docs_name="runs-table.png")


def test_filter_box_speaks_the_search_language(studio: Studio, page: Any) -> None:
    page.goto(studio.at(studio.runs_url))
    # "/" focuses the filter box from anywhere on the page.
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "filter"
    page.keyboard.type("metrics.loss < 0.3 and params.lr = '0.1'")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*filter=.*"))
    assert query(page)["filter"] == ["metrics.loss < 0.3 and params.lr = '0.1'"]
    # The oracle: each run's own latest metrics and params, read one by one through the SDK.
    expected = set()
    for name, rid in studio.runs.items():
        run = studio.client.get_run(rid)
        loss = run.metrics.get("loss")
        if run.params.get("lr") == "0.1" and loss is not None and loss.value < 0.3:
            expected.add(name)
    assert expected and len(expected) < 14
    assert set(run_names(page)) == expected
    n = len(expected)
    assert page.locator("#run-count").inner_text() == f"{n} run{'s' if n != 1 else ''} match" + (
        "es" if n == 1 else ""
    )
    assert page.locator("#filter").input_value() == "metrics.loss < 0.3 and params.lr = '0.1'"
    # A link reproduces the view; Back returns to the unfiltered table.
    fresh = page.context.new_page()
    fresh.goto(page.url)
    assert set(run_names(fresh)) == expected
    fresh.close()
    page.go_back()
    page.wait_for_url(f"**{studio.runs_url}")
    assert len(run_names(page)) == 14


@pytest.mark.parametrize(
    ("text", "marked"),
    [
        ("metrics.loss < 0.3 and params.lr == x", "x"),
        ("metrics.loss < 0.3 OR params.lr = '0.1'", "OR"),
        ("metrcs.loss < 0.3", "metrcs"),
        ("params.lr > 0.1", "0.1"),
        ("metrics.loss <", ""),
    ],
)
def test_invalid_filter_shows_the_parsers_message_in_place(
    studio: Studio, page: Any, text: str, marked: str
) -> None:
    page.goto(studio.at(studio.runs_url))
    page.fill("#filter", text)
    page.press("#filter", "Enter")
    page.wait_for_selector("#filter-error")
    error = page.locator("#filter-error")
    message = error.locator(".filter-message").inner_text()
    assert message.startswith("filter: ") and "position" in message
    # The offending part is marked inside the filter as typed.
    assert error.locator("mark").inner_text().strip() == marked
    assert error.locator("pre").inner_text().rstrip() == text
    assert page.locator("#filter").get_attribute("aria-invalid") == "true"
    assert page.locator("#filter").input_value() == text  # kept, to fix in place
    assert page.locator("#runs-table").count() == 0
    if marked == "x":
        screenshot(page, "runs-invalid-filter")


def test_bad_sort_in_the_url_is_explained_not_an_error(studio: Studio, page: Any) -> None:
    resp = page.goto(studio.at(studio.runs_url + "?sort=-bogus"))
    assert resp.status == 200
    assert "unknown attribute 'bogus'" in page.locator("#filter-error").inner_text()


def test_sorting_by_a_column_with_back_and_links(studio: Studio, page: Any) -> None:
    page.goto(studio.at(studio.runs_url))
    header = page.locator('#runs-table th[data-col="metrics.loss"]')
    header.locator("a").click()
    page.wait_for_url(re.compile(r".*sort=-metrics\.loss"))
    assert header.get_attribute("aria-sort") == "descending"
    values = [float(v) for v in column_texts(page, "metrics.loss")]
    assert values == sorted(values, reverse=True) and len(values) == 14
    assert run_names(page)[0] == "diverged"  # loss 9.5
    header.locator("a").click()
    page.wait_for_url(re.compile(r".*sort=metrics\.loss"))
    assert header.get_attribute("aria-sort") == "ascending"
    values = [float(v) for v in column_texts(page, "metrics.loss")]
    assert values == sorted(values)
    # Sort by a param (strings) and by name.
    page.locator('#runs-table th[data-col="name"] a').click()
    page.wait_for_url(re.compile(r".*sort=name"))
    names = run_names(page)
    assert names == sorted(names)
    page.go_back()
    page.wait_for_url(re.compile(r".*sort=metrics\.loss$"))
    values = [float(v) for v in column_texts(page, "metrics.loss")]
    assert values == sorted(values)


def test_column_chooser_sets_columns_in_the_url(studio: Studio, page: Any) -> None:
    page.goto(studio.at(studio.runs_url))
    page.locator("#column-chooser summary").click()
    page.locator('#column-chooser input[value="params.lr"]').uncheck()
    page.locator('#column-chooser input[value="tags.team"]').check()
    # The chooser's search box narrows a long list of keys.
    page.fill("#column-chooser .chooser-filter", "depth")
    assert page.locator('#column-chooser label.choice:has(input[value="params.lr"])').is_hidden()
    assert page.locator(
        '#column-chooser label.choice:has(input[value="params.max_depth"])'
    ).is_visible()
    page.fill("#column-chooser .chooser-filter", "")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r".*col=.*"))
    cols = [c for c in query(page)["col"] if c]
    assert "tags.team" in cols and "params.lr" not in cols
    headers = page.locator("#runs-table thead th[data-col]")
    shown = [headers.nth(i).get_attribute("data-col") for i in range(headers.count())]
    assert "tags.team" in shown and "params.lr" not in shown
    assert set(column_texts(page, "tags.team")) == {"churn", ""}  # still-training has no tag
    # The same URL in a new tab shows the same columns.
    other = page.context.new_page()
    other.goto(page.url)
    assert other.locator('#runs-table th[data-col="tags.team"]').count() == 1
    assert other.locator('#runs-table th[data-col="params.lr"]').count() == 0
    other.close()
    # Choosing no column at all is a choice too.
    page.locator("#column-chooser summary").click()
    for box in page.locator('#column-chooser input[type="checkbox"]').all():
        box.uncheck()
    page.get_by_role("button", name="Apply").click()
    page.wait_for_load_state()
    assert page.locator("#runs-table thead th[data-col*='.']").count() == 0


@pytest.fixture(scope="module")
def paged(studio: Studio) -> tuple[str, str]:
    project = f"paging-{uuid.uuid4().hex[:6]}"
    return project, bulk_runs(studio.services, project, 60)


def test_pagination_keeps_filter_sort_and_selection(
    studio: Studio, page: Any, paged: tuple[str, str]
) -> None:
    project, eid = paged
    base = f"/projects/{project}/experiments/{eid}"
    page.goto(studio.at(base + "?size=25"))
    assert page.locator("#run-count").inner_text() == "60 runs"
    assert page.locator(".pageno").inner_text() == "Page 1 of 3"
    # Newest first: trial-59 .. trial-35.
    assert run_names(page) == [f"trial-{i}" for i in range(59, 34, -1)]
    page.locator("#runs-table input.run-select").nth(0).check()
    assert query(page)["sel"] == [
        page.locator("#runs-table tbody tr").nth(0).get_attribute("data-run-id")
    ]
    page.get_by_role("link", name="Next ›").click()
    page.wait_for_url(re.compile(r".*page=2"))
    assert run_names(page) == [f"trial-{i}" for i in range(34, 9, -1)]
    page.locator("#runs-table input.run-select").nth(0).check()
    sel = query(page)["sel"]
    assert len(sel) == 2  # the selection survives paging
    assert page.locator("#selected-count").inner_text() == "2 selected"
    assert page.locator("#compare-button").get_attribute("aria-disabled") is None
    page.get_by_role("link", name="Last »").click()
    page.wait_for_url(re.compile(r".*page=3"))
    assert run_names(page) == [f"trial-{i}" for i in range(9, -1, -1)]
    assert page.locator("a[rel=next]").count() == 0
    page.go_back()
    page.wait_for_url(re.compile(r".*page=2"))
    assert run_names(page)[0] == "trial-34"
    # Rows per page is part of the URL as well.
    page.select_option("#page-size", "100")
    page.wait_for_url(re.compile(r".*size=100"))
    assert len(run_names(page)) == 60
    assert query(page)["sel"] == sel


# -- a run -------------------------------------------------------------------------------------


def test_run_page_shows_params_tags_metrics_and_charts(studio: Studio, page: Any) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=studio.url)
    rid = studio.runs["grid-00"]
    page.goto(studio.at(studio.run_url("grid-00")))
    assert page.locator("h1").inner_text().startswith("grid-00")
    assert page.locator(".page-head .status").inner_text().strip() == "Finished"
    crumbs = page.locator("nav.crumbs li").all_inner_texts()
    assert crumbs == [studio.project, studio.experiment, "grid-00"]
    params = dict(
        zip(
            page.locator("#params th").all_inner_texts(),
            page.locator("#params td").all_inner_texts(),
            strict=True,
        )
    )
    assert params == {"lr": "0.1", "max_depth": "3", "optimizer": "adam", "seed": "7"}
    assert "team" in page.locator("#tags").inner_text()
    run = studio.client.get_run(rid)
    latest = page.locator("#metrics tr:has(a:text-is('loss')) td.num").first.inner_text()
    assert float(latest) == pytest.approx(run.metrics["loss"].value, rel=1e-5)
    # One chart per metric, drawn by Plotly (its svg), and system metrics apart.
    wait_for_charts(page)
    assert page.locator('#charts .charts:not(.system) .chart[data-key="loss"] svg.main-svg').count()
    assert page.locator('.charts.system .chart[data-key="system/cpu_percent"]').count() == 1
    gd = '.chart[data-key="loss"]'
    steps = page.eval_on_selector(gd, "d => d.data[0].x")
    assert steps == list(range(60))
    screenshot(page, "run")
    # Time on the x axis, log scale and smoothing: redrawn, and remembered in the URL.
    page.get_by_label("Time", exact=True).check()
    assert page.eval_on_selector(gd, "d => d.layout.xaxis.type") == "date"
    page.get_by_label("Log scale").check()
    assert page.eval_on_selector(gd, "d => d.layout.yaxis.type") == "log"
    page.locator("#smoothing").fill("0.8")
    page.wait_for_function(f"() => document.querySelector('{gd}').data.length === 2")
    raw, smooth = page.eval_on_selector(gd, "d => [d.data[0].y, d.data[1].y]")
    assert raw == page.eval_on_selector(gd, "d => d.data[0].y")
    assert max(smooth) - min(smooth) < max(raw) - min(raw)  # smoothed is calmer
    q = query(page)
    assert q["x"] == ["time"] and q["log"] == ["1"] and q["smooth"] == ["0.8"]
    page.reload()
    wait_for_charts(page)
    assert page.eval_on_selector(gd, "d => d.layout.yaxis.type") == "log"
    assert page.eval_on_selector(gd, "d => d.data.length") == 2
    # Copy the run id.
    page.locator(".meta button.copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == rid


def test_child_runs_are_listed_under_their_parent(studio: Studio, page: Any) -> None:
    import shipyard as sy

    sy.init(client=studio.client)
    with sy.start_run(experiment=f"tuning-{uuid.uuid4().hex[:6]}", name="search") as parent:
        for i in range(2):
            with sy.start_run(nested=True, name=f"trial-{i}") as child:
                child.log_metric("score", 0.5 + i / 10)
    page.goto(studio.at(f"/projects/{studio.project}/runs/{parent.id}"))
    section = page.locator("#children")
    assert section.locator("h2").inner_text() == "Child runs 2"
    assert section.locator("tbody a").all_inner_texts() == ["trial-0", "trial-1"]
    assert section.locator("tbody td.num").all_inner_texts() == ["0.5", "0.6"]
    section.get_by_role("link", name="trial-1").click()
    page.wait_for_url(re.compile(r".*/runs/.*"))
    page.locator(".meta").get_by_role("link", name="search").click()
    page.wait_for_url(f"**/runs/{parent.id}")


def test_a_long_history_is_thinned_for_the_chart_and_says_so(studio: Studio, page: Any) -> None:
    from shipyard.tracking.schemas import RunCreate

    exp = studio.client.create_experiment(f"long-{uuid.uuid4().hex[:6]}")
    run = studio.client.backend.create_run(studio.project, RunCreate(experiment_id=exp.id))
    n = 12_000
    rows = [("loss", 1 / (i + 1), i, 1_700_000_000_000 + i) for i in range(n)]
    studio.client.backend.log_batch(studio.project, run.id, metrics=rows)
    page.goto(studio.at(f"/projects/{studio.project}/runs/{run.id}"))
    wait_for_charts(page)
    x = page.eval_on_selector('.chart[data-key="loss"]', "d => d.data[0].x")
    assert len(x) == 5000 and x[0] == 0 and x[-1] == n - 1  # first and last points kept
    assert page.locator('[data-note-for="loss"]').inner_text() == (
        "Showing 5,000 of 12,000 points, evenly thinned."
    )


def test_artifact_tree_previews_and_downloads(studio: Studio, page: Any) -> None:
    page.goto(studio.at(studio.run_url("grid-00")))
    tree = page.locator(".artifact-tree")
    assert tree.locator("summary").all_inner_texts() == ["eval/"]
    # Text
    tree.get_by_role("link", name="notes.txt", exact=True).click()
    page.wait_for_url(re.compile(r".*artifact=notes\.txt"))
    assert "trained on churn-2024" in page.locator(".preview-text").inner_text()
    # JSON, pretty-printed
    page.locator(".artifact-tree summary").click()
    tree.get_by_role("link", name="report.json", exact=True).click()
    page.wait_for_url(re.compile(r".*artifact=eval%2Freport\.json|.*artifact=eval/report\.json"))
    assert (
        page.locator(".preview-text").inner_text()
        == '{\n  "auc": 0.91,\n  "classes": [\n    0,\n    1\n  ]\n}'
    )
    # CSV: the first rows as a table
    tree.get_by_role("link", name="predictions.csv", exact=True).click()
    page.wait_for_selector("table.csv")
    assert page.locator("table.csv thead th").all_inner_texts() == ["customer", "churned", "score"]
    assert page.locator("table.csv tbody tr").count() == 50
    assert page.locator("table.csv tbody tr").first.inner_text().split() == ["c0000", "0", "0.000"]
    assert "first 50 rows" in page.locator(".preview-note").inner_text()
    screenshot(page, "run-artifact-csv")
    # Image, loaded from the server
    tree.get_by_role("link", name="confusion.png", exact=True).click()
    img = page.locator("img.preview-image")
    img.wait_for()
    page.wait_for_function("() => document.querySelector('img.preview-image').complete")
    assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [24, 16]
    # Download: the exact bytes, as an attachment.
    with page.expect_download() as dl:
        page.locator(".preview-head a", has_text="Download").click()
    download = dl.value
    assert download.suggested_filename == "confusion.png"
    from tests.studio.conftest import tiny_png

    assert Path(download.path()).read_bytes() == tiny_png()


def test_a_logged_html_or_svg_file_cannot_run_script_in_studio(studio: Studio) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    rid = studio.runs["grid-01"]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"evil-{uuid.uuid4().hex}"
    tmp.mkdir()
    (tmp / "x.svg").write_bytes(svg)
    (tmp / "x.html").write_bytes(b"<script>alert(1)</script>")
    studio.client.log_artifact(rid, tmp / "x.svg", "x.svg")
    studio.client.log_artifact(rid, tmp / "x.html", "x.html")
    base = studio.at(f"/projects/{studio.project}/runs/{rid}/files/")
    with httpx.Client() as c:
        inline = c.get(base + "x.svg", params={"inline": "1"})
        assert inline.headers["content-type"] == "image/svg+xml"
        assert "sandbox" in inline.headers["content-security-policy"]
        html = c.get(base + "x.html", params={"inline": "1"})
        assert html.headers["content-type"] == "application/octet-stream"
        assert html.headers["content-disposition"].startswith("attachment")
        assert html.content == b"<script>alert(1)</script>"


def test_user_text_is_shown_not_run(studio: Studio, page: Any) -> None:
    name = '<img src=x onerror="window.pwned=1">'
    from shipyard.tracking.schemas import RunCreate

    run = studio.client.backend.create_run(
        studio.project, RunCreate(experiment_id=studio.experiment_id, name=name)
    )
    try:
        page.goto(studio.at(f"/projects/{studio.project}/runs/{run.id}"))
        assert page.locator("h1").inner_text().startswith(name)
        assert page.evaluate("window.pwned") is None
    finally:
        studio.client.delete_run(run.id)


# -- compare -----------------------------------------------------------------------------------


def test_compare_selected_runs(studio: Studio, page: Any) -> None:
    chosen = ["grid-00", "grid-05", "grid-07"]  # lr 0.1/0.01/0.03, depth 3/6/12, adam/sgd/sgd
    page.goto(studio.at(studio.runs_url + "?sort=name"))
    assert page.locator("#compare-button").get_attribute("aria-disabled") == "true"
    for name in chosen:
        page.locator(f'#runs-table tr[data-run-id="{studio.runs[name]}"] input.run-select').check()
    assert query(page)["sel"] == [studio.runs[n] for n in chosen]
    page.locator("#compare-button").click()
    page.wait_for_url(re.compile(r".*/compare\?.*"))
    assert query(page)["run"] == [studio.runs[n] for n in chosen]
    assert page.locator("h1").inner_text() == "Compare 3 runs"
    assert page.locator(".legend li a").all_inner_texts() == chosen
    # Params side by side; the ones that differ are highlighted and say so.
    diff = page.locator("#params-table tr.diff th").all_inner_texts()
    assert [d.split()[0] for d in diff] == ["lr", "max_depth", "optimizer"]
    assert page.locator('#params-table tr[data-param="seed"]').get_attribute("class") is None
    page.get_by_label("Only differences").check()
    assert page.locator('#params-table tr[data-param="seed"]').is_hidden()
    assert query(page)["diff"] == ["1"]
    # Histories overlaid: one chart per metric, one line per run, one colour per run kept
    # across every chart and the legend.
    wait_for_charts(page)
    swatches = page.locator(".legend .swatch").evaluate_all(
        "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    assert len(set(swatches)) == 3
    for key in ("loss", "accuracy"):
        sel = f'.chart[data-key="{key}"]'
        assert page.eval_on_selector(sel, "d => d.data.map(t => t.name)") == chosen
        colors = page.eval_on_selector(
            sel,
            "d => [...d.querySelectorAll('.scatterlayer .trace path.js-line')]"
            ".map(p => getComputedStyle(p).stroke)",
        )
        assert colors == swatches, key
    # Parallel coordinates: the params that differ, then the chosen metric.
    page.wait_for_selector("#parcoords svg.main-svg")
    labels = page.eval_on_selector("#parcoords", "d => d.data[0].dimensions.map(x => x.label)")
    assert labels == ["lr", "max_depth", "optimizer", "accuracy"]
    page.select_option("#pc-metric", "loss")
    page.wait_for_url(re.compile(r".*pc=loss"))
    page.wait_for_selector("#parcoords svg.main-svg")
    labels = page.eval_on_selector("#parcoords", "d => d.data[0].dimensions.map(x => x.label)")
    assert labels[-1] == "loss"
    assert page.get_by_label("Only differences").is_checked()  # kept in the URL
    screenshot(page, "compare", docs_name="compare.png")


def test_compare_needs_two_to_ten_runs(studio: Studio, page: Any) -> None:
    one = studio.runs["grid-00"]
    resp = page.goto(studio.at(f"/projects/{studio.project}/compare?run={one}"))
    assert resp.status == 400
    assert "choose 2 to 10 runs" in page.locator(".error-message").inner_text()
    eleven = "&".join(f"run={r}" for r in list(studio.runs.values())[:11])
    resp = page.goto(studio.at(f"/projects/{studio.project}/compare?{eleven}"))
    assert resp.status == 400


# -- errors, empty states, shell ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/projects/{p}/runs/nope0000", "run 'nope0000' not found"),
        (
            "/projects/{p}/experiments/nope0000",
            "experiment 'nope0000' not found in project 'churn'",
        ),
        ("/projects/no-such-project", "project 'no-such-project' not found"),
        ("/projects/no-such-project/runs/x", "project 'no-such-project' not found"),
    ],
)
def test_missing_objects_are_404_pages_with_a_way_back(
    studio: Studio, page: Any, path: str, message: str
) -> None:
    resp = page.goto(studio.at(path.format(p=studio.project)))
    assert resp.status == 404
    assert resp.headers["content-type"].startswith("text/html")
    assert page.locator("h1").inner_text() == "Not found"
    assert page.locator(".error-message").inner_text() == message
    if "no-such-project" in path:
        assert page.get_by_role("link", name="All projects").count() == 1
        assert page.locator(".error-actions a", has_text="Back to").count() == 0
    else:
        page.get_by_role("link", name=f"Back to {studio.project}").click()
        page.wait_for_url(f"**/projects/{studio.project}")
    if "runs/nope" in path:
        screenshot(page, "not-found")


def test_a_malformed_query_parameter_is_a_400_page_naming_it(studio: Studio, page: Any) -> None:
    resp = page.goto(studio.at(f"/projects/{studio.project}?page=abc"))
    assert resp.status == 400
    assert page.locator(".error-message").inner_text().startswith("query.page: ")


def test_empty_project_teaches_the_three_lines_that_log_a_first_run(
    studio: Studio, page: Any
) -> None:
    from shipyard.projects.schemas import ProjectCreate

    project = f"fresh-{uuid.uuid4().hex[:6]}"
    studio.services.projects.create_project(ProjectCreate(name=project))
    page.goto(studio.at(f"/projects/{project}"))
    empty = page.locator('[data-empty="project"]')
    assert empty.is_visible()
    code = page.locator("#snippet-code").inner_text()
    lines = code.strip().splitlines()
    assert len(lines) == 3
    assert f'sy.init(project="{project}", tracking_uri="{studio.url}")' in code
    screenshot(page, "empty-project")
    # The code works as shown: run it, reload, and the first run is there.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parent)
    page.reload()
    page.get_by_role("link", name="default", exact=True).click()
    assert page.locator("#run-count").inner_text() == "1 run"
    assert column_texts(page, "metrics.loss") == ["0.42"]
    assert page.locator("#runs-table .status").inner_text().strip() == "Finished"


def test_empty_experiment_and_no_match_states(studio: Studio, page: Any) -> None:
    exp = studio.client.create_experiment(f"empty-{uuid.uuid4().hex[:6]}")
    page.goto(studio.at(f"/projects/{studio.project}/experiments/{exp.id}"))
    assert page.locator('[data-empty="experiment"]').is_visible()
    assert "sy.log_metric" in page.locator("#snippet-code").inner_text()
    page.goto(studio.at(studio.runs_url + "?filter=metrics.loss+%3E+100"))
    assert "No run matches this filter" in page.locator(".empty").inner_text()


def test_home_lists_projects_and_the_switcher_moves_between_them(
    studio: Studio, page: Any, paged: tuple[str, str]
) -> None:
    page.goto(studio.at("/"))
    assert page.get_by_role("link", name=studio.project, exact=True).count() == 1
    page.get_by_role("link", name=studio.project, exact=True).click()
    page.wait_for_url(f"**/projects/{studio.project}")
    page.select_option("#project-switcher", paged[0])
    page.wait_for_url(f"**/projects/{paged[0]}")
    assert page.locator("h1").inner_text().startswith(paged[0])


def test_studio_uses_no_outside_resources_and_leaves_the_api_alone(
    studio: Studio, page: Any
) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(studio.at(studio.run_url("grid-00")))
    wait_for_charts(page)
    assert any(u.endswith("/static/vendor/plotly.min.js") for u in requested)
    outside = [u for u in requested if not u.startswith(studio.url) and not u.startswith("data:")]
    assert outside == []
    with httpx.Client(base_url=studio.url) as c:
        js = c.get("/static/vendor/plotly.min.js", headers={"accept-encoding": "gzip"})
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert js.headers["content-encoding"] == "gzip" and b"plotly" in js.content[:2000]
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/docs").status_code == 200
        assert c.get("/api/v1/projects").headers["content-type"] == "application/json"
        missing = c.get("/api/v1/projects/no-such-project/runs/x")
        assert missing.status_code == 404 and set(missing.json()) == {"error"}
        spec = c.get("/openapi.json").json()
        assert not any(p == "/" or p.startswith("/projects/") for p in spec["paths"])


# -- auth --------------------------------------------------------------------------------------


def test_login_with_an_api_token_when_auth_is_on(
    page: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from shipyard.projects.schemas import ProjectCreate, Role, UserCreate
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    home = tmp_path_factory.mktemp("studio-auth")
    services = Services.from_settings(
        make_settings(home, f"sqlite:///{home / 'shipyard.db'}", auth=True)
    )
    try:
        p = services.projects
        alice = p.create_user(UserCreate(name="alice"))
        bob = p.create_user(UserCreate(name="bob"))
        p.create_project(ProjectCreate(name="secret"))
        p.create_project(ProjectCreate(name="shared"))
        p.set_membership("shared", alice.name, Role.viewer)
        p.set_membership("secret", bob.name, Role.viewer)
        token = p.create_token("alice").secret
        with ServerThread(create_app(services)) as srv:
            page.goto(srv.url + "/projects/shared?q=x")
            page.wait_for_url(re.compile(r".*/login\?next=.*"))
            assert query(page)["next"] == ["/projects/shared?q=x"]
            screenshot(page, "login")
            page.fill("#token", "sy_not-a-real-token")
            page.get_by_role("button", name="Sign in").click()
            assert "not valid" in page.locator(".form-error").inner_text()
            page.fill("#token", token)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{srv.url}/projects/shared?q=x")
            cookie = next(c for c in page.context.cookies() if c["name"] == "shipyard_token")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
            assert page.locator(".who").inner_text() == "alice"
            # Alice sees only her projects, in the switcher and on the home page.
            options = page.locator("#project-switcher option").all_inner_texts()
            assert options == ["shared"]
            resp = page.goto(srv.url + "/projects/secret")
            assert resp.status == 403
            assert "alice needs the viewer role" in page.locator(".error-message").inner_text()
            # The cookie is for Studio only: the API still wants the header.
            with httpx.Client(base_url=srv.url, cookies={"shipyard_token": token}) as c:
                assert c.get("/api/v1/projects").status_code == 401
            # A login form posted from another site is refused.
            with httpx.Client(base_url=srv.url) as c:
                r = c.post(
                    "/login",
                    data={"token": token, "next": "/"},
                    headers={"origin": "http://evil.example"},
                )
                assert r.status_code == 403 and "shipyard_token" not in r.headers.get(
                    "set-cookie", ""
                )
            page.goto(srv.url + "/")
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(re.compile(r".*/login.*"))
            page.goto(srv.url + "/")
            page.wait_for_url(re.compile(r".*/login.*"))
            # Never an open redirect after login.
            page.goto(srv.url + "/login?next=//evil.example/x")
            page.fill("#token", token)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{srv.url}/")
    finally:
        services.close()


# -- speed -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_db", ["sqlite", "postgres"])
def test_runs_page_is_fast_at_100000_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend_db: str
) -> None:
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    home = tmp_path_factory.mktemp("studio-speed")
    url = (
        f"sqlite:///{home / 'shipyard.db'}"
        if backend_db == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    services = Services.from_settings(make_settings(home, url))
    project = f"speed-{uuid.uuid4().hex[:6]}"
    try:
        t = time.perf_counter()
        eid = bulk_runs(services, project, 100_000)
        print(f"\n[{backend_db}] inserted 100,000 runs in {time.perf_counter() - t:.1f} s")
        base = f"/projects/{project}/experiments/{eid}"
        with ServerThread(create_app(services)) as srv, httpx.Client(base_url=srv.url) as c:
            c.get(base)  # first request warms caches and the connection pool
            for q, first in [
                ("", "trial-99999"),
                ("?sort=-metrics.loss", None),
                ("?filter=metrics.loss+%3C+0.1+and+params.lr+%3D+%270.1%27", None),
                ("?page=2000&sort=params.max_depth", None),
            ]:
                t = time.perf_counter()
                r = c.get(base + q)
                elapsed = time.perf_counter() - t
                print(
                    f"[{backend_db}] GET runs page{q or ' (newest first)'}: {elapsed * 1000:.0f} ms"
                )
                assert r.status_code == 200
                assert r.text.count('<tr data-run-id="') == 50  # one page of rows, never all
                if first:
                    assert "100,000 runs" in r.text
                    assert f">{first}</a>" in r.text
                assert elapsed < 1.5, f"{q}: {elapsed:.2f} s"
    finally:
        services.close()
