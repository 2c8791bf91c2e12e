"""Studio's model registry pages in a real Chromium: the models list, a model with its versions,
and a version with its lineage, aliases and approval buttons, driven by clicks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ServerThread, make_settings
from tests.studio.conftest import screenshot


@dataclass
class Registry:
    url: str
    project: str
    run_id: str
    client: Any


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A server with a model logged from a run that read a dataset, registered twice."""
    from sklearn.linear_model import LogisticRegression

    import shipyard as sy
    from shipyard.sdk.client import Client
    from shipyard.sdk.http import HttpBackend
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    home = tmp_path_factory.mktemp("studio-models")
    services = Services.from_settings(make_settings(home, f"sqlite:///{home / 'shipyard.db'}"))
    x = pd.DataFrame(
        np.random.default_rng(1).normal(size=(40, 3)), columns=["age", "plan", "tenure"]
    )
    model = LogisticRegression().fit(x, (x["age"] > 0).astype(int))
    with ServerThread(create_app(services)) as srv:
        backend = HttpBackend(srv.url, retry_for_s=5)
        client = Client(project="shop", backend=backend)
        sy.init(client=client)
        with sy.start_run(experiment="churn", name="lr-baseline") as run:
            sy.log_input("customers-2024", "9f2c1e", source="s3://data/customers.parquet")
            sy.log_model(model, input_example=x[:3], registered_model_name="churn")
            sy.log_model(model, "model-2", input_example=x[:3], registered_model_name="churn")
        client.set_alias("churn", "champion", 1)
        client.create_registered_model("empty-one", description="nothing registered yet")
        yield Registry(srv.url, "shop", run.id, client)
        backend.close()
    services.close()


def test_models_list_model_and_version_with_lineage(registry: Registry, page: Any) -> None:
    page.goto(f"{registry.url}/projects/{registry.project}")
    page.get_by_role("link", name="Models").click()
    page.wait_for_url("**/projects/shop/models")
    rows = page.locator("table.models tbody tr")
    assert rows.count() == 2
    churn = page.locator('tr[data-model="churn"]')
    assert "v2" in churn.inner_text() and "@champion → v1" in churn.inner_text()
    screenshot(page, "models-list")

    churn.get_by_role("link", name="churn").click()
    page.wait_for_url("**/models/churn")
    versions = page.locator("table.versions tbody tr")
    assert versions.count() == 2
    assert page.locator('tr[data-version="1"] [data-alias="champion"]').count() == 1
    assert page.locator('tr[data-version="2"] [data-approval]').inner_text() == "Pending"

    page.get_by_role("link", name="Version 1").click()
    page.wait_for_url("**/models/churn/versions/1")
    lineage = page.locator("#lineage")
    assert lineage.get_by_role("link", name="lr-baseline").count() == 1
    assert page.locator('[data-dataset="customers-2024"]').count() == 1
    assert "s3://data/customers.parquet" in lineage.inner_text()
    assert [c for c in page.locator("#signature [data-input]").all_inner_texts()] == [
        "age\tdouble",
        "plan\tdouble",
        "tenure\tdouble",
    ]
    assert page.locator("code[data-flavor]").inner_text() == "sklearn"
    screenshot(page, "model-version")
    # The run link leads to the run's page.
    lineage.get_by_role("link", name="lr-baseline").click()
    page.wait_for_url(f"**/runs/{registry.run_id}")


def test_approve_reject_and_aliases_from_the_version_page(registry: Registry, page: Any) -> None:
    page.goto(f"{registry.url}/projects/shop/models/churn/versions/2")
    page.fill("#comment", "AUC 0.91 on holdout")
    page.locator('[data-action="approve"]').click()
    page.wait_for_selector("[data-notice]")
    assert page.locator(".page-head [data-approval]").inner_text() == "Approved"
    history = page.locator("table.history tbody tr")
    assert history.count() == 2
    assert "AUC 0.91 on holdout" in history.first.inner_text()
    assert registry.client.get_model_version("churn", 2).approval_status == "approved"

    page.locator('[data-action="reject"]').click()
    page.wait_for_selector("[data-notice]")
    assert page.locator(".page-head [data-approval]").inner_text() == "Rejected"
    assert [h.status for h in registry.client.get_approval_history("churn", 2)] == [
        "pending",
        "approved",
        "rejected",
    ]

    # Move @champion here, then remove it.
    page.fill("#alias", "champion")
    page.get_by_role("button", name="Set alias").click()
    page.wait_for_selector('#aliases [data-alias="champion"]')
    assert registry.client.get_model_version_by_alias("churn", "champion").version == 2
    page.fill("#alias", "latest")
    page.get_by_role("button", name="Set alias").click()
    assert "reserved" in page.locator("[data-error]").inner_text()
    page.get_by_role("button", name="Remove alias champion").click()
    page.wait_for_selector("[data-notice]")
    assert page.locator('#aliases [data-alias="champion"]').count() == 0
    assert registry.client.get_registered_model("churn").aliases == {}


def test_missing_model_is_a_404_page_and_an_empty_model_teaches(
    registry: Registry, page: Any
) -> None:
    resp = page.goto(f"{registry.url}/projects/shop/models/nope")
    assert resp is not None and resp.status == 404
    assert "not found" in page.content().lower()
    page.goto(f"{registry.url}/projects/shop/models/empty-one")
    assert "shipyard models register" in page.locator('[data-empty="versions"]').inner_text()
    resp = page.goto(f"{registry.url}/projects/shop/models/churn/versions/9")
    assert resp is not None and resp.status == 404


def test_a_form_posted_from_another_site_is_refused(registry: Registry) -> None:
    import httpx

    r = httpx.post(
        f"{registry.url}/projects/shop/models/churn/versions/1/approval",
        data={"status": "approved"},
        headers={"origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert registry.client.get_model_version("churn", 1).approval_status == "pending"
