"""The REST API's contract, over real HTTP to a real uvicorn server, on SQLite and PostgreSQL.

Every error is ``{"error": {"code", "message", "details"}}`` with the right status and the bad
field named; bad input never reaches a 500, and a refused artifact stores nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server.conftest import assert_error


def _experiment(api: httpx.Client, proj: str, name: str = "exp") -> str:
    r = api.post(f"{proj}/experiments", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _run(api: httpx.Client, proj: str, experiment_id: str, **kw: object) -> str:
    r = api.post(f"{proj}/runs", json={"experiment_id": experiment_id, **kw})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _raw(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """Send a request byte for byte (no client-side URL normalisation); return (status, json)."""
    import json

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)
    finally:
        conn.close()


# -- health and discovery ---------------------------------------------------------------------


def test_healthz(server) -> None:
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_openapi_lists_the_tracking_routes(server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    paths = spec["paths"]
    p = "/api/v1/projects/{project}"
    for path, method in [
        ("/api/v1/projects", "post"),
        (f"{p}/experiments", "post"),
        (f"{p}/experiments", "get"),
        (f"{p}/runs", "post"),
        (f"{p}/runs", "get"),
        (f"{p}/runs/search", "post"),
        (f"{p}/runs/{{run_id}}", "get"),
        (f"{p}/runs/{{run_id}}/batch", "post"),
        (f"{p}/runs/{{run_id}}/metrics/{{key}}", "get"),
        (f"{p}/runs/{{run_id}}/artifacts", "get"),
        (f"{p}/runs/{{run_id}}/artifacts/{{path}}", "put"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from the spec"


def test_the_run_routes_answer_a_run_in_the_spec_and_on_the_wire(server, api, proj) -> None:
    """The run routes serialize their answer themselves (no second trip to the thread pool):
    the spec still names ``RunPublic``, and the body is the one FastAPI would send."""
    from shipyard.tracking.schemas import RunPublic

    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    p = "/api/v1/projects/{project}"
    for path, method, status in [
        (f"{p}/runs", "post", "201"),
        (f"{p}/runs/{{run_id}}", "get", "200"),
        (f"{p}/runs/{{run_id}}", "patch", "200"),
    ]:
        schema = paths[path][method]["responses"][status]["content"]["application/json"]
        assert schema["schema"] == {"$ref": "#/components/schemas/RunPublic"}, (method, path)
    run = _run(api, proj, _experiment(api, proj), tags={"t": "1"})
    api.post(
        f"{proj}/runs/{run}/inputs",
        json=[{"name": "d", "digest": "ab", "source": "s", "schema": {"x": 1}, "context": "c"}],
    )
    r = api.patch(f"{proj}/runs/{run}", json={"status": "FINISHED"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = RunPublic.model_validate_json(r.content)
    assert body.status.value == "FINISHED" and body.tags == {"t": "1"}
    assert r.content == body.model_dump_json(by_alias=True).encode()
    assert r.json()["inputs"][0]["schema"] == {"x": 1}  # by its alias, as FastAPI sends it
    assert api.get(f"{proj}/runs/{run}").content == r.content


def test_a_run_update_asked_for_no_answer_is_204_and_still_applied(server, api, proj) -> None:
    """``Prefer: return=minimal`` (RFC 7240), as the SDK ends its runs: 204 with no body and
    ``Preference-Applied``; the update is made all the same, and errors are as without it."""
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    patch = paths["/api/v1/projects/{project}/runs/{run_id}"]["patch"]
    assert "204" in patch["responses"]
    assert any(p["name"] == "prefer" and p["in"] == "header" for p in patch["parameters"])
    run = _run(api, proj, _experiment(api, proj), tags={"t": "1"})
    minimal = {"Prefer": "respond-async, return=minimal"}
    r = api.patch(f"{proj}/runs/{run}", json={"status": "FINISHED"}, headers=minimal)
    assert r.status_code == 204 and r.content == b""
    assert r.headers["preference-applied"] == "return=minimal"
    got = api.get(f"{proj}/runs/{run}").json()
    assert got["status"] == "FINISHED" and got["end_time"] is not None
    assert got["tags"] == {"t": "1"}
    # Any other preference gets the run, as before.
    r = api.patch(f"{proj}/runs/{run}", json={"name": "renamed"}, headers={"Prefer": "x"})
    assert r.status_code == 200 and r.json()["name"] == "renamed"
    # The same errors: an unknown run, a bad status.
    r = api.patch(f"{proj}/runs/nosuchrun", json={"status": "FINISHED"}, headers=minimal)
    assert_error(r, 404, "NOT_FOUND")
    r = api.patch(f"{proj}/runs/{run}", json={"status": "DONE"}, headers=minimal)
    assert r.status_code == 400 and "status" in r.text


def test_unknown_route_is_a_json_404(server) -> None:
    r = httpx.get(server.url + "/api/v1/no/such/route")
    assert_error(r, 404, "NOT_FOUND")


def test_wrong_method_is_a_json_error(api, proj) -> None:
    r = api.request("PATCH", "/projects")
    assert_error(r, 405, "METHOD_NOT_ALLOWED")


# -- validation errors name the field ---------------------------------------------------------


def test_metric_value_of_the_wrong_type_names_the_field(api, proj) -> None:
    run = _run(api, proj, _experiment(api, proj))
    r = api.post(
        f"{proj}/runs/{run}/batch",
        json={"metrics": [{"key": "loss", "value": "abc", "step": 0, "timestamp": 1}]},
    )
    assert_error(r, 400, "INVALID_ARGUMENT", "metrics.0.value")
    # Nothing of the refused batch was stored.
    assert api.get(f"{proj}/runs/{run}").json()["metrics"] == {}


def test_a_bad_step_and_a_negative_timestamp_are_both_named(api, proj) -> None:
    run = _run(api, proj, _experiment(api, proj))
    r = api.post(
        f"{proj}/runs/{run}/batch",
        json={"metrics": [{"key": "loss", "value": 1.0, "step": "x", "timestamp": -5}]},
    )
    err = assert_error(r, 400, "INVALID_ARGUMENT", "metrics.0.step")
    assert "metrics.0.timestamp" in {e["field"] for e in err["details"]["errors"]}


@pytest.mark.parametrize(
    ("point", "field"),
    [
        ({"value": 1, "step": 2**63, "timestamp": 1}, "metrics.0.step"),
        ({"value": 1, "step": -(2**63) - 1, "timestamp": 1}, "metrics.0.step"),
        ({"value": 1, "step": 0, "timestamp": 2**64}, "metrics.0.timestamp"),
    ],
)
def test_numbers_beyond_64_bits_are_400_not_500(api, proj, point: dict, field: str) -> None:
    run = _run(api, proj, _experiment(api, proj))
    r = api.post(f"{proj}/runs/{run}/batch", json={"metrics": [{"key": "m", **point}]})
    assert_error(r, 400, "INVALID_ARGUMENT", field)
    # The largest 64-bit step is fine.
    ok = {"key": "m", "value": 1, "step": 2**63 - 1, "timestamp": 2**63 - 1}
    assert api.post(f"{proj}/runs/{run}/batch", json={"metrics": [ok]}).status_code == 200


def test_in_process_logging_refuses_the_same_numbers(services, api, proj) -> None:
    """The LocalBackend path (no Pydantic in between) refuses what REST refuses."""
    from shipyard.core.errors import InvalidArgument

    project = proj.rsplit("/", 1)[1]
    run = _run(api, proj, _experiment(api, proj))
    for row, field in [
        (("m", 1.0, 2**63, 1), "metrics[0].step"),
        (("m", 1.0, 0, 2**63), "metrics[0].timestamp"),
    ]:
        with pytest.raises(InvalidArgument) as exc:
            services.tracking.log_batch(project, run, metrics_=[row])
        assert exc.value.details["field"] == field


def test_huge_query_numbers_are_400_not_500(api, proj) -> None:
    assert_error(
        api.post(f"{proj}/purge", params={"older_than_s": 10**20}),
        400,
        "INVALID_ARGUMENT",
        "older_than_s",
    )
    import base64

    huge = base64.urlsafe_b64encode(str(10**30).encode()).decode().rstrip("=")
    assert_error(
        api.get(f"{proj}/runs", params={"page_token": huge}), 400, "INVALID_ARGUMENT", "page_token"
    )


def test_missing_field_is_named(api, proj) -> None:
    r = api.post(f"{proj}/runs", json={"name": "no experiment"})
    assert_error(r, 400, "INVALID_ARGUMENT", "experiment_id")
    r = api.post(
        f"{proj}/runs/{_run(api, proj, _experiment(api, proj))}/batch",
        json={"metrics": [{"key": "loss", "value": 1.0}]},
    )
    assert_error(r, 400, "INVALID_ARGUMENT", "metrics.0.timestamp")


def test_unknown_field_is_refused(api, proj) -> None:
    r = api.post(f"{proj}/experiments", json={"name": "e", "colour": "red"})
    assert_error(r, 400, "INVALID_ARGUMENT", "colour")


@pytest.mark.parametrize("name", ["", "x" * 257])
def test_empty_or_overlong_experiment_name(api, proj, name: str) -> None:
    r = api.post(f"{proj}/experiments", json={"name": name})
    assert_error(r, 400, "INVALID_ARGUMENT", "name")
    assert api.get(f"{proj}/experiments").json()["data"] == []


@pytest.mark.parametrize("name", ["", "x" * 65, "has space", "../up"])
def test_bad_project_names(api, name: str) -> None:
    r = api.post("/projects", json={"name": name})
    assert_error(r, 400, "INVALID_ARGUMENT", "name")


def test_empty_and_overlong_run_name(api, proj) -> None:
    exp = _experiment(api, proj)
    for name in ["", "y" * 257]:
        r = api.post(f"{proj}/runs", json={"experiment_id": exp, "name": name})
        assert_error(r, 400, "INVALID_ARGUMENT", "name")
    assert api.get(f"{proj}/runs").json()["data"] == []


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"name": }', b"not json at all", b"\xff\xfe\x00garbage", b"", b"[1, 2]", b"null"],
)
def test_malformed_json_is_400_not_500(api, proj, body: bytes) -> None:
    r = api.post(f"{proj}/experiments", content=body, headers={"content-type": "application/json"})
    assert_error(r, 400, "INVALID_ARGUMENT")


def test_duplicate_experiment_is_409(api, proj) -> None:
    _experiment(api, proj, "dup")
    r = api.post(f"{proj}/experiments", json={"name": "dup"})
    assert_error(r, 409, "ALREADY_EXISTS", "name")


# -- unknown ids ------------------------------------------------------------------------------


def test_unknown_ids_are_404(api, proj) -> None:
    exp = _experiment(api, proj)
    run = _run(api, proj, exp)
    missing = "zzzzzzzzzzzzzzzz"
    assert_error(api.get(f"{proj}/runs/{missing}"), 404, "NOT_FOUND")
    assert_error(api.get(f"{proj}/experiments/{missing}"), 404, "NOT_FOUND")
    assert_error(api.get(f"{proj}/experiments/by-name/nope"), 404, "NOT_FOUND")
    assert_error(api.delete(f"{proj}/runs/{missing}"), 404, "NOT_FOUND")
    assert_error(
        api.post(
            f"{proj}/runs/{missing}/batch",
            json={"metrics": [{"key": "m", "value": 1, "timestamp": 1}]},
        ),
        404,
        "NOT_FOUND",
    )
    assert_error(api.post(f"{proj}/runs", json={"experiment_id": missing}), 404, "NOT_FOUND")
    assert_error(api.get(f"{proj}/runs/{run}/artifacts/nope.txt"), 404, "NOT_FOUND")
    assert_error(api.get(f"/projects/no-such-{uuid.uuid4().hex[:8]}/runs"), 404, "NOT_FOUND")
    # A run of one project is not visible through another.
    other = f"o-{uuid.uuid4().hex[:10]}"
    assert api.post("/projects", json={"name": other}).status_code == 201
    assert_error(api.get(f"/projects/{other}/runs/{run}"), 404, "NOT_FOUND")


# -- request size -----------------------------------------------------------------------------


@pytest.fixture
def small(make_server, project) -> Iterator[tuple[httpx.Client, str]]:
    srv = make_server(max_request_bytes=2048, max_artifact_bytes=64 * 1024, mlflow_project=project)
    with httpx.Client(base_url=srv.url + "/api/v1", timeout=30) as c:
        assert c.post("/projects", json={"name": project}).status_code == 201
        yield c, f"/projects/{project}"


def test_over_large_body_is_413(small) -> None:
    api, proj = small
    big = {"name": "e", "description": "d" * 5000}
    r = api.post(f"{proj}/experiments", json=big)
    err = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert err["details"]["limit"] == 2048
    assert api.get(f"{proj}/experiments").json()["data"] == []
    # Just under the limit is accepted.
    assert api.post(f"{proj}/experiments", json={"name": "e", "description": "d" * 1500}).is_success


def test_chunked_body_without_content_length_is_413(small) -> None:
    api, proj = small

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "e", "description": "'
        for _ in range(10):
            yield b"d" * 1000
        yield b'"}'

    r = api.post(
        f"{proj}/experiments", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert api.get(f"{proj}/experiments").json()["data"] == []


def test_artifact_upload_has_its_own_limit(small) -> None:
    api, proj = small
    run = _run(api, proj, _experiment(api, proj))
    ok = uuid.uuid4().bytes * 1000  # 16 kB: over the request limit, under the artifact limit
    r = api.put(f"{proj}/runs/{run}/artifacts/ok.bin", content=ok)
    assert r.status_code == 201, r.text
    assert r.json()["digest"] == hashlib.sha256(ok).hexdigest()
    too_big = uuid.uuid4().bytes * 5000  # 80 kB
    r = api.put(f"{proj}/runs/{run}/artifacts/big.bin", content=too_big)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    paths = [a["path"] for a in api.get(f"{proj}/runs/{run}/artifacts").json()["files"]]
    assert paths == ["ok.bin"]


def test_only_the_artifact_route_escapes_the_request_limit(small) -> None:
    api, proj = small
    run = _run(api, proj, _experiment(api, proj))
    r = api.put(f"{proj}/runs/{run}/tags/artifacts/x", json={"value": "v" * 5000})
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert api.get(f"{proj}/runs/{run}").json()["tags"] == {}


def test_mlflow_artifact_uploads_keep_the_artifact_limit(small) -> None:
    api, proj = small
    run = _run(api, proj, _experiment(api, proj))
    data = uuid.uuid4().bytes * 1000  # 16 kB: over the request limit, under the artifact limit
    root = str(api.base_url).split("/api/v1")[0]
    r = httpx.put(
        f"{root}/api/2.0/mlflow-artifacts/artifacts/0/{run}/artifacts/m.bin", content=data
    )
    assert r.status_code == 200, r.text
    files = api.get(f"{proj}/runs/{run}/artifacts").json()["files"]
    assert [(f["path"], f["size"]) for f in files] == [("m.bin", len(data))]


# -- artifacts: paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [
        "../escape.txt",
        "%2e%2e/escape.txt",
        "%2E%2E/%2e%2e/escape.txt",
        "sub/%2e%2e/%2e%2e/escape.txt",
        "..%2fescape.txt",
        "%2fetc%2fescape.txt",
        "/etc/escape.txt",
        "sub%5c..%5cescape.txt",
        "a%00b.txt",
    ],
)
def test_artifact_path_escape_is_refused_and_nothing_stored(
    server, api, proj, raw_path: str
) -> None:
    run = _run(api, proj, _experiment(api, proj))
    content = f"secret {uuid.uuid4()}".encode()
    digest = hashlib.sha256(content).hexdigest()
    status, body = _raw(
        server.url,
        "PUT",
        f"/api/v1{proj}/runs/{run}/artifacts/{raw_path}",
        content,
        {"content-type": "application/octet-stream"},
    )
    assert status == 400, (status, body)
    assert body["error"]["code"] == "INVALID_ARGUMENT"
    assert body["error"]["details"]["field"] == "path", body
    # Reading through the same path is refused the same way.
    status, body = _raw(server.url, "GET", f"/api/v1{proj}/runs/{run}/artifacts/{raw_path}")
    assert status == 400 and body["error"]["details"]["field"] == "path", (status, body)
    listing = api.get(f"{proj}/runs/{run}/artifacts", params={"recursive": "true"}).json()
    assert listing["files"] == []
    assert not server_store(server).exists(digest)


def server_store(server):  # type: ignore[no-untyped-def]
    from shipyard.server.context import Services

    # The ``server`` fixture's app holds its services; reach the store through the app state.
    services: Services = server.server.config.app.state.services
    return services.store


def test_artifact_listing_path_escape_is_400(api, proj) -> None:
    run = _run(api, proj, _experiment(api, proj))
    for bad in ["../x", "/etc", "a/../../b"]:
        r = api.get(f"{proj}/runs/{run}/artifacts", params={"path": bad})
        assert_error(r, 400, "INVALID_ARGUMENT", "path")


def test_artifact_round_trip_and_digest_check(api, proj, server) -> None:
    run = _run(api, proj, _experiment(api, proj))
    data = b"hello " + uuid.uuid4().bytes
    digest = hashlib.sha256(data).hexdigest()
    r = api.put(
        f"{proj}/runs/{run}/artifacts/dir/a.txt",
        content=data,
        headers={"x-shipyard-sha256": digest},
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"path": "dir/a.txt", "is_dir": False, "size": len(data), "digest": digest}
    got = api.get(f"{proj}/runs/{run}/artifacts/dir/a.txt")
    assert got.content == data
    assert got.headers["x-shipyard-sha256"] == digest
    # A declared digest that does not match the body stores nothing.
    other = b"other " + uuid.uuid4().bytes
    r = api.put(
        f"{proj}/runs/{run}/artifacts/dir/b.txt",
        content=other,
        headers={"x-shipyard-sha256": digest},
    )
    assert_error(r, 400, "INVALID_ARGUMENT", "digest")
    assert not server_store(server).exists(hashlib.sha256(other).hexdigest())
    listing = api.get(f"{proj}/runs/{run}/artifacts", params={"path": "dir"}).json()
    assert [a["path"] for a in listing["files"]] == ["dir/a.txt"]


# -- batches ------------------------------------------------------------------------------------


def test_same_batch_id_twice_is_applied_once(api, proj) -> None:
    run = _run(api, proj, _experiment(api, proj))
    body = {
        "metrics": [
            {"key": "loss", "value": 0.5, "step": 1, "timestamp": 1000},
            {"key": "loss", "value": 0.4, "step": 2, "timestamp": 2000},
        ],
        "params": [{"key": "lr", "value": "0.1"}],
        "batch_id": "retry-me",
    }
    first = api.post(f"{proj}/runs/{run}/batch", json=body)
    assert first.status_code == 200 and first.json() == {"applied": True}
    second = api.post(f"{proj}/runs/{run}/batch", json=body)
    assert second.status_code == 200 and second.json() == {"applied": False}
    hist = api.get(f"{proj}/runs/{run}/metrics/loss").json()
    assert hist["steps"] == [1, 2]
    assert hist["values"] == [0.5, 0.4]
    # The same batch id on another run is a different batch.
    run2 = _run(api, proj, api.get(f"{proj}/runs/{run}").json()["experiment_id"])
    assert api.post(f"{proj}/runs/{run2}/batch", json=body).json() == {"applied": True}


def test_distinct_long_batch_ids_are_not_confused(api, proj) -> None:
    """Two different batch ids of the maximum length sharing a long prefix are two batches."""
    run = _run(api, proj, _experiment(api, proj))
    prefix = "p" * 50
    for i, suffix in enumerate(["a" * 14, "b" * 14]):
        body = {
            "metrics": [{"key": "m", "value": float(i), "step": i, "timestamp": 1000 + i}],
            "batch_id": prefix + suffix,
        }
        assert api.post(f"{proj}/runs/{run}/batch", json=body).json() == {"applied": True}
    assert api.get(f"{proj}/runs/{run}/metrics/m").json()["steps"] == [0, 1]


def test_nan_travels_as_null(api, proj) -> None:
    run = _run(api, proj, _experiment(api, proj))
    body = {"metrics": [{"key": "m", "value": None, "step": 0, "timestamp": 1}]}
    assert api.post(f"{proj}/runs/{run}/batch", json=body).status_code == 200
    assert api.get(f"{proj}/runs/{run}/metrics/m").json()["values"] == [None]


# -- pagination ---------------------------------------------------------------------------------


def _all_pages(api: httpx.Client, path: str, page_size: int) -> list[list[str]]:
    pages, token = [], None
    while True:
        params: dict[str, object] = {"page_size": page_size}
        if token:
            params["page_token"] = token
        r = api.get(path, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([x["id"] for x in body["data"]])
        token = body["next_page_token"]
        if token is None:
            return pages
        assert len(pages) < 50, "pagination does not end"


def test_runs_pagination(api, proj) -> None:
    exp = _experiment(api, proj)
    ids = {_run(api, proj, exp) for _ in range(7)}
    pages = _all_pages(api, f"{proj}/runs", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat)) and set(flat) == ids
    # An exact multiple ends without an empty page.
    assert [len(p) for p in _all_pages(api, f"{proj}/runs", 7)] == [7]
    # include_count gives the total.
    r = api.get(f"{proj}/runs", params={"page_size": 2, "include_count": "true"}).json()
    assert r["count"] == 7 and len(r["data"]) == 2


def test_experiments_pagination(api, proj) -> None:
    ids = {_experiment(api, proj, f"e{i}") for i in range(5)}
    pages = _all_pages(api, f"{proj}/experiments", 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat)) and set(flat) == ids
    assert api.get(f"{proj}/experiments", params={"page_size": 2}).json()["count"] == 5


def test_projects_pagination(api) -> None:
    tag = uuid.uuid4().hex[:8]
    for i in range(3):
        assert api.post("/projects", json={"name": f"pg-{tag}-{i}"}).status_code == 201
    seen, token = [], None
    while True:
        params: dict[str, object] = {"page_size": 2}
        if token:
            params["page_token"] = token
        body = api.get("/projects", params=params).json()
        seen += [p["name"] for p in body["data"]]
        token = body["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert {f"pg-{tag}-{i}" for i in range(3)} <= set(seen)


@pytest.mark.parametrize("token", ["!!!", "bm90LWEtbnVtYmVy", "LTU", "%%%"])
def test_bad_page_token_is_400(api, proj, token: str) -> None:
    for path in (f"{proj}/runs", f"{proj}/experiments", "/projects"):
        r = api.get(path, params={"page_token": token})
        assert_error(r, 400, "INVALID_ARGUMENT", "page_token")
    r = api.post(f"{proj}/runs/search", json={"page_token": token})
    assert_error(r, 400, "INVALID_ARGUMENT", "page_token")


@pytest.mark.parametrize("size", [0, -1, 10_001, "ten"])
def test_bad_page_size_is_400(api, proj, size: object) -> None:
    r = api.get(f"{proj}/runs", params={"page_size": size})
    assert_error(r, 400, "INVALID_ARGUMENT", "page_size")


def test_bad_filter_is_400(api, proj) -> None:
    _experiment(api, proj)
    r = api.get(f"{proj}/runs", params={"filter": "metrics.loss <<< 3 and"})
    assert_error(r, 400, "INVALID_ARGUMENT")


# -- a cheap property check ----------------------------------------------------------------------


def test_random_bodies_never_give_a_500(api, proj) -> None:
    """Fuzz the JSON routes with well-formed but wrongly shaped bodies: 4xx, never 5xx."""
    import random

    rng = random.Random(1234)
    run = _run(api, proj, _experiment(api, proj))
    atoms: list[object] = [
        None,
        True,
        0,
        -1,
        2**70,
        1.5,
        float("1e308"),
        "",
        "x",
        "é" * 300,
        [],
        {},
        [1],
        {"a": 1},
    ]

    def value(depth: int = 0) -> object:
        if depth < 2 and rng.random() < 0.3:
            if rng.random() < 0.5:
                return [value(depth + 1) for _ in range(rng.randint(0, 3))]
            keys = ["key", "value", "step", "timestamp", "name", "metrics", "params", "tags", "z"]
            return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(0, 4))}
        return rng.choice(atoms)

    routes = [
        ("POST", f"{proj}/experiments"),
        ("POST", f"{proj}/runs"),
        ("POST", f"{proj}/runs/search"),
        ("POST", f"{proj}/runs/{run}/batch"),
        ("PATCH", f"{proj}/runs/{run}"),
    ]
    started = time.monotonic()
    for _ in range(150):
        method, path = rng.choice(routes)
        body = value()
        if method == "POST" and path.endswith("/batch") and rng.random() < 0.7:
            body = {
                "metrics": [
                    {"key": value(), "value": value(), "step": value(), "timestamp": value()}
                ]
            }
        r = api.request(method, path, json=body)
        assert r.status_code < 500, (method, path, body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"code", "message", "details"}
    assert time.monotonic() - started < 60
