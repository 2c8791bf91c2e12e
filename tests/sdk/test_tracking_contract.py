"""The tracking contract, through the SDK, written once and run four ways.

Every test runs on ``LocalBackend`` (in-process) and ``HttpBackend`` (a real uvicorn server),
each on SQLite and PostgreSQL (the ``backend`` and ``db_url`` fixtures of ``tests/conftest.py``).
An error is asserted by its exact class and the field it names, never by its wording, so a
user catches the same exception whichever backend runs their code.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from shipyard.core.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ShipyardError,
)
from shipyard.sdk.client import Client
from shipyard.tracking.schemas import Lifecycle, RunStatus

# -- helpers ----------------------------------------------------------------------------------


def _fields(err: ShipyardError) -> list[str]:
    d = err.details
    return [str(d.get("field"))] + [str(e.get("field")) for e in d.get("errors", [])]


@contextmanager
def raises(cls: type[ShipyardError], field: str | None = None) -> Iterator[Any]:
    """Expect exactly ``cls`` (not a subclass, not a sibling), naming ``field`` when given."""
    with pytest.raises(ShipyardError) as info:
        yield info
    err = info.value
    assert type(err) is cls, f"expected {cls.__name__}, got {type(err).__name__}: {err}"
    if field is not None:
        # FastAPI names a query parameter with its place ("query.page_size").
        named = _fields(err)
        assert field in named or f"query.{field}" in named, f"{field!r} not named in {err.details}"
        if cls is InvalidArgument:  # a bad input's message says which field, for a person
            assert field in err.message, err.message


def _blob_paths(services: Any, digest: str) -> list[Path]:
    """Where the artifact store keeps ``digest`` on disk (the server shares ``services``)."""
    return list(Path(services.store.root, "blobs").rglob(digest))


def _random_bytes(n: int = 4096) -> bytes:
    # Unique content per test: the artifact root is shared by every test of the session.
    return os.urandom(n)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder to log: ``data/a.txt``, ``data/sub/b.bin``, ``data/sub/deeper/c.json``,
    and a single file ``model.bin``."""
    src = tmp_path / "src"
    (src / "data" / "sub" / "deeper").mkdir(parents=True)
    (src / "data" / "a.txt").write_text("alpha\n")
    (src / "data" / "sub" / "b.bin").write_bytes(_random_bytes(10_000))
    (src / "data" / "sub" / "deeper" / "c.json").write_text('{"c": 3}')
    (src / "model.bin").write_bytes(_random_bytes(2048))
    return src


# -- projects ---------------------------------------------------------------------------------


def test_a_project_is_made_on_first_use_and_scopes_everything(backend, project: str) -> None:
    a = Client(project=project, backend=backend)
    exp = a.create_experiment("shared-name")
    assert exp.project == project
    assert backend.ensure_project(project).name == project  # idempotent

    # The same experiment name in another project is another experiment.
    b = Client(project=f"{project}-b", backend=backend)
    other = b.create_experiment("shared-name")
    assert other.id != exp.id
    with raises(NotFound):
        b.get_experiment(exp.id)


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "-leading-dash"])
def test_a_bad_project_name_is_refused_naming_the_field(backend, bad: str) -> None:
    with raises(InvalidArgument, "name"):
        Client(project=bad, backend=backend).create_experiment("e")


# -- experiments ------------------------------------------------------------------------------


def test_experiment_create_get_by_id_and_name(client: Client) -> None:
    exp = client.create_experiment("churn", description="predict churn", tags={"team": "ml"})
    assert exp.name == "churn"
    assert exp.description == "predict churn"
    assert exp.tags == {"team": "ml"}
    assert exp.lifecycle == Lifecycle.active
    assert exp.deleted_at is None
    assert client.get_experiment(exp.id) == exp
    assert client.get_experiment("churn") == exp
    with raises(NotFound):
        client.get_experiment("no-such-experiment")


def test_experiment_rename(client: Client) -> None:
    exp = client.create_experiment("old-name")
    client.create_experiment("taken")
    renamed = client.rename_experiment(exp.id, "new-name")
    assert (renamed.id, renamed.name) == (exp.id, "new-name")
    assert client.get_experiment("new-name").id == exp.id
    with raises(NotFound):
        client.get_experiment("old-name")
    with raises(AlreadyExists, "name"):
        client.rename_experiment("new-name", "taken")
    with raises(InvalidArgument, "name"):
        client.rename_experiment("new-name", "")
    assert client.get_experiment(exp.id).name == "new-name"


@pytest.mark.parametrize("bad", ["", "x" * 257])
def test_experiment_name_empty_or_too_long_is_refused(client: Client, bad: str) -> None:
    with raises(InvalidArgument, "name"):
        client.create_experiment(bad)
    assert client.list_experiments(lifecycle="all").count == 0


