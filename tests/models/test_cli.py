"""``shipyard models ...`` run for real (the entry point in a subprocess) on an embedded store
seeded through the SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import Cli
from tests.models.conftest import FEATURES


@pytest.fixture
def seeded(tmp_path: Path, small_model: Any) -> tuple[Cli, str]:
    import shipyard as sy
    from shipyard.core.settings import Settings
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    home = tmp_path / "home"
    backend = LocalBackend(settings=Settings(home=home))
    sy.init(client=Client(project="default", backend=backend))
    with sy.start_run(experiment="churn") as run:
        sy.log_model(small_model, input_example=FEATURES[:3])
    backend.close()
    return Cli(home), f"runs:/{run.id}/model"


def test_models_commands(seeded: tuple[Cli, str]) -> None:
    cli, source = seeded
    out = cli("models", "register", source, "churn", "-d", "first", "--tag", "team=risk", "--json")
    v = out.json()
    assert (v["name"], v["version"], v["approval_status"]) == ("churn", 1, "pending")
    cli("models", "register", source, "churn")
    cli("models", "alias", "churn", "champion", "2")
    cli("models", "approve", "churn", "2", "-m", "looks good")
    table = cli("models", "versions", "churn").out
    assert "champion" in table and "approved" in table
    listed = cli("models", "list", "--json").json()
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in listed["data"]] == [
        ("churn", 2, {"champion": 2})
    ]
    found = cli("models", "versions", "-f", "alias = 'champion'", "--json", "-n", "1").json()
    assert [v["version"] for v in found["data"]] == [2] and found["next_page_token"] is None
    shown = cli("models", "show", "churn", "@champion", "--json").json()
    assert [a["status"] for a in shown["approvals"]] == ["pending", "approved"]
    assert shown["run"]["id"] == source.split("/")[1]
    cli("models", "delete", "churn", "1", "--yes")
    bad = cli("models", "alias", "churn", "latest", "2", ok=False)
    assert bad.code == 2 and "alias" in bad.err
    bad = cli("models", "register", "s3://x", "churn", ok=False)
    assert bad.code == 2 and "source" in bad.err
    cli("models", "delete", "churn", "--yes")
    assert cli("models", "list", "--json").json()["data"] == []
