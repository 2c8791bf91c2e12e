"""The column-by-column metric route (``POST .../runs/{id}/metrics``), the SDK buffer's fast path,
over real HTTP on SQLite and PostgreSQL: what is stored, what is refused (naming the column and
the index), NaN and infinity as on the other routes, and batch ids applied once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerThread


@pytest.fixture
def api(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as c:
        yield c


@pytest.fixture
def run_url(api: httpx.Client, project: str) -> str:
    assert api.post("/projects", json={"name": project}).status_code == 201
    exp = api.post(f"/projects/{project}/experiments", json={"name": "cols"}).json()["id"]
    r = api.post(f"/projects/{project}/runs", json={"experiment_id": exp})
    assert r.status_code == 201, r.text
    return f"/projects/{project}/runs/{r.json()['id']}"


def _history(api: httpx.Client, run_url: str, key: str) -> dict:
    r = api.get(f"{run_url}/metrics/{key}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _error(r: httpx.Response, status: int = 400) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["details"]["field"] in err["message"], err
    return err  # type: ignore[no-any-return]


def test_columns_are_stored_as_points_with_the_latest_value_per_key(
    api: httpx.Client, run_url: str
) -> None:
    n = 3000
    body = {
        "keys": [f"k{i % 3}" for i in range(n)],
        "values": [i / 7 for i in range(n)],
        "steps": [i // 3 for i in range(n)],
        "timestamps": [1_000 + i for i in range(n)],
        "batch_id": "cols-1",
    }
    r = api.post(f"{run_url}/metrics", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"applied": True}
    h = _history(api, run_url, "k1")
    assert h["steps"] == list(range(n // 3))
    assert h["values"] == [i / 7 for i in range(1, n, 3)]  # floats round-trip exactly
    latest = api.get(run_url).json()["metrics"]
    assert latest["k2"] == {"value": (n - 1) / 7, "step": n // 3 - 1, "timestamp": 1_000 + n - 1}


def test_out_of_order_points_keep_the_highest_step_as_latest(
    api: httpx.Client, run_url: str
) -> None:
    body = {
        "keys": ["m", "m", "m", "m"],
        "values": [0.5, 0.9, 0.1, 0.2],
        "steps": [5, 1, 5, 5],
        "timestamps": [1000, 5000, 1100, 900],
    }
    assert api.post(f"{run_url}/metrics", json=body).status_code == 200
    assert api.get(run_url).json()["metrics"]["m"]["value"] == 0.1
    assert _history(api, run_url, "m")["steps"] == [1, 5, 5, 5]


def test_null_is_nan_and_ints_are_numbers(api: httpx.Client, run_url: str) -> None:
    body = {"keys": ["a", "a", "b"], "values": [None, 2, 1e308], "steps": [0, 1, 0]}
    body["timestamps"] = [1, 2, 3]
    assert api.post(f"{run_url}/metrics", json=body).status_code == 200
    assert _history(api, run_url, "a")["values"] == [None, 2.0]
    # A number too large for a double is infinity: stored as the largest finite float, as the
    # other routes do (JSON cannot carry infinity back).
    raw = b'{"keys":["c"],"values":[1e999],"steps":[0],"timestamps":[4]}'
    r = api.post(f"{run_url}/metrics", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert _history(api, run_url, "c")["values"] == [sys.float_info.max]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"values": [1.0, "abc"]}, "values[1]"),
        ({"values": [1.0, [1]]}, "values[1]"),
        ({"keys": ["a", ""]}, "keys[1]"),
        ({"keys": ["a", "k" * 251]}, "keys[1]"),
        ({"keys": ["a", 5]}, "keys[1]"),
        ({"keys": ["a", ["x"]]}, "keys[1]"),
        ({"steps": [0, 1.5]}, "steps[1]"),
        ({"steps": [0, True]}, "steps[1]"),
        ({"steps": [0, 2**63]}, "steps[1]"),
        ({"steps": [0, 2**64]}, "steps[1]"),
        ({"timestamps": [1, -1]}, "timestamps[1]"),
        ({"timestamps": [1, "now"]}, "timestamps[1]"),
        ({"values": [1.0]}, "values[1]"),  # one value short
        ({"steps": None}, "steps"),
        ({"keys": "a"}, "keys"),
        ({"batch_id": ""}, "batch_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_column_is_refused_naming_it_and_nothing_is_stored(
    api: httpx.Client, run_url: str, change: dict, field: str
) -> None:
    body = {"keys": ["a", "b"], "values": [1.0, 2.0], "steps": [0, 1], "timestamps": [1, 2]}
    body.update(change)
    if body.get("steps") is None:
        del body["steps"]
    err = _error(api.post(f"{run_url}/metrics", json=body))
    assert err["code"] == "INVALID_ARGUMENT"
    assert err["details"]["field"] == field
    assert api.get(run_url).json()["metrics"] == {}


def test_a_body_that_is_not_json_is_refused(api: httpx.Client, run_url: str) -> None:
    for raw in (b"{not json", b"[1, 2]", b"NaN"):
        r = api.post(f"{run_url}/metrics", content=raw)
        assert _error(r)["details"]["field"] == "body"


def test_unknown_run_is_404_and_a_deleted_run_is_refused(
    api: httpx.Client, run_url: str, project: str
) -> None:
    body = {"keys": ["a"], "values": [1.0], "steps": [0], "timestamps": [1]}
    r = api.post(f"/projects/{project}/runs/nope/metrics", json=body)
    assert r.status_code == 404, r.text
    assert api.delete(run_url).status_code == 204
    assert _error(api.post(f"{run_url}/metrics", json=body))["details"]["field"] == "run_id"


def test_a_batch_id_is_applied_once(api: httpx.Client, run_url: str) -> None:
    body = {"keys": ["m"] * 3, "values": [1.0, 2.0, 3.0], "steps": [0, 1, 2], "timestamps": [1] * 3}
    body["batch_id"] = "same"
    assert api.post(f"{run_url}/metrics", json=body).json() == {"applied": True}
    assert api.post(f"{run_url}/metrics", json=body).json() == {"applied": False}
    assert _history(api, run_url, "m")["steps"] == [0, 1, 2]
    # The same id through the row-by-row route is the same batch.
    rows = {"metrics": [{"key": "m", "value": 9.0, "step": 9, "timestamp": 9}], "batch_id": "same"}
    assert api.post(f"{run_url}/batch", json=rows).json() == {"applied": False}


def test_keys_with_copy_special_characters_round_trip(api: httpx.Client, run_url: str) -> None:
    keys = ["tab\tkey", "new\nline", "back\\slash", "brace{0}", "üñí"]
    body = {"keys": keys, "values": [1.0] * 5, "steps": [0] * 5, "timestamps": [1] * 5}
    assert api.post(f"{run_url}/metrics", json=body).status_code == 200
    assert set(api.get(run_url).json()["metrics"]) == set(keys)


def test_the_route_is_in_the_openapi_spec(api: httpx.Client, server: ServerThread) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    op = spec["paths"]["/api/v1/projects/{project}/runs/{run_id}/metrics"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert {"keys", "values", "steps", "timestamps"} <= set(schema["properties"])