def test_experiment_duplicate_name_already_exists(client: Client) -> None:
    exp = client.create_experiment("dup")
    with raises(AlreadyExists, "name"):
        client.create_experiment("dup")
    # A deleted experiment still holds its name until it is purged.
    client.delete_experiment(exp.id)
    with raises(AlreadyExists, "name"):
        client.create_experiment("dup")
    assert client.list_experiments(lifecycle="all").count == 1


def test_experiment_soft_delete_and_restore_brings_back_its_runs(client: Client) -> None:
    exp = client.create_experiment("exp")
    backend, p = client.backend, client.project
    from shipyard.tracking.schemas import RunCreate

    r1, r2, alone = (backend.create_run(p, RunCreate(experiment_id=exp.id)) for _ in range(3))
    client.delete_run(alone.id)

    deleted = client.delete_experiment(exp.id)
    assert deleted.lifecycle == Lifecycle.deleted
    assert deleted.deleted_at is not None
    assert {client.get_run(r.id).lifecycle for r in (r1, r2, alone)} == {Lifecycle.deleted}
    assert client.list_experiments().count == 0
    assert [e.id for e in client.list_experiments(lifecycle="deleted").data] == [exp.id]
    # A run cannot be started in a deleted experiment.
    with raises(InvalidArgument, "experiment_id"):
        backend.create_run(p, RunCreate(experiment_id=exp.id))

    restored = client.restore_experiment(exp.id)
    assert restored.lifecycle == Lifecycle.active
    assert restored.deleted_at is None
    assert client.get_run(r1.id).lifecycle == Lifecycle.active
    assert client.get_run(r2.id).lifecycle == Lifecycle.active
    assert client.get_run(alone.id).lifecycle == Lifecycle.deleted  # deleted on its own before
    assert client.list_experiments(lifecycle="deleted").count == 0


def test_list_experiments_filtered_by_name_and_lifecycle(client: Client) -> None:
    for name in ["alpha-1", "alpha-2", "alpha-3", "beta-1", "beta-2"]:
        client.create_experiment(name)
    client.delete_experiment("alpha-2")

    def names(**kw: Any) -> tuple[set[str], int | None]:
        page = client.list_experiments(**kw)
        return {e.name for e in page.data}, page.count

    assert names() == ({"alpha-1", "alpha-3", "beta-1", "beta-2"}, 4)
    assert names(name_like="alpha%") == ({"alpha-1", "alpha-3"}, 2)
    assert names(name_like="ALPHA%") == ({"alpha-1", "alpha-3"}, 2)
    assert names(name_like="%-2") == ({"beta-2"}, 1)
    assert names(lifecycle="deleted") == ({"alpha-2"}, 1)
    assert names(lifecycle="all", name_like="alpha%") == ({"alpha-1", "alpha-2", "alpha-3"}, 3)
    assert names(name_like="gamma%") == (set(), 0)


def test_list_experiments_paginates_every_experiment_exactly_once(client: Client) -> None:
    made = {client.create_experiment(f"e{i:02d}").id for i in range(7)}
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = client.list_experiments(page_size=3, page_token=token)
        assert page.count == 7
        assert len(page.data) <= 3
        seen += [e.id for e in page.data]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert pages == 3
    assert len(seen) == 7 and set(seen) == made
    # Newest first.
    assert seen == sorted(made, reverse=True)
    with raises(InvalidArgument, "page_token"):
        client.list_experiments(page_token="not-a-token")
    with raises(InvalidArgument, "page_size"):
        client.list_experiments(page_size=0)


# -- runs -------------------------------------------------------------------------------------


def test_run_status_running_then_finished(sy, client: Client) -> None:
    with sy.start_run(experiment="exp") as run:
        assert sy.active_run() is run
        during = client.get_run(run.id)
        assert during.status == RunStatus.RUNNING
        assert during.end_time is None
    after = client.get_run(run.id)
    assert after.status == RunStatus.FINISHED
    assert after.end_time is not None and after.end_time >= after.start_time
    assert after.experiment_id == client.get_experiment("exp").id
    assert sy.active_run() is None


def test_a_block_that_raises_leaves_the_run_failed(sy, client: Client) -> None:
    with pytest.raises(ZeroDivisionError), sy.start_run() as run:
        sy.log_metric("before", 1.0)
        1 / 0  # noqa: B018
    r = client.get_run(run.id)
    assert r.status == RunStatus.FAILED
    assert r.end_time is not None
    assert r.metrics["before"].value == 1.0  # what was logged before the error is kept
    assert sy.active_run() is None


def test_keyboard_interrupt_leaves_the_run_killed(sy, client: Client) -> None:
    with pytest.raises(KeyboardInterrupt), sy.start_run() as run:
        raise KeyboardInterrupt
    assert client.get_run(run.id).status == RunStatus.KILLED
    assert sy.active_run() is None


