"""The jobs REST API on a real server (``/api/v1/projects/{project}/jobs``)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.jobs.conftest import FIX


@pytest.fixture
def api(server, jobs, project):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=f"{server.url}/api/v1/projects/{project}", timeout=30) as c:
        yield c


def wait_final(api: httpx.Client, job_id: str, timeout_s: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "stopped"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not final in time")


def test_submit_follow_logs_list_and_delete(api):
    r = api.post(
        "/jobs",
        json={
            "function": f"{FIX}:train",
            "hyperparameters": {"epochs": 2},
            "metric_definitions": [{"name": "loss", "regex": r"loss=([0-9.]+)"}],
            "idempotency_key": "k1",
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] in ("queued", "starting", "running") and job["run_id"]
    again = api.post("/jobs", json={"function": f"{FIX}:sleep", "idempotency_key": "k1"})
    assert again.status_code == 201 and again.json()["id"] == job["id"]

    # Follow the log with after_seq until the job is done.
    after, text = 0, ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = api.get(f"/jobs/{job['id']}/logs", params={"after_seq": after}).json()
        text += "".join(c["data"] for c in page["data"])
        after = page["next_seq"]
        if page["done"]:
            break
        time.sleep(0.1)
    assert page["done"] and page["status"] == "completed"
    assert "epoch=1 loss=0.0500" in text
    done = api.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "completed" and done["attempt"] == 1
    assert done["spec"]["hyperparameters"] == {"epochs": 2}

    listed = api.get("/jobs", params={"status": ["completed", "failed"]}).json()
    assert [j["id"] for j in listed["data"]] == [job["id"]] and listed["count"] == 1
    assert api.get("/jobs", params={"status": "queued"}).json()["data"] == []
    assert api.delete(f"/jobs/{job['id']}").status_code == 204
    missing = api.get(f"/jobs/{job['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


def test_stop_and_pagination(api, services):
    services.jobs.on_submit = None  # no worker: the jobs stay queued
    ids = [api.post("/jobs", json={"function": f"{FIX}:train"}).json()["id"] for _ in range(3)]
    running = api.delete(f"/jobs/{ids[0]}")
    assert running.status_code == 409 and running.json()["error"]["code"] == "CONFLICT"
    stopped = api.post(f"/jobs/{ids[0]}/stop", json={"reason": "no longer needed"})
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert api.post(f"/jobs/{ids[1]}/stop").json()["status"] == "stopped"  # no body: fine
    first = api.get("/jobs", params={"page_size": 2}).json()
    assert len(first["data"]) == 2 and first["next_page_token"] and first["count"] == 3
    rest = api.get("/jobs", params={"page_size": 2, "page_token": first["next_page_token"]})
    assert [j["id"] for j in first["data"] + rest.json()["data"]] == ids[::-1]
    queued = api.get("/jobs", params={"status": "queued"}).json()
    assert [j["id"] for j in queued["data"]] == [ids[2]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"function": f"{FIX}:train", "resources": {"cpus": 0}}, "resources.cpus"),
        (
            {"function": f"{FIX}:train", "metric_definitions": [{"name": "l", "regex": "l=1"}]},
            "metric_definitions.0.regex",
        ),
        ({"function": f"{FIX}:train", "inputs": {"9lives": "/tmp"}}, "inputs"),
        ({"function": f"{FIX}:train", "retries": -1}, "retries"),
        ({"function": f"{FIX}:train", "algorithm": "xgboost"}, "body"),
        ({"algorithm": "deep-magic"}, "algorithm"),
        # A built-in algorithm's hyperparameters are checked at submit, not in the queue.
        (
            {"algorithm": "lightgbm", "hyperparameters": {"target": "y", "num_leafs": 8}},
            "hyperparameters.num_leafs",
        ),
        (
            {"algorithm": "xgboost", "hyperparameters": {"target": "y", "max_depth": "deep"}},
            "hyperparameters.max_depth",
        ),
        ({"function": f"{FIX}:train", "surprise": 1}, "surprise"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, body, field):
    r = api.post("/jobs", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "INVALID_ARGUMENT"
    assert err["details"]["field"] == field, err


def test_bad_queries_and_unknown_things(api, server):
    r = api.get("/jobs", params={"status": "exploded"})
    assert r.status_code == 400 and "status" in r.json()["error"]["details"]["field"]
    r = api.get("/jobs", params={"page_size": 0})
    assert r.status_code == 400 and "page_size" in r.json()["error"]["details"]["field"]
    r = api.get("/jobs", params={"page_token": "nope"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "page_token"
    assert api.get("/jobs/nosuchjob0000000").status_code == 404
    assert api.post("/jobs/nosuchjob0000000/stop").status_code == 404
    other = httpx.get(f"{server.url}/api/v1/projects/no-such-project/jobs")
    assert other.status_code == 404
