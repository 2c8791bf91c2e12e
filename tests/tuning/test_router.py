"""The REST API of tuning jobs on a real server: create, list (filtered, paginated), get with
trials, report trials, stop, and errors that name the field."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest


@pytest.fixture
def api(server: Any, project: str) -> Any:
    with httpx.Client(base_url=f"{server.url}/api/v1/projects/{project}") as c:
        httpx.post(f"{server.url}/api/v1/projects", json={"name": project}).raise_for_status()
        yield c


FUNCTION_JOB = {
    "kind": "function",
    "objective": {"metric": "loss", "direction": "minimize"},
    "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
    "strategy": "random",
    "max_trials": 3,
}


def test_create_report_list_get_and_stop(api: Any) -> None:
    r = api.post("/tuning-jobs", json={**FUNCTION_JOB, "name": "first"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["status"] == "running" and first["kind"] == "function"
    assert first["early_stopping"] == "none" and first["experiment"] == "tuning"
    trials = [
        {
            "number": i,
            "params": {"lr": lr},
            "state": "completed",
            "value": v,
            "intermediate_values": {"0": v + 1, "1": v},
        }
        for i, (lr, v) in enumerate([(0.01, 0.5), (0.05, 0.2)])
    ]
    trials.append(
        {
            "number": 2,
            "params": {"lr": 0.09},
            "state": "pruned",
            "value": 3.0,
            "intermediate_values": {"0": 3.0},
        }
    )
    r = api.post(f"/tuning-jobs/{first['id']}/trials", json={"trials": trials[:2]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "running" and r.json()["trials_count"]["total"] == 2
    # A batch sent again (a retry) is recorded once; the last one ends the job.
    r = api.post(
        f"/tuning-jobs/{first['id']}/trials", json={"trials": trials, "status": "completed"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["trials_count"]["total"] == 3
    got = api.get(f"/tuning-jobs/{first['id']}").json()
    assert [t["state"] for t in got["trials"]] == ["completed", "completed", "pruned"]
    assert got["trials"][0]["intermediate_values"] == {"0": 1.5, "1": 0.5}
    assert got["best"]["number"] == 1 and got["best"]["value"] == 0.2
    assert got["best"]["params"] == {"lr": 0.05} and got["best"]["run_id"]
    assert got["trials_count"] == {
        "total": 3,
        "running": 0,
        "completed": 2,
        "pruned": 1,
        "failed": 0,
        "stopped": 0,
    }
    assert (
        api.get(f"/tuning-jobs/{first['id']}", params={"trials": "false"}).json()["trials"] is None
    )
    # A finished job takes no more trials.
    more = {**trials[0], "number": 7}
    again = api.post(f"/tuning-jobs/{first['id']}/trials", json={"trials": [more]})
    assert again.status_code == 409

    second = api.post("/tuning-jobs", json={**FUNCTION_JOB, "name": "second"}).json()
    stopped = api.post(f"/tuning-jobs/{second['id']}/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    third = api.post("/tuning-jobs", json={**FUNCTION_JOB, "name": "third"}).json()
    resumed = api.post(f"/tuning-jobs/{third['id']}/resume")
    assert resumed.status_code == 409 and "sy.tune" in resumed.json()["error"]["message"]

    page = api.get("/tuning-jobs", params={"page_size": 2}).json()
    assert [j["name"] for j in page["data"]] == ["third", "second"] and page["count"] == 3
    rest = api.get("/tuning-jobs", params={"page_size": 2, "page_token": page["next_page_token"]})
    assert [j["name"] for j in rest.json()["data"]] == ["first"]
    assert rest.json()["next_page_token"] is None
    # A running job cannot be deleted; a finished one can (its runs stay).
    assert api.delete(f"/tuning-jobs/{third['id']}").status_code == 409
    assert api.delete(f"/tuning-jobs/{second['id']}").status_code == 204
    assert api.get(f"/tuning-jobs/{second['id']}").status_code == 404
    assert api.delete(f"/tuning-jobs/{second['id']}").status_code == 404
    by_status = api.get("/tuning-jobs", params={"status": "running"}).json()
    assert [j["id"] for j in by_status["data"]] == [third["id"]]
    assert api.get("/tuning-jobs", params={"kind": "job"}).json()["data"] == []
    assert [
        j["name"] for j in api.get("/tuning-jobs", params={"name_like": "f%"}).json()["data"]
    ] == ["first"]


BAD = [
    ({"space": {"lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "space.lr"),
    ({"space": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}}, "space.lr.low"),
    ({"space": {"lr": {"type": "bogus"}}}, "space.lr.type"),
    ({"space": {}}, "space"),
    ({"strategy": "annealing"}, "strategy"),
    ({"max_parallel": 0}, "max_parallel"),
    ({"objective": {"metric": "loss", "direction": "up"}}, "objective.direction"),
    ({"kind": "job"}, "body"),  # a job tuning job needs its trial template
    ({"trial": {"algorithm": "xgboost"}}, "body"),
    ({"warm_start_from": ["nope"]}, "warm_start_from[0]"),
]


def test_bad_input_is_a_4xx_naming_the_field(api: Any) -> None:
    for patch, field in BAD:
        r = api.post("/tuning-jobs", json={**FUNCTION_JOB, **patch})
        assert r.status_code in (400, 404), r.text
        err = r.json()["error"]
        assert err["details"]["field"] == field, (patch, err)
    assert api.get("/tuning-jobs").json()["data"] == []


def test_the_same_idempotency_key_makes_one_tuning_job(api: Any) -> None:
    body = {**FUNCTION_JOB, "idempotency_key": "nightly-2026-11-24"}
    a = api.post("/tuning-jobs", json=body)
    b = api.post("/tuning-jobs", json={**body, "max_trials": 9})
    assert a.status_code == 201 and b.status_code == 201
    assert a.json()["id"] == b.json()["id"] and b.json()["max_trials"] == 3
    assert api.get("/tuning-jobs").json()["count"] == 1


def test_unknown_ids_are_404(api: Any) -> None:
    assert api.get("/tuning-jobs/nope").status_code == 404
    assert api.post("/tuning-jobs/nope/stop").status_code == 404
    r = api.post("/tuning-jobs/nope/register-best", json={"model_name": "m"})
    assert r.status_code == 404


def test_a_function_job_whose_process_stopped_reporting_is_failed(api: Any, services: Any) -> None:
    services.tuning.lease_ms = 300
    job = api.post("/tuning-jobs", json=FUNCTION_JOB).json()
    assert api.get(f"/tuning-jobs/{job['id']}").json()["status"] == "running"
    time.sleep(0.5)
    got = api.get(f"/tuning-jobs/{job['id']}").json()
    assert got["status"] == "failed" and "stopped reporting" in got["failure_reason"]
    assert api.get("/tuning-jobs", params={"status": "running"}).json()["data"] == []