def test_nested_runs_have_their_parent(sy, client: Client) -> None:
    with sy.start_run(experiment="hpo") as parent:
        with sy.start_run(nested=True, name="trial-0") as child:
            assert sy.active_run() is child
        assert sy.active_run() is parent
    c = client.get_run(child.id)
    assert c.parent_run_id == parent.id
    assert c.experiment_id == parent.experiment_id
    assert c.name == "trial-0"
    assert client.get_run(parent.id).parent_run_id is None
    assert client.get_run(child.id).status == RunStatus.FINISHED


def test_start_run_looks_its_experiment_up_once(sy, client: Client, monkeypatch) -> None:
    with sy.start_run(experiment="often"):
        pass
    looked_up: list[str] = []
    real = client.backend.get_experiment_by_name

    def counting(project: str, name: str) -> Any:
        looked_up.append(name)
        return real(project, name)

    monkeypatch.setattr(client.backend, "get_experiment_by_name", counting)
    runs = []
    for _ in range(3):
        with sy.start_run(experiment="often") as run:
            runs.append(run.id)
    assert looked_up == []
    exp = client.get_experiment("often")
    assert {client.get_run(r).experiment_id for r in runs} == {exp.id}


def test_start_run_makes_its_experiment_again_after_a_purge_elsewhere(sy, client: Client) -> None:
    with sy.start_run(experiment="again"):
        pass
    gone = client.get_experiment("again")
    # Another client (another process, say) deletes and purges it: the id this one
    # remembers for the name is stale, and the next run makes the experiment anew.
    elsewhere = Client(project=client.project, backend=client.backend)
    elsewhere.delete_experiment(gone.id)
    elsewhere.purge(experiment_ids=[gone.id])
    with sy.start_run(experiment="again") as run:
        pass
    made = client.get_experiment("again")
    assert made.id != gone.id
    assert client.get_run(run.id).experiment_id == made.id


def test_start_run_in_an_experiment_deleted_elsewhere_is_refused(sy, client: Client) -> None:
    with sy.start_run(experiment="soon-deleted"):
        pass
    Client(project=client.project, backend=client.backend).delete_experiment("soon-deleted")
    with raises(InvalidArgument, "experiment_id"):
        sy.start_run(experiment="soon-deleted")
    assert sy.active_run() is None
    client.restore_experiment("soon-deleted")
    with sy.start_run(experiment="soon-deleted") as run:
        pass
    assert client.get_run(run.id).status == RunStatus.FINISHED


def test_a_renamed_experiment_is_found_by_its_new_name(sy, client: Client) -> None:
    with sy.start_run(experiment="before"):
        pass
    exp = client.rename_experiment("before", "after")
    with sy.start_run(experiment="after") as moved:
        pass
    with sy.start_run(experiment="before") as fresh:  # the client renamed it: a new one
        pass
    assert client.get_run(moved.id).experiment_id == exp.id
    assert client.get_run(fresh.id).experiment_id == client.get_experiment("before").id != exp.id


def test_a_second_top_level_run_while_one_is_active_is_refused(sy, client: Client) -> None:
    with sy.start_run() as run:
        with raises(InvalidArgument, "nested"):
            sy.start_run()
        assert sy.active_run() is run
    assert client.get_run(run.id).status == RunStatus.FINISHED
    assert len(client.search_runs().data) == 1  # the refused run was never created


def test_run_names_given_and_generated(sy, client: Client) -> None:
    with sy.start_run(name="baseline") as given:
        pass
    with sy.start_run() as generated:
        pass
    assert client.get_run(given.id).name == "baseline"
    name = client.get_run(generated.id).name
    assert name == generated.name
    assert re.fullmatch(r"[a-z]+-[a-z]+-[0-9a-z]{3}", name), name
    with raises(InvalidArgument, "name"):
        sy.start_run(name="x" * 257)


def test_tags_set_and_deleted(sy, client: Client) -> None:
    with sy.start_run(tags={"origin": "test", "n": 1}) as run:
        sy.set_tag("stage", "train")
        sy.set_tags({"team": "ml", "version": 2})
        sy.set_tag("stage", "eval")  # a tag can change
        sy.delete_tag("team")
        with raises(NotFound, "key"):
            sy.delete_tag("never-set")
    assert client.get_run(run.id).tags == {
        "origin": "test",
        "n": "1",
        "stage": "eval",
        "version": "2",
    }
    client.delete_tag(run.id, "origin")
    assert "origin" not in client.get_run(run.id).tags
    with raises(NotFound, "key"):
        client.delete_tag(run.id, "origin")


