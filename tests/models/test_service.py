"""The model registry service on SQLite and PostgreSQL (the ``services`` fixture runs both)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipyard.core.errors import AlreadyExists, Internal, InvalidArgument, NotFound
from shipyard.core.schemas import validate
from shipyard.models.format import load_model
from shipyard.models.schemas import (
    ApprovalStatus,
    ModelVersionCreate,
    RegisteredModelCreate,
    RegisteredModelUpdate,
    SearchModelVersions,
)
from shipyard.tracking.schemas import DatasetInput
from tests.models.conftest import FEATURES


def _register(services: Any, project: str, name: str, uri: str, **kw: Any) -> Any:
    return services.models.register_model(project, name, ModelVersionCreate(source=uri, **kw))


def test_registered_models_crud(services: Any, project: str) -> None:
    svc = services.models
    services.projects.ensure_project(project)
    created = svc.create_registered_model(
        project,
        RegisteredModelCreate(name="churn", description="who leaves", tags={"team": "risk"}),
        created_by="ada",
    )
    assert (created.name, created.description, created.tags) == (
        "churn",
        "who leaves",
        {"team": "risk"},
    )
    assert created.latest_version is None and created.created_by == "ada"
    with pytest.raises(AlreadyExists):
        svc.create_registered_model(project, RegisteredModelCreate(name="churn"))
    for name in ("fraud", "forecast", "zeta"):
        svc.create_registered_model(project, RegisteredModelCreate(name=name))
    page = svc.list_registered_models(project, page_size=3)
    assert [m.name for m in page.data] == ["churn", "forecast", "fraud"]
    assert page.count == 4 and page.next_page_token
    rest = svc.list_registered_models(project, page_size=3, page_token=page.next_page_token)
    assert [m.name for m in rest.data] == ["zeta"] and rest.next_page_token is None
    assert [m.name for m in svc.list_registered_models(project, name_like="F%").data] == [
        "forecast",
        "fraud",
    ]
    updated = svc.update_registered_model(project, "churn", RegisteredModelUpdate(description="x"))
    assert updated.description == "x"
    svc.set_model_tag(project, "churn", "owner", "bob")
    svc.delete_model_tag(project, "churn", "team")
    assert svc.get_registered_model(project, "churn").tags == {"owner": "bob"}
    with pytest.raises(NotFound):
        svc.delete_model_tag(project, "churn", "team")
    svc.delete_registered_model(project, "zeta")
    with pytest.raises(NotFound):
        svc.get_registered_model(project, "zeta")
    # Another project sees none of them.
    other = project + "-other"
    services.projects.ensure_project(other)
    assert svc.list_registered_models(other).data == []
    with pytest.raises(NotFound):
        svc.get_registered_model(other, "churn")


@pytest.mark.parametrize("bad", ["", "has space", "../up", "-lead", "a/b", "x" * 257])
def test_a_bad_model_name_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate(RegisteredModelCreate, name=bad)
    assert e.value.details["field"] == "name"


def test_versions_from_a_run_record_digest_flavor_signature(
    services: Any, project: str, log_model_in_run: Any
) -> None:
    svc = services.models
    first = log_model_in_run()
    v1 = _register(services, project, "churn", first.uri, description="first", tags={"k": "v"})
    assert (v1.name, v1.version, v1.run_id, v1.source_path) == ("churn", 1, first.run_id, "model")
    assert v1.flavor == "sklearn" and v1.approval_status == ApprovalStatus.pending
    assert [c["name"] for c in v1.signature["inputs"]] == ["a", "b", "c"]
    assert v1.tags == {"k": "v"} and v1.description == "first"
    manifest_digest = next(
        f.digest for f in svc.version_files(project, "churn", 1) if f.path == "shipyard-model.json"
    )
    assert v1.digest == manifest_digest
    assert {f.path for f in svc.version_files(project, "churn", 1)} == {
        "shipyard-model.json",
        "model.npz",
        "input_example.json",
    }
    v2 = _register(services, project, "churn", log_model_in_run().uri)
    assert v2.version == 2
    svc.delete_model_version(project, "churn", 2)
    # A deleted number is never handed out again.
    assert _register(services, project, "churn", log_model_in_run().uri).version == 3
    assert svc.get_registered_model(project, "churn").latest_version == 3
    with pytest.raises(NotFound):
        svc.get_model_version(project, "churn", 2)
    updated = svc.update_model_version(
        project, "churn", 1, validate(RegisteredModelUpdate, description="best so far")
    )
    assert updated.description == "best so far"
    svc.set_version_tag(project, "churn", 1, "stage", "canary")
    svc.delete_version_tag(project, "churn", 1, "k")
    assert svc.get_model_version(project, "churn", 1).tags == {"stage": "canary"}


def test_a_source_that_is_not_a_good_model_is_refused(
    services: Any, project: str, log_model_in_run: Any, tmp_path: Path
) -> None:
    svc = services.models
    logged = log_model_in_run()
    svc.create_registered_model(project, RegisteredModelCreate(name="churn"))
    # A folder without a manifest.
    (tmp_path / "notes.txt").write_text("hello")
    services.tracking.log_artifact(project, logged.run_id, tmp_path / "notes.txt", "notes/n.txt")
    with pytest.raises(InvalidArgument, match="log the model with sy.log_model") as e:
        svc.create_model_version(
            project, "churn", ModelVersionCreate(source=f"runs:/{logged.run_id}/notes")
        )
    assert e.value.details["field"] == "source"
    # A model file overwritten after the model was logged.
    (tmp_path / "model.npz").write_bytes(b"not the model")
    services.tracking.log_artifact(
        project, logged.run_id, tmp_path / "model.npz", "model/model.npz"
    )
    with pytest.raises(InvalidArgument, match="sha256 of model.npz does not match"):
        svc.create_model_version(project, "churn", ModelVersionCreate(source=logged.uri))
    for bad in ("models:/churn/1", "s3://bucket/model", "runs:/", "runs:/abc"):
        with pytest.raises(InvalidArgument):
            svc.create_model_version(project, "churn", ModelVersionCreate(source=bad))
    with pytest.raises(NotFound):
        svc.create_model_version(project, "churn", ModelVersionCreate(source="runs:/nope/model"))
    with pytest.raises(NotFound):
        svc.create_model_version(project, "missing", ModelVersionCreate(source=logged.uri))
    assert svc.get_registered_model(project, "churn").latest_version is None


def test_aliases_point_move_and_resolve(services: Any, project: str, log_model_in_run: Any) -> None:
    svc = services.models
    for _ in range(3):
        _register(services, project, "churn", log_model_in_run().uri)
    assert svc.set_alias(project, "churn", "champion", 1, actor="ada").aliases == ["champion"]
    svc.set_alias(project, "churn", "staging", 2)
    assert svc.get_version_by_alias(project, "churn", "champion").version == 1
    svc.set_alias(project, "churn", "champion", 3)  # moves
    assert svc.get_version_by_alias(project, "churn", "champion").version == 3
    assert svc.get_model_version(project, "churn", 1).aliases == []
    assert svc.get_registered_model(project, "churn").aliases == {"champion": 3, "staging": 2}
    svc.delete_alias(project, "churn", "staging")
    with pytest.raises(NotFound):
        svc.get_version_by_alias(project, "churn", "staging")
    with pytest.raises(NotFound):
        svc.set_alias(project, "churn", "champion", 9)
    for bad in ("latest", "3", "has space", ""):
        with pytest.raises(InvalidArgument) as e:
            svc.set_alias(project, "churn", bad, 1)
        assert e.value.details["field"] == "alias"
    # Deleting the version an alias points at removes the alias.
    svc.delete_model_version(project, "churn", 3)
    assert svc.get_registered_model(project, "churn").aliases == {}


def test_approval_history_records_who_when_and_why(
    services: Any, project: str, log_model_in_run: Any
) -> None:
    svc = services.models
    svc.create_registered_model(project, RegisteredModelCreate(name="churn"))
    svc.create_model_version(
        project, "churn", ModelVersionCreate(source=log_model_in_run().uri), created_by="ada"
    )
    v = svc.transition_approval(project, "churn", 1, "approved", actor="bob", comment="AUC 0.91")
    assert v.approval_status == ApprovalStatus.approved
    v = svc.transition_approval(
        project, "churn", 1, ApprovalStatus.rejected, actor="cy", comment="bias"
    )
    assert v.approval_status == ApprovalStatus.rejected
    history = svc.approval_history(project, "churn", 1)
    assert [(h.status, h.actor, h.comment) for h in history] == [
        (ApprovalStatus.pending, "ada", "registered"),
        (ApprovalStatus.approved, "bob", "AUC 0.91"),
        (ApprovalStatus.rejected, "cy", "bias"),
    ]
    assert history[0].created_at <= history[1].created_at <= history[2].created_at
    with pytest.raises(InvalidArgument) as e:
        svc.transition_approval(project, "churn", 1, "shipped")
    assert e.value.details["field"] == "status"


def test_search_versions_by_name_tags_alias_status(
    services: Any, project: str, log_model_in_run: Any
) -> None:
    svc = services.models
    logged = log_model_in_run()
    for name in ("churn", "churn", "churn", "fraud"):
        _register(
            services, project, name, logged.uri, tags={"team": "risk" if name == "churn" else "ops"}
        )
    svc.set_alias(project, "churn", "champion", 2)
    svc.transition_approval(project, "churn", 3, "approved")

    def find(filter_: str | None, **kw: Any) -> list[tuple[str, int]]:
        page = svc.search_model_versions(project, SearchModelVersions(filter=filter_, **kw))
        return [(v.name, v.version) for v in page.data]

    assert find(None) == [("churn", 3), ("churn", 2), ("churn", 1), ("fraud", 1)]
    assert find("name = 'fraud'") == [("fraud", 1)]
    assert find("alias = 'champion'") == [("churn", 2)]
    assert find("name = 'churn' AND alias != 'champion'") == [("churn", 3), ("churn", 1)]
    assert find("tags.team = 'ops'") == [("fraud", 1)]
    assert find("approval_status = 'approved'") == [("churn", 3)]
    assert find("status IN ('pending') AND version >= 2") == [("churn", 2)]
    assert find("name LIKE 'ch%' AND version < 3", order_by=["version ASC"]) == [
        ("churn", 1),
        ("churn", 2),
    ]
    assert find(f"run_id = '{logged.run_id}' AND flavor = 'sklearn'")[:1] == [("churn", 3)]
    first = svc.search_model_versions(project, SearchModelVersions(page_size=3))
    assert first.count == 4 and len(first.data) == 3
    second = svc.search_model_versions(
        project, SearchModelVersions(page_size=3, page_token=first.next_page_token)
    )
    assert [(v.name, v.version) for v in second.data] == [("fraud", 1)]
    assert second.next_page_token is None
    for bad in ("metrics.acc > 1", "nope = 1", "name = ", "version = 'x'"):
        with pytest.raises(InvalidArgument) as e:
            find(bad)
        assert e.value.details["field"] == "filter"
    with pytest.raises(InvalidArgument) as e:
        find(None, order_by=["size DESC"])
    assert e.value.details["field"] == "order_by[0]"


def test_lineage_reaches_the_run_and_its_datasets(
    services: Any, project: str, log_model_in_run: Any
) -> None:
    logged = log_model_in_run()
    services.tracking.log_inputs(
        project,
        logged.run_id,
        [DatasetInput(name="customers", digest="abc123", source="s3://data/customers.parquet")],
    )
    _register(services, project, "churn", logged.uri)
    lineage = services.models.get_lineage(project, "churn", 1)
    assert lineage.run is not None and lineage.run.id == logged.run_id
    assert [(d.name, d.digest) for d in lineage.datasets] == [("customers", "abc123")]
    assert [a.status for a in lineage.approvals] == [ApprovalStatus.pending]
    assert lineage.run_missing is False


def test_resolve_every_uri_shape_to_a_verified_cached_folder(
    services: Any, project: str, log_model_in_run: Any, small_model: Any
) -> None:
    svc = services.models
    logged = log_model_in_run()
    _register(services, project, "churn", logged.uri)
    _register(services, project, "churn", log_model_in_run().uri)
    svc.set_alias(project, "churn", "champion", 1)
    by_alias = svc.resolve(project, "models:/churn@champion")
    assert (by_alias.name, by_alias.version) == ("churn", 1)
    assert by_alias.local_path == svc.cache_dir / by_alias.digest
    assert svc.resolve(project, "models:/churn/1").local_path == by_alias.local_path
    assert svc.resolve(project, "models:/churn/latest").version == 2
    by_run = svc.resolve(project, logged.uri)
    assert by_run.version is None and by_run.digest == by_alias.digest
    loaded = load_model(by_alias.local_path, expected_digest=by_alias.digest)
    np.testing.assert_array_equal(loaded.predict(FEATURES), small_model.predict(FEATURES))
    for bad in ("models:/churn", "models:/churn/0", "models:/churn/x", "file:///etc", "runs:/id"):
        with pytest.raises(InvalidArgument) as e:
            svc.resolve(project, bad)
        assert e.value.details["field"] == "uri"
    with pytest.raises(NotFound):
        svc.resolve(project, "models:/churn@nobody")


def test_a_tampered_blob_is_refused_when_fetched(
    services: Any, project: str, log_model_in_run: Any
) -> None:
    svc = services.models
    _register(services, project, "churn", log_model_in_run().uri)
    svc.cache_dir = svc.cache_dir.parent / f"fresh-{project}"  # nothing cached yet
    files = {f.path: f for f in svc.version_files(project, "churn", 1)}
    digest = files["model.npz"].digest
    blob = Path(services.settings.artifact_root, "blobs", digest[:2], digest[2:4], digest)
    original = blob.read_bytes()  # shared by every test that saved the same model: restore it
    mode = blob.stat().st_mode
    data = bytearray(original)
    data[10] ^= 0xFF
    blob.chmod(0o644)
    try:
        blob.write_bytes(bytes(data))
        with pytest.raises(Internal, match="corrupt"):  # the store refuses to hand out bad bytes
            svc.resolve(project, "models:/churn/1")
    finally:
        blob.write_bytes(original)
        blob.chmod(mode)
    assert not (svc.cache_dir / files["shipyard-model.json"].digest).exists()


def test_purging_the_source_run_keeps_the_version_loadable(
    services: Any, project: str, log_model_in_run: Any, small_model: Any
) -> None:
    logged = log_model_in_run()
    _register(services, project, "churn", logged.uri)
    services.tracking.delete_run(project, logged.run_id)
    report = services.tracking.purge(project, run_ids=[logged.run_id])
    assert report.runs_purged == 1
    assert report.blobs_deleted == 0  # the version still lists every one of the run's files
    services.models.cache_dir = services.models.cache_dir.parent / f"after-purge-{project}"
    resolved = services.models.resolve(project, "models:/churn/1")
    loaded = load_model(resolved.local_path, expected_digest=resolved.digest)
    np.testing.assert_array_equal(loaded.predict(FEATURES), small_model.predict(FEATURES))
    lineage = services.models.get_lineage(project, "churn", 1)
    assert lineage.run is None and lineage.run_missing is True
    # With the model gone too, a purge frees what nothing refers to any more.
    services.models.delete_registered_model(project, "churn")
    other = log_model_in_run()
    services.tracking.delete_run(project, other.run_id)
    assert services.tracking.purge(project, run_ids=[other.run_id]).runs_purged == 1


def test_a_manifest_listing_a_file_the_run_lacks_is_refused(
    services: Any, project: str, log_model_in_run: Any, tmp_path: Path
) -> None:
    logged = log_model_in_run()
    folder = tmp_path / "hand"
    folder.mkdir()
    manifest = {
        "format_version": 1,
        "flavor": "sklearn",
        "model_file": "model.skops",
        "files": {"model.skops": "0" * 64},
        "signature": None,
    }
    (folder / "shipyard-model.json").write_text(json.dumps(manifest))
    services.tracking.log_artifact(project, logged.run_id, folder, "hand")
    with pytest.raises(InvalidArgument, match="model.skops is listed in the manifest"):
        _register(services, project, "churn", f"runs:/{logged.run_id}/hand")
