"""The model SDK (``sy.log_model``, ``sy.register_model``, ``sy.load_model`` and ``Client``'s
registry methods), run on LocalBackend and HttpBackend, each on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipyard.core.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from tests.models.conftest import FEATURES


@pytest.fixture(autouse=True)
def _client_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The HTTP SDK caches fetched models under SHIPYARD_HOME, as a user's machine would.
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "client-home"))


class Doubler:
    def predict(self, df: Any) -> Any:
        return np.asarray(df["a"]) * 2


def test_log_register_alias_load(sy: Any, small_model: Any) -> None:
    with sy.start_run(experiment="churn") as run:
        logged = sy.log_model(small_model, "model", input_example=FEATURES[:5])
    assert logged.uri == f"runs:/{run.id}/model"
    assert logged.flavor == "sklearn"
    assert [c["name"] for c in logged.signature["inputs"]] == ["a", "b", "c"]
    files = {a.path for a in sy.get_client().list_artifacts(run.id, "model", recursive=True).files}
    assert files == {"model/shipyard-model.json", "model/model.npz", "model/input_example.json"}

    v1 = sy.register_model(logged.uri, "churn")
    assert (v1.name, v1.version, v1.digest) == ("churn", 1, logged.digest)
    client = sy.get_client()
    client.set_alias("churn", "champion", 1)
    expected = small_model.predict(FEATURES)
    for uri in ("models:/churn/1", "models:/churn@champion", "models:/churn/latest", logged.uri):
        np.testing.assert_array_equal(sy.load_model(uri).predict(FEATURES), expected)
    # A version's approval and lineage.
    client.approve("churn", 1, comment="good AUC")
    assert client.get_model_version("churn", "1").approval_status == "approved"
    history = client.get_approval_history("churn", 1)
    assert [h.status for h in history] == ["pending", "approved"]
    assert history[-1].comment == "good AUC"
    lineage = client.get_model_lineage("churn", 1)
    assert lineage.run is not None and lineage.run.id == run.id


def test_log_model_registers_in_one_call(sy: Any, small_model: Any) -> None:
    with sy.start_run(experiment="churn"):
        first = sy.log_model(small_model, input_example=FEATURES[:2], registered_model_name="fraud")
        second = sy.log_model(
            small_model, "model-b", input_example=FEATURES[:2], registered_model_name="fraud"
        )
    assert first.registered_version is not None and first.registered_version.version == 1
    assert second.registered_version is not None and second.registered_version.version == 2
    client = sy.get_client()
    assert client.get_registered_model("fraud").latest_version == 2
    versions = client.list_model_versions("fraud")
    assert [v.version for v in versions.data] == [2, 1]


def test_client_registry_calls(client: Any, sy: Any, small_model: Any) -> None:
    with sy.start_run(experiment="x"):
        logged = sy.log_model(small_model, input_example=FEATURES[:2])
    m = client.create_registered_model("churn", description="who leaves", tags={"team": "risk"})
    assert m.tags == {"team": "risk"}
    with pytest.raises(AlreadyExists):
        client.create_registered_model("churn")
    v = client.create_model_version("churn", logged.uri, description="d", tags={"k": "v"})
    assert v.version == 1 and v.tags == {"k": "v"}
    client.create_model_version("churn", logged.uri)
    client.set_alias("churn", "staging", 2)
    assert client.get_model_version_by_alias("churn", "staging").version == 2
    client.reject("churn", 2, comment="drift")
    found = client.search_model_versions("name = 'churn' AND approval_status = 'rejected'")
    assert [x.version for x in found.data] == [2]
    found = client.search_model_versions("tags.k = 'v'")
    assert [x.version for x in found.data] == [1]
    page = client.search_model_versions("name = 'churn'", page_size=1)
    assert page.count == 2 and page.next_page_token is not None
    client.set_registered_model_tag("churn", "owner", "ada")
    client.update_registered_model("churn", "new words")
    got = client.get_registered_model("churn")
    assert (got.description, got.tags["owner"], got.aliases) == ("new words", "ada", {"staging": 2})
    client.update_model_version("churn", 1, "first")
    client.set_model_version_tag("churn", 1, "a", "b")
    client.delete_model_version_tag("churn", 1, "k")
    assert client.get_model_version("churn", 1).tags == {"a": "b"}
    client.delete_alias("churn", "staging")
    with pytest.raises(NotFound):
        client.get_model_version_by_alias("churn", "staging")
    assert [m.name for m in client.list_registered_models().data] == ["churn"]
    client.delete_model_version("churn", 1)
    with pytest.raises(NotFound):
        client.get_model_version("churn", 1)
    client.delete_registered_model("churn")
    with pytest.raises(NotFound):
        client.get_registered_model("churn")


def test_errors_are_the_same_class_on_both_backends(client: Any, sy: Any, small_model: Any) -> None:
    with pytest.raises(NotFound):
        client.load_model("models:/nothing/1")
    with pytest.raises(InvalidArgument) as e:
        client.load_model("models:/nothing")
    assert e.value.details["field"] == "uri"
    with pytest.raises(InvalidArgument) as e:
        client.create_registered_model("bad name")
    assert e.value.details["field"] == "name"
    with sy.start_run(experiment="x"):
        logged = sy.log_model(small_model, input_example=FEATURES[:2])
    client.register_model(logged.uri, "churn")
    with pytest.raises(InvalidArgument) as e:
        client.set_alias("churn", "latest", 1)
    assert e.value.details["field"] == "alias"
    with pytest.raises(InvalidArgument) as e:
        client.transition_approval("churn", 1, "shipped")
    assert e.value.details["field"] == "status"
    with pytest.raises(InvalidArgument) as e:
        client.get_model_version("churn", "one")
    assert e.value.details["field"] == "version"
    with pytest.raises(InvalidArgument) as e:
        client.search_model_versions("metrics.acc > 1")
    assert e.value.details["field"] == "filter"


def test_a_pickled_model_needs_trust_and_a_tampered_cache_is_refused(
    sy: Any, small_model: Any
) -> None:
    with sy.start_run(experiment="x"):
        logged = sy.log_model(Doubler(), input_example=FEATURES[:2], registered_model_name="dbl")
    assert logged.flavor == "python_function"
    with pytest.raises(PermissionDenied, match="trust_code"):
        sy.load_model("models:/dbl/1")
    loaded = sy.load_model("models:/dbl/1", trust_code=True)
    np.testing.assert_allclose(loaded.predict(FEATURES), FEATURES["a"].to_numpy() * 2)
    # Someone edits the cached pickle: it is refused even with trust, before it is unpickled.
    folder = sy.get_client().resolve_model("models:/dbl/1").local_path
    pkl = folder / "model.pkl"
    pkl.chmod(0o644)
    pkl.write_bytes(pkl.read_bytes() + b"\x00")
    with pytest.raises(PermissionDenied, match="sha256 of model.pkl"):
        sy.load_model("models:/dbl/1", trust_code=True)


def test_load_model_from_a_local_folder(sy: Any, small_model: Any, tmp_path: Path) -> None:
    # sy.save_model writes the folder a job leaves in SHIPYARD_MODEL_DIR.
    manifest = sy.save_model(small_model, tmp_path / "m", input_example=FEATURES[:2])
    assert manifest.flavor == "sklearn"
    loaded = sy.load_model(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict(FEATURES), small_model.predict(FEATURES))