def test_a_run_in_another_project_is_not_found(sy, client: Client, backend, project: str) -> None:
    with sy.start_run() as run:
        sy.log_metric("m", 1.0)
    other = Client(project=f"{project}-other", backend=backend)
    with raises(NotFound):
        other.get_run(run.id)
    with raises(NotFound):
        other.get_metric_history(run.id, "m")
    with raises(NotFound):
        other.set_tag(run.id, "k", "v")
    with raises(NotFound):
        other.list_artifacts(run.id)
    with raises(NotFound):
        other.delete_run(run.id)
    with raises(NotFound):
        other.compare_runs([run.id])
    with raises(NotFound):
        client.get_run("0000000000000000")
    assert client.get_run(run.id).lifecycle == Lifecycle.active
    assert "k" not in client.get_run(run.id).tags


# -- params -----------------------------------------------------------------------------------


def test_params_are_strings_logged_once(sy, client: Client) -> None:
    with sy.start_run() as run:
        sy.log_param("lr", 0.1)
        sy.log_params({"model": "lr", "layers": 3, "dropout": None})
        sy.log_param("lr", 0.1)  # the same value again is fine
        sy.log_param("layers", "3")  # the same string
        with raises(InvalidArgument, "params.lr") as info:
            sy.log_param("lr", 0.2)
        assert info.value.details.get("logged") == "0.1"
    params = client.get_run(run.id).params
    assert params == {"lr": "0.1", "model": "lr", "layers": "3", "dropout": "None"}
    assert all(isinstance(v, str) for v in params.values())


def test_a_refused_param_batch_stores_nothing(sy, client: Client) -> None:
    with sy.start_run() as run:
        sy.log_param("a", 1)
        with raises(InvalidArgument, "params.a"):
            sy.log_params({"b": 2, "a": 9})
    assert client.get_run(run.id).params == {"a": "1"}


# -- metrics ----------------------------------------------------------------------------------


def test_metric_key_value_step_timestamp(sy, client: Client) -> None:
    with sy.start_run() as run:
        sy.log_metric("loss", 0.5, step=3, timestamp=1_700_000_000.25)
        sy.log_metric("loss", 0.25, step=4, timestamp=1_700_000_001.5)
    h = client.get_metric_history(run.id, "loss")
    assert (h.run_id, h.key) == (run.id, "loss")
    assert h.steps == [3, 4]
    assert h.values == [0.5, 0.25]
    assert h.timestamps == [1_700_000_000_250, 1_700_000_001_500]
    latest = client.get_run(run.id).metrics["loss"]
    assert (latest.value, latest.step, latest.timestamp) == (0.25, 4, 1_700_000_001_500)


def test_metric_default_step_and_timestamp(sy, client: Client) -> None:
    before = int(time.time() * 1000)
    with sy.start_run() as run:
        sy.log_metric("acc", 0.9)
    after = int(time.time() * 1000)
    h = client.get_metric_history(run.id, "acc")
    assert h.steps == [0]
    assert before <= h.timestamps[0] <= after


def test_metric_history_comes_back_in_step_order(sy, client: Client) -> None:
    with sy.start_run() as run:
        for step in [5, 1, 9, 3, 7]:
            sy.log_metric("loss", float(step), step=step)
    h = client.get_metric_history(run.id, "loss")
    assert h.steps == [1, 3, 5, 7, 9]
    assert h.values == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert client.get_metric_history(run.id, "never-logged").steps == []


def test_latest_metric_is_highest_step_then_latest_timestamp(sy, client: Client) -> None:
    with sy.start_run() as run:
        sy.log_metric("loss", 0.1, step=10, timestamp=100.0)
        sy.flush()
        sy.log_metric("loss", 0.9, step=2, timestamp=200.0)  # logged later, but an older step
        sy.log_metric("acc", 0.5, step=1, timestamp=300.0)
        sy.flush()
        sy.log_metric("acc", 0.7, step=1, timestamp=250.0)  # same step, earlier timestamp
        sy.log_metric("acc", 0.6, step=1, timestamp=400.0)  # same step, latest timestamp
    m = client.get_run(run.id).metrics
    assert (m["loss"].value, m["loss"].step) == (0.1, 10)
    assert (m["acc"].value, m["acc"].step, m["acc"].timestamp) == (0.6, 1, 400_000)
    assert len(client.get_metric_history(run.id, "acc").values) == 3


def test_many_metric_keys(sy, client: Client) -> None:
    keys = [f"layer_{i}/grad_norm" for i in range(60)]
    with sy.start_run() as run:
        for step in range(3):
            for i, k in enumerate(keys):
                sy.log_metric(k, i + step / 10, step=step)
    r = client.get_run(run.id)
    assert set(r.metrics) == set(keys)
    assert all(r.metrics[k].step == 2 for k in keys)
    assert r.metrics["layer_7/grad_norm"].value == pytest.approx(7.2)
    assert client.get_metric_history(run.id, "layer_59/grad_norm").steps == [0, 1, 2]


