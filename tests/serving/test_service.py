"""``EndpointService`` against real model servers on 127.0.0.1, on SQLite and PostgreSQL.

Each endpoint here is a real ``python -m shipyard.serving.runtime`` process serving a real
registered scikit-learn model; requests go to its own port with httpx.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest

from shipyard.core.errors import AlreadyExists, InvalidArgument, NotFound
from shipyard.serving.schemas import EndpointCreate, EndpointUpdate, parse
from tests.serving.conftest import Models, Register, pid_alive, wait_for, wait_in_service

# Tests of what the model server does (supervision, traffic, hosting) run on SQLite only: the
# database plays no part in it beyond what the tests on both databases already cover.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def predict(url: str, models: Models, f0: float = 3.0) -> list[Any]:
    row = models.row(f0)
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    r = httpx.post(f"{url}/invocations", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def create(svc: Any, project: str, **fields: Any) -> Any:
    return svc.create(project, parse(EndpointCreate, fields), created_by="tester")


def test_an_endpoint_serves_updates_rolls_back_and_goes(
    services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    """The whole life of an endpoint: created from an alias, InService when it answers, moved
    to a new version, rolled back to exactly the version it served (even after the alias
    moved on), and deleted with its process."""
    svc = services.endpoints
    register(project, "fraud", models.pos, alias="champion")  # v1 answers 1 for f0 > 0
    register(project, "fraud", models.neg)  # v2 answers 0

    ep = create(svc, project, name="fraud", model="fraud@champion")
    assert ep.status.value == "Creating"
    assert ep.created_by == "tester"
    ep = wait_in_service(svc, project, "fraud")
    assert ep.url and ep.url.startswith("http://127.0.0.1:")
    assert [(v.name, v.model, v.model_name, v.model_version, v.weight) for v in ep.variants] == [
        ("primary", "models:/fraud@champion", "fraud", "1", 1.0)
    ]
    assert predict(ep.url, models) == [1]
    assert httpx.get(f"{ep.url}/v2/health/ready").status_code == 200

    # The list carries the live figures from the endpoint's server.
    page = svc.list(project)
    assert page.count == 1
    listed = page.data[0]
    assert listed.name == "fraud" and listed.status.value == "InService"
    assert listed.requests == 1 and listed.variants[0].requests == 1
    assert listed.latency_p50_ms is not None and listed.latency_p99_ms is not None
    assert listed.workers == 1

    with pytest.raises(AlreadyExists) as dup:
        create(svc, project, name="fraud", model="fraud/2")
    assert dup.value.details["field"] == "name"

    # Update to version 2: served by the same process, no restart.
    pid = ep.pid
    ep = svc.update(project, "fraud", parse(EndpointUpdate, {"model": "fraud/2"}))
    assert ep.status.value == "InService" and ep.deployment == 2 and ep.pid == pid
    assert (ep.variants[0].name, ep.variants[0].model_version) == ("primary", "2")
    assert predict(ep.url, models) == [0]

    # The alias moves to v2; a rollback still serves v1, the version deployment 1 served.
    services.models.set_alias(project, "fraud", "champion", 2)
    ep = svc.rollback(project, "fraud")
    assert ep.deployment == 3 and ep.variants[0].model_version == "1"
    assert predict(ep.url, models) == [1]
    history = svc.deployments(project, "fraud").data
    assert [(d.number, d.reason, d.current) for d in history] == [
        (3, "rollback", True),
        (2, "update", False),
        (1, "create", False),
    ]
    assert [d.variants[0].model_version for d in history] == ["1", "2", "1"]
    ep = svc.rollback(project, "fraud", to=2)
    assert ep.deployment == 4 and predict(ep.url, models) == [0]

    with pytest.raises(InvalidArgument) as same:
        svc.rollback(project, "fraud", to=4)
    assert same.value.details["field"] == "to"
    with pytest.raises(NotFound) as missing:
        svc.rollback(project, "fraud", to=99)
    assert missing.value.details["field"] == "to"

    kinds = [e.kind for e in svc.events(project, "fraud").data]
    assert {"created", "started", "ready", "update", "rollback"} <= set(kinds)

    url = ep.url
    svc.delete(project, "fraud")
    assert not pid_alive(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live", timeout=2)
    with pytest.raises(NotFound) as gone:
        svc.get(project, "fraud")
    assert gone.value.details["field"] == "name"
    assert svc.list(project).count == 0


def test_bad_models_are_refused_before_anything_starts(
    services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    svc = services.endpoints
    register(project, "fraud", models.pos)
    with pytest.raises(NotFound) as no_alias:
        create(svc, project, name="fraud", model="fraud@champion")
    assert no_alias.value.details["field"] == "model"
    assert "champion" in no_alias.value.message
    with pytest.raises(NotFound) as no_model:
        create(
            svc,
            project,
            name="ab",
            variants=[
                {"name": "a", "model": "fraud/1"},
                {"name": "b", "model": "churn/1"},
            ],
        )
    assert no_model.value.details["field"] == "variants.1.model"
    assert svc.list(project).count == 0
    with pytest.raises(NotFound):
        svc.update(project, "nope", parse(EndpointUpdate, {"model": "fraud/1"}))


def _corrupt(services: Any, project: str, uri: str) -> None:
    """Change the model file in the registry's local cache: its sha256 no longer matches the
    manifest, so the runtime must refuse to load it."""
    folder = services.models.resolve(project, uri).local_path
    model_file = next(p for p in folder.iterdir() if p.name.startswith("model."))
    model_file.write_bytes(b"not a model")


def test_a_model_server_that_cannot_start_is_failed_with_its_reason(
    services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    svc = services.endpoints
    register(project, "fraud", models.pos)
    _corrupt(services, project, "models:/fraud/1")
    create(svc, project, name="fraud", model="fraud/1")
    ep = wait_for(lambda: (e := svc.get(project, "fraud")).status.value != "Creating" and e, 60)
    assert ep.status.value == "Failed"
    assert "sha256" in (ep.last_error or "") and "model.npz" in (ep.last_error or "")
    assert ep.url is None and not pid_alive(ep.pid)
    assert "failed" in [e.kind for e in svc.events(project, "fraud").data]


def test_an_update_whose_model_cannot_load_keeps_the_old_one_serving(
    services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    svc = services.endpoints
    register(project, "fraud", models.pos)
    register(project, "fraud", models.neg)
    create(svc, project, name="fraud", model="fraud/1")
    wait_in_service(svc, project, "fraud")
    _corrupt(services, project, "models:/fraud/2")
    with pytest.raises(InvalidArgument) as err:
        svc.update(project, "fraud", parse(EndpointUpdate, {"model": "fraud/2"}))
    assert "did not load" in err.value.message and "sha256" in err.value.message
    ep = svc.get(project, "fraud")
    assert ep.status.value == "InService" and ep.deployment == 1
    assert ep.variants[0].model_version == "1"
    assert "still serving deployment 1" in (ep.last_error or "")
    assert predict(ep.url, models) == [1]
    assert [d.number for d in svc.deployments(project, "fraud").data] == [1]


@SQLITE_ONLY
def test_a_crashed_model_server_is_restarted_and_recorded(
    services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    svc = services.endpoints
    register(project, "fraud", models.pos)
    create(svc, project, name="fraud", model="fraud/1")
    ep = wait_in_service(svc, project, "fraud")
    old_pid, url = ep.pid, ep.url
    os.killpg(old_pid, signal.SIGKILL)

    def back() -> Any:
        e = svc.get(project, "fraud", with_stats=False)
        if e.pid in (None, old_pid) or e.status.value != "InService":
            return None
        try:
            ready = httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return None
        return e if ready else None

    ep = wait_for(back, 60)
    assert ep.restarts >= 1
    assert "restarted" in (ep.last_error or "")
    assert ep.url == url  # the same port again: callers keep their URL
    assert predict(ep.url, models) == [1]
    kinds = wait_for(
        lambda: (
            (k := [e.kind for e in svc.events(project, "fraud").data]) and "restarted" in k and k
        ),
        10,
    )
    assert "exited" in kinds


@SQLITE_ONLY
def test_traffic_splits_by_weight_the_shadow_sees_a_copy_and_requests_are_captured(
    services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    svc = services.endpoints
    register(project, "fraud", models.pos)
    register(project, "fraud", models.neg)
    create(
        svc,
        project,
        name="ab",
        variants=[
            {"name": "blue", "model": "fraud/1", "weight": 1},
            {"name": "green", "model": "fraud/2", "weight": 1},
        ],
        shadow={"name": "canary", "model": "fraud/2"},
        capture={"sample_rate": 1.0},
    )
    ep = wait_in_service(svc, project, "ab")
    assert [(v.name, v.model_version, v.weight) for v in ep.variants] == [
        ("blue", "1", 0.5),
        ("green", "2", 0.5),
    ]
    assert ep.shadow is not None and (ep.shadow.name, ep.shadow.model_version) == ("canary", "2")
    answers = [predict(ep.url, models)[0] for _ in range(60)]
    assert set(answers) == {0, 1}  # both variants answered (all one of them: p = 2**-59)

    def shadow_done() -> Any:
        e = svc.get(project, "ab")
        return e if e.shadow is not None and e.shadow.requests == 60 else None

    ep = wait_for(shadow_done, 20)
    by_name = {v.name: v for v in ep.variants}
    assert by_name["blue"].requests + by_name["green"].requests == 60 == ep.requests
    assert by_name["blue"].requests == answers.count(1)
    assert ep.stats is not None and ep.stats["shadow"]["disagree"] == answers.count(1)

    # Weights move the traffic with no reload of a model: all of it to blue now.
    ep = svc.update(project, "ab", parse(EndpointUpdate, {"weights": {"green": 0}}))
    assert [(v.name, v.weight) for v in ep.variants] == [("blue", 1.0), ("green", 0.0)]
    assert {predict(ep.url, models)[0] for _ in range(20)} == {1}

    # Captured requests land as complete JSONL files in the artifact store's folder once the
    # server rotates its file (or stops).
    capture_dir = ep.capture_dir
    assert capture_dir is not None
    assert capture_dir.startswith(services.store.root)
    svc.delete(project, "ab")
    import json
    from pathlib import Path

    lines = [
        json.loads(line)
        for f in sorted(Path(capture_dir).rglob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    served = [r for r in lines if not r["shadow"]]
    shadowed = [r for r in lines if r["shadow"]]
    assert len(served) == 80 and len(shadowed) >= 60
    assert len({r["id"] for r in served}) == 80
    assert {r["variant"] for r in served} == {"blue", "green"}
    assert all(
        r["request"]["dataframe_split"]["columns"] == ["f0", "f1", "f2", "f3"] for r in served
    )
    assert all(r["request_time"] and r["response_time"] for r in lines)


@SQLITE_ONLY
def test_a_multi_model_endpoint_serves_each_model_by_name(
    services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    svc = services.endpoints
    register(project, "up", models.pos)
    register(project, "down", models.neg)
    create(
        svc,
        project,
        name="many",
        multi_model={"models": {"up": "up/1", "down": "down/1"}, "memory_budget_mb": 256},
    )
    ep = wait_in_service(svc, project, "many")
    assert ep.variants == [] and ep.multi_model is not None

    def infer(model: str) -> Any:
        body = {
            "inputs": [
                {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
                for c, v in zip(["f0", "f1", "f2", "f3"], [3.0, 0.1, -0.2, 0.3], strict=True)
            ]
        }
        r = httpx.post(f"{ep.url}/v2/models/{model}/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["outputs"][0]["data"]

    assert infer("up") == [1] and infer("down") == [0]
    r = httpx.post(f"{ep.url}/v2/models/sideways/infer", json={"inputs": []}, timeout=30)
    assert r.status_code == 404


@SQLITE_ONLY
def test_endpoints_stop_with_the_server_and_come_back_with_the_next_one(
    services: Any,
    settings: Any,
    project: str,
    register: Register,
    models: Models,
    reap: None,
) -> None:
    """``shipyard server`` stops the endpoints it runs when it stops, and the next server
    starts them again; a Shipyard that ends without stopping them (a notebook) leaves them
    serving, and the next one adopts them as they are."""
    from shipyard.server.context import Services

    svc = services.endpoints
    register(project, "fraud", models.pos)
    create(svc, project, name="fraud", model="fraud/1")
    first = wait_in_service(svc, project, "fraud")
    svc.shutdown(stop_processes=True)  # what the server's shutdown does
    assert not pid_alive(first.pid)
    assert svc.get(project, "fraud").status.value == "InService"  # still meant to serve

    second = Services.from_settings(settings)
    try:
        second.endpoints.start_supervisor()  # what the server's start does

        def serving_again() -> Any:
            e = second.endpoints.get(project, "fraud", with_stats=False)
            return e if e.pid not in (None, first.pid) and e.workers != 0 else None

        back = wait_for(serving_again, 60)
        wait_for(lambda: _ready(back.url), 60)
        assert predict(back.url, models) == [1]
        assert back.url == first.url
    finally:
        second.close()  # an SDK process ending: its endpoints keep serving
    assert pid_alive(back.pid)

    third = Services.from_settings(settings)
    try:
        third.endpoints.start_supervisor()

        def adopted() -> Any:
            kinds = [e.kind for e in svc.events(project, "fraud").data]
            return kinds if "adopted" in kinds else None

        assert wait_for(adopted)[0] == "adopted"
        assert svc.get(project, "fraud").pid == back.pid  # the same process, not a new one
        # ...and the adopter watches it: a crash is restarted by the third Shipyard.
        os.killpg(back.pid, signal.SIGKILL)

        def restarted() -> Any:
            e = svc.get(project, "fraud", with_stats=False)
            return e.pid not in (None, back.pid) and _ready(e.url)

        wait_for(restarted)
        assert predict(back.url, models) == [1]
    finally:
        third.endpoints.shutdown(stop_processes=True)
        third.close()


def _ready(url: str | None) -> bool:
    if url is None:
        return False
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
