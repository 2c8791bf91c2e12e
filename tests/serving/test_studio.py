"""Studio's endpoint pages in a real headless Chromium, against a real server and endpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipyard.serving.schemas import EndpointCreate, parse
from tests.serving.conftest import Models, Register, wait_in_service

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

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Studio's tests need Chromium at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id="UTC")
    ctx.set_default_timeout(15_000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_the_endpoints_pages_show_status_variants_traffic_and_latency(
    server: Any,
    services: Any,
    project: str,
    register: Register,
    models: Models,
    reap: None,
    page: Any,
) -> None:
    register(project, "fraud", models.pos)
    register(project, "fraud", models.neg)
    # An empty project teaches how to make an endpoint.
    page.goto(f"{server.url}/projects/{project}/endpoints")
    empty = page.locator("[data-empty=endpoints]")
    assert "shipyard endpoints create" in empty.inner_text()

    svc = services.endpoints
    svc.create(
        project,
        parse(
            EndpointCreate,
            {
                "name": "fraud",
                "variants": [
                    {"name": "blue", "model": "fraud/1", "weight": 3},
                    {"name": "green", "model": "fraud/2", "weight": 1},
                ],
                "shadow": {"name": "canary", "model": "fraud/2"},
            },
        ),
    )
    ep = wait_in_service(svc, project, "fraud")
    row = models.row()
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    for _ in range(12):
        assert httpx.post(f"{ep.url}/invocations", json=body).status_code == 200

    page.goto(f"{server.url}/projects/{project}/endpoints")
    line = page.locator("tr[data-endpoint=fraud]")
    assert line.locator("[data-status]").inner_text() == "InService"
    assert "75%" in line.locator("[data-variant=blue]").inner_text()
    assert "25%" in line.locator("[data-variant=green]").inner_text()
    assert "shadow" in line.locator("[data-variant=canary]").inner_text()
    assert line.locator("[data-figure=requests]").inner_text() == "12"
    assert line.locator("[data-figure=p50]").inner_text() != "—"
    assert ep.url in line.inner_text()
    assert page.locator("nav.mainnav a[aria-current=page]").inner_text() == "Endpoints"

    line.get_by_role("link", name="fraud").click()
    page.wait_for_url(f"**/projects/{project}/endpoints/fraud")
    assert page.locator(".page-head [data-status]").inner_text() == "InService"
    variants = page.locator("#variants")
    blue = variants.locator("tr[data-variant=blue]").inner_text()
    green = variants.locator("tr[data-variant=green]").inner_text()
    assert "fraud v1" in blue and "75%" in blue
    assert "fraud v2" in green and "25%" in green
    served = [
        int(variants.locator(f"tr[data-variant={v}] td.num").first.inner_text())
        for v in ("blue", "green")
    ]
    assert sum(served) == 12
    assert "shadow" in variants.locator("tr[data-variant=canary]").inner_text()
    assert page.locator("#deployments tr[data-deployment='1']").count() == 1
    assert page.locator("#events tr[data-event=ready]").count() >= 1
    assert ep.url in page.locator("#call").inner_text()
    crumbs = page.locator("nav.crumbs").inner_text()
    assert project in crumbs and "Endpoints" in crumbs

    # A missing endpoint is a 404 page with a way back, not a JSON body.
    resp = page.goto(f"{server.url}/projects/{project}/endpoints/nope")
    assert resp.status == 404
    assert "nope" in page.locator("main").inner_text()