def test_100k_points_through_log_metric_are_all_stored_after_flush(sy, client: Client) -> None:
    n = 100_000
    with sy.start_run() as run:
        for step in range(n):
            sy.log_metric("loss", 1.0 / (step + 1), step=step)
        sy.flush()
        h = client.get_metric_history(run.id, "loss")
        assert len(h.steps) == n
        assert h.steps == list(range(n))
        assert h.values[-1] == pytest.approx(1.0 / n)
        assert client.get_run(run.id).metrics["loss"].step == n - 1


def test_log_metrics_dict(sy, client: Client) -> None:
    with sy.start_run() as run:
        sy.log_metrics({"precision": 0.8, "recall": 0.6}, step=5)
        sy.log_metrics({"precision": 0.85, "recall": 0.65}, step=6)
    m = client.get_run(run.id).metrics
    assert (m["precision"].value, m["precision"].step) == (0.85, 6)
    assert (m["recall"].value, m["recall"].step) == (0.65, 6)
    # One call, one timestamp for every key.
    assert m["precision"].timestamp == m["recall"].timestamp
    assert client.get_metric_history(run.id, "recall").values == [0.6, 0.65]


def test_a_bad_metric_value_raises_at_the_call_site(sy, client: Client) -> None:
    with sy.start_run() as run:
        with raises(InvalidArgument, "metrics.acc"):
            sy.log_metric("acc", "high")
        with raises(InvalidArgument, "metrics.f1"):
            sy.log_metrics({"ok": 1.0, "f1": "bad"})
        with raises(InvalidArgument, "step"):
            sy.log_metric("acc", 1.0, step=1.5)  # type: ignore[arg-type]
        sy.log_metric("acc", 0.5)
    r = client.get_run(run.id)
    assert r.status == RunStatus.FINISHED
    assert client.get_metric_history(run.id, "acc").values == [0.5]
    assert "ok" not in r.metrics  # a refused call logs nothing of it
    assert "f1" not in r.metrics


def test_nan_is_stored_and_returned_as_none(sy, client: Client) -> None:
    with sy.start_run() as run:
        sy.log_metric("loss", 1.0, step=0)
        sy.log_metric("loss", float("nan"), step=1)
    assert client.get_metric_history(run.id, "loss").values == [1.0, None]
    assert client.get_run(run.id).metrics["loss"].value is None


def test_metrics_for_a_deleted_run_fail_loudly_without_losing_other_runs(
    sy, client: Client
) -> None:
    parent = sy.start_run(experiment="exp")
    child = sy.start_run(nested=True)
    parent.log_metric("m", 1.0)
    child.log_metric("m", 2.0)
    client.delete_run(parent.id)  # from elsewhere, while metrics wait in the buffer
    with raises(InvalidArgument, "run_id"):
        sy.flush()
    assert client.get_metric_history(child.id, "m").values == [2.0]
    # The refused rows do not poison later flushes.
    child.log_metric("m", 3.0, step=1)
    sy.flush()
    child.end()
    assert client.get_metric_history(child.id, "m").values == [2.0, 3.0]
    assert client.get_run(child.id).status == RunStatus.FINISHED
    parent.end()
    assert client.get_run(parent.id).status == RunStatus.FINISHED


def test_init_again_stops_the_previous_metric_thread(sy, client: Client) -> None:
    import threading

    def metric_threads() -> int:
        return sum(t.name == "shipyard-metrics" and t.is_alive() for t in threading.enumerate())

    with sy.start_run() as run:
        sy.log_metric("m", 1.0)
    before = metric_threads()
    assert before >= 1
    for _ in range(3):
        sy.init(client=client)
        with sy.start_run():
            sy.log_metric("m", 1.0)
    deadline = time.monotonic() + 5
    while metric_threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric_threads() <= before
    assert client.get_metric_history(run.id, "m").values == [1.0]


# -- artifacts --------------------------------------------------------------------------------


def test_log_a_file_a_folder_and_log_artifacts_then_list(sy, client: Client, files: Path) -> None:
    with sy.start_run() as run:
        sy.log_artifact(files / "model.bin")
        sy.log_artifact(files / "data")
        sy.log_artifacts(files / "data", "copy")
        sy.log_artifact(files / "data" / "a.txt", "notes/readme.txt")

    top = client.list_artifacts(run.id)
    assert top.root == ""
    assert {(a.path, a.is_dir) for a in top.files} == {
        ("model.bin", False),
        ("data", True),
        ("copy", True),
        ("notes", True),
    }
    model = next(a for a in top.files if a.path == "model.bin")
    content = (files / "model.bin").read_bytes()
    assert model.size == len(content)
    assert model.digest == hashlib.sha256(content).hexdigest()

    sub = client.list_artifacts(run.id, "data")
    assert sub.root == "data"
    assert {(a.path, a.is_dir) for a in sub.files} == {("data/a.txt", False), ("data/sub", True)}
    assert {a.path for a in client.list_artifacts(run.id, "data/sub").files} == {
        "data/sub/b.bin",
        "data/sub/deeper",
    }

    everything = client.list_artifacts(run.id, recursive=True)
    assert {a.path for a in everything.files} == {
        "model.bin",
        "data/a.txt",
        "data/sub/b.bin",
        "data/sub/deeper/c.json",
        "copy/a.txt",
        "copy/sub/b.bin",
        "copy/sub/deeper/c.json",
        "notes/readme.txt",
    }
    assert all(not a.is_dir for a in everything.files)
    assert {a.path for a in client.list_artifacts(run.id, "copy", recursive=True).files} == {
        "copy/a.txt",
        "copy/sub/b.bin",
        "copy/sub/deeper/c.json",
    }
    with raises(NotFound, "path"):
        client.list_artifacts(run.id, "no-such-folder")


def test_download_a_file_and_a_folder_byte_for_byte(
    sy, client: Client, files: Path, tmp_path: Path
) -> None:
    with sy.start_run() as run:
        sy.log_artifact(files / "model.bin")
        sy.log_artifact(files / "data")

    one = client.download_artifacts(run.id, "model.bin", tmp_path / "d1")
    assert one == (tmp_path / "d1" / "model.bin").resolve()
    assert one.read_bytes() == (files / "model.bin").read_bytes()

    folder = client.download_artifacts(run.id, "data/sub", tmp_path / "d2")
    assert folder == (tmp_path / "d2" / "data" / "sub").resolve()
    assert _tree(folder) == _tree(files / "data" / "sub")

    everything = client.download_artifacts(run.id, None, tmp_path / "d3")
    assert _tree(everything) == _tree(files)
    with raises(NotFound, "path"):
        client.download_artifacts(run.id, "missing.txt", tmp_path / "d4")


def test_same_bytes_in_two_runs_are_stored_once(
    sy, client: Client, services, tmp_path: Path
) -> None:
    data = _random_bytes(50_000)
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "weights.bin").write_bytes(data)
    (tmp_path / "copy.bin").write_bytes(data)
    with sy.start_run() as r1:
        sy.log_artifact(tmp_path / "weights.bin")
    with sy.start_run() as r2:
        sy.log_artifact(tmp_path / "copy.bin", "nested/other-name.bin")
    a1 = client.list_artifacts(r1.id).files[0]
    a2 = client.list_artifacts(r2.id, "nested").files[0]
    assert a1.digest == a2.digest == digest
    blobs = _blob_paths(services, digest)
    assert len(blobs) == 1
    assert blobs[0].read_bytes() == data


BAD_PATHS = ["../escape.txt", "a/../../escape.txt", "..", "/etc/passwd", "a\\b.txt", "..\\x"]


def test_artifact_paths_that_leave_the_run_are_refused(
    sy, client: Client, files: Path, tmp_path: Path
) -> None:
    with sy.start_run() as run:
        for bad in BAD_PATHS:
            with raises(InvalidArgument, "artifact_path"):
                sy.log_artifact(files / "model.bin", bad)
            with raises(InvalidArgument, "artifact_path"):
                sy.log_artifact(files / "data", bad)
        sy.log_artifact(files / "model.bin", "./kept/./model.bin")  # normalised, not refused
    for bad in BAD_PATHS:
        with raises(InvalidArgument, "path"):
            client.list_artifacts(run.id, bad)
        with raises(InvalidArgument, "path"):
            client.download_artifacts(run.id, bad, tmp_path / "out")
    listed = client.list_artifacts(run.id, recursive=True).files
    assert [a.path for a in listed] == ["kept/model.bin"]
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_purge_frees_a_blob_unless_a_live_run_shares_it(
    sy, client: Client, services, tmp_path: Path
) -> None:
    shared, own = _random_bytes(3000), _random_bytes(5000)
    d_shared, d_own = (hashlib.sha256(b).hexdigest() for b in (shared, own))
    (tmp_path / "shared.bin").write_bytes(shared)
    (tmp_path / "own.bin").write_bytes(own)
    with sy.start_run() as doomed:
        sy.log_artifact(tmp_path / "shared.bin")
        sy.log_artifact(tmp_path / "own.bin")
        sy.log_metric("m", 1.0)
    with sy.start_run() as keeper:
        sy.log_artifact(tmp_path / "shared.bin")

    # An active run is never purged, even when named.
    report = client.purge(run_ids=[doomed.id])
    assert report.runs_purged == 0
    assert client.get_run(doomed.id).lifecycle == Lifecycle.active

    client.delete_run(doomed.id)
    report = client.purge(run_ids=[doomed.id])
    assert (report.runs_purged, report.blobs_deleted, report.bytes_freed) == (1, 1, len(own))
    with raises(NotFound):
        client.get_run(doomed.id)
    with raises(NotFound):
        client.restore_run(doomed.id)
    assert _blob_paths(services, d_own) == []
    assert len(_blob_paths(services, d_shared)) == 1  # the keeper still uses it
    got = client.download_artifacts(keeper.id, "shared.bin", tmp_path / "dl")
    assert got.read_bytes() == shared

    client.delete_run(keeper.id)
    report = client.purge(older_than_s=0)
    assert (report.runs_purged, report.blobs_deleted, report.bytes_freed) == (1, 1, len(shared))
    assert _blob_paths(services, d_shared) == []
    assert client.purge(older_than_s=0).runs_purged == 0


def test_purge_respects_the_restore_window(sy, client: Client) -> None:
    with sy.start_run() as run:
        pass
    client.delete_run(run.id)
    assert client.purge().runs_purged == 0  # deleted just now: inside the 30-day window
    client.restore_run(run.id)
    assert client.get_run(run.id).lifecycle == Lifecycle.active


def test_a_deleted_experiment_is_purged_with_its_runs(sy, client: Client) -> None:
    with sy.start_run(experiment="gone") as run:
        sy.log_param("p", 1)
    with sy.start_run(experiment="stays") as other:
        pass
    exp = client.get_experiment("gone")
    client.delete_experiment(exp.id)
    report = client.purge(experiment_ids=[exp.id])
    assert (report.experiments_purged, report.runs_purged) == (1, 1)
    with raises(NotFound):
        client.get_experiment(exp.id)
    with raises(NotFound):
        client.get_run(run.id)
    assert client.get_run(other.id).lifecycle == Lifecycle.active
    client.create_experiment("gone")  # the name is free again


# -- dataset inputs ---------------------------------------------------------------------------


def test_dataset_inputs_appear_on_the_run(sy, client: Client) -> None:
    schema = {"columns": [{"name": "age", "type": "int64"}, {"name": "churn", "type": "bool"}]}
    with sy.start_run() as run:
        sy.log_input(
            "customers",
            digest="9f86d081884c7d65",
            source="s3://bucket/customers.parquet",
            schema=schema,
            context="training",
        )
        sy.log_input("holdout", digest="60303ae22b998861")
        sy.log_input("holdout", digest="60303ae22b998861")  # the same input again: kept once
        with raises(InvalidArgument, "digest"):
            sy.log_input("bad", digest="")
    inputs = client.get_run(run.id).inputs
    assert [(i.name, i.digest, i.source, i.context) for i in inputs] == [
        ("customers", "9f86d081884c7d65", "s3://bucket/customers.parquet", "training"),
        ("holdout", "60303ae22b998861", "", ""),
    ]
    assert inputs[0].schema_ == schema
    assert inputs[1].schema_ is None


# -- system metrics ---------------------------------------------------------------------------


def test_system_metrics_are_sampled_while_the_run_is_active(sy, client: Client) -> None:
    with sy.start_run(log_system_metrics=True, system_metrics_interval_s=0.2) as run:
        time.sleep(1.1)
    cpu = client.get_metric_history(run.id, "system/cpu_percent")
    mem = client.get_metric_history(run.id, "system/memory_used_mb")
    assert len(cpu.values) >= 3, cpu
    assert len(mem.values) == len(cpu.values)
    assert cpu.steps == list(range(len(cpu.steps)))
    assert all(v is not None and 0 <= v <= 100 * (os.cpu_count() or 1) for v in cpu.values)
    assert all(v is not None and v > 0 for v in mem.values)
    # The sampler stops with the run.
    n = len(cpu.values)
    time.sleep(0.5)
    assert len(client.get_metric_history(run.id, "system/cpu_percent").values) == n


# -- search -----------------------------------------------------------------------------------


@pytest.fixture
def searchable(sy, client: Client) -> dict[str, str]:
    """Five finished-or-failed runs in experiment ``search``; returns name -> id."""
    specs = [
        ("r-lr-1", "lr", 0.70, "FINISHED", "dev"),
        ("r-lr-2", "lr", 0.85, "FINISHED", "prod"),
        ("r-rf-1", "rf", 0.91, "FINISHED", "prod"),
        ("r-rf-2", "rf", 0.95, "FAILED", "dev"),
        ("r-gb-1", "gb", 0.60, "FINISHED", "dev"),
    ]
    ids = {}
    for name, model, acc, status, env in specs:
        run = sy.start_run(experiment="search", name=name, tags={"env": env})
        sy.log_param("model", model)
        sy.log_metric("acc", acc, step=1)
        run.end(status)
        ids[name] = run.id
    return ids


def _names(page: Any) -> list[str]:
    return [r.name for r in page.data]


def test_search_by_metric_with_order(client: Client, searchable: dict[str, str]) -> None:
    page = client.search_runs(["search"], "metrics.acc > 0.8", ["metrics.acc DESC"])
    assert _names(page) == ["r-rf-2", "r-rf-1", "r-lr-2"]
    page = client.search_runs(filter="metrics.acc <= 0.7", order_by=["metrics.acc ASC"])
    assert _names(page) == ["r-gb-1", "r-lr-1"]


def test_search_by_param_tag_and_status(client: Client, searchable: dict[str, str]) -> None:
    assert set(_names(client.search_runs(filter="params.model = 'rf'"))) == {"r-rf-1", "r-rf-2"}
    assert set(_names(client.search_runs(filter="tags.env = 'prod'"))) == {"r-lr-2", "r-rf-1"}
    assert _names(client.search_runs(filter="attributes.status = 'FAILED'")) == ["r-rf-2"]
    both = client.search_runs(filter="params.model = 'lr' AND tags.env = 'dev'")
    assert _names(both) == ["r-lr-1"]
    assert client.search_runs(filter="params.model = 'svm'").data == []


def test_search_paginates_every_run_exactly_once(
    client: Client, searchable: dict[str, str]
) -> None:
    seen: list[str] = []
    token = None
    while True:
        page = client.search_runs(
            order_by=["metrics.acc DESC"], page_size=2, page_token=token, include_count=True
        )
        assert page.count == 5
        seen += [r.id for r in page.data]
        token = page.next_page_token
        if token is None:
            break
    assert len(seen) == 5 and set(seen) == set(searchable.values())
    assert seen[0] == searchable["r-rf-2"] and seen[-1] == searchable["r-gb-1"]


def test_an_invalid_filter_is_refused_with_its_position(
    client: Client, searchable: dict[str, str]
) -> None:
    with raises(InvalidArgument, "filter") as info:
        client.search_runs(filter="metrics.acc >> 0.5")
    assert isinstance(info.value.details.get("position"), int)
    with raises(InvalidArgument):
        client.search_runs(order_by=["metrics.acc SIDEWAYS"])


# -- compare ----------------------------------------------------------------------------------


def test_compare_runs_side_by_side(sy, client: Client) -> None:
    ids = []
    for lr, seed in [("0.1", 1), ("0.2", 1), ("0.1", None)]:
        with sy.start_run(experiment="cmp") as run:
            sy.log_param("lr", lr)
            sy.log_param("model", "mlp")
            if seed is not None:
                sy.log_param("seed", seed)
            for step in range(3):
                sy.log_metric("loss", float(lr) * (3 - step), step=step)
            sy.log_metric("acc", 0.5 + float(lr), step=0)
        ids.append(run.id)

    cmp = client.compare_runs(ids)
    assert [r.id for r in cmp.runs] == ids
    assert cmp.param_keys == ["lr", "model", "seed"]
    assert cmp.differing_params == ["lr", "seed"]
    assert [r.params.get("seed") for r in cmp.runs] == ["1", "1", None]
    assert cmp.metric_keys == ["acc", "loss"]
    assert [h.run_id for h in cmp.histories["loss"]] == ids
    assert [h.values for h in cmp.histories["loss"]] == [
        pytest.approx([0.3, 0.2, 0.1]),
        pytest.approx([0.6, 0.4, 0.2]),
        pytest.approx([0.3, 0.2, 0.1]),
    ]
    assert cmp.histories["loss"][1].steps == [0, 1, 2]

    only = client.compare_runs(list(reversed(ids[:2])), metric_keys=["acc"])
    assert [r.id for r in only.runs] == [ids[1], ids[0]]
    assert only.metric_keys == ["acc"]
    assert list(only.histories) == ["acc"]
    assert only.differing_params == ["lr"]
    with raises(NotFound, "run_ids"):
        client.compare_runs([ids[0], "0000000000000000"])


def test_errors_are_the_same_class_on_every_backend(sy, client: Client) -> None:
    """One place listing what a user catches; each backend must raise exactly these."""
    with sy.start_run() as run:
        sy.log_param("p", 1)
    cases = [
        (NotFound, lambda: client.get_run("0000000000000000")),
        (NotFound, lambda: client.get_experiment(uuid.uuid4().hex)),
        (
            InvalidArgument,
            lambda: client.backend.log_batch(client.project, run.id, params=[("p", "2")]),
        ),
        (
            AlreadyExists,
            lambda: client.create_experiment(client.get_experiment(run.experiment_id).name),
        ),
        (InvalidArgument, lambda: client.list_experiments(page_token="%%%")),
    ]
    for cls, call in cases:
        with raises(cls):
            call()
