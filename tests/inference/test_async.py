"""Asynchronous inference: an id at once, the answer (or the error naming the column) later; on
both backends and both databases, and answered even when the process that accepted it died."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.inference.schemas import AsyncInferenceCreate
from tests.conftest import ServerThread
from tests.inference.conftest import FEATURES, Registered, make_frame
from tests.server.conftest import assert_error


def test_submit_returns_at_once_and_the_answer_matches_predict(
    client: Any, churn: Registered, loaded: Any
) -> None:
    df = make_frame(25)
    payload = {
        "dataframe_split": {
            "columns": FEATURES,
            "data": df[FEATURES].to_numpy().tolist(),
        }
    }
    req = client.submit_async(churn.ref, payload)
    assert req.status in ("QUEUED", "RUNNING", "SUCCEEDED")
    assert len(req.id) == 16 and req.result is None
    assert (req.model, req.model_name, req.model_version) == ("models:/churn/1", "churn", "1")

    done = client.wait_async(req.id, timeout_s=60)
    assert done.status == "SUCCEEDED", done.error
    assert done.error is None and done.rows == 25
    assert done.result["outputs"] == ["prediction"]
    np.testing.assert_array_equal(done.result["predictions"], loaded.predict(df[FEATURES]))
    assert done.started_at is not None and done.finished_at >= done.started_at

    # Other request shapes, one after another, through the same cached model.
    records = client.submit_async(churn.ref, {"dataframe_records": df[FEATURES].to_dict("records")})
    csv = client.submit_async(churn.ref, df[FEATURES].to_csv(index=False))
    frame = client.submit_async(churn.ref, df[FEATURES])
    for r in (records, csv, frame):
        got = client.wait_async(r.id, timeout_s=60)
        assert got.status == "SUCCEEDED", got.error
        np.testing.assert_array_equal(got.result["predictions"], done.result["predictions"])


def test_a_bad_payload_fails_with_the_column_named(client: Any, churn: Registered) -> None:
    df = make_frame(3)[FEATURES]
    missing = client.submit_async(
        churn.ref, {"dataframe_records": df.drop(columns=["f2"]).to_dict("records")}
    )
    wrong = df.astype(object)
    wrong.loc[1, "f3"] = "high"
    wrong_type = client.submit_async(churn.ref, {"dataframe_records": wrong.to_dict("records")})
    shapeless = client.submit_async(churn.ref, {"rows": [1, 2]})

    got = client.wait_async(missing.id, timeout_s=60)
    assert got.status == "FAILED" and got.result is None
    assert got.error.code == "INVALID_ARGUMENT"
    assert got.error.details["field"] == "f2"
    assert "f2" in got.error.message

    got = client.wait_async(wrong_type.id, timeout_s=60)
    assert got.status == "FAILED"
    assert got.error.details["field"] == "f3"
    assert got.error.message.startswith("f3: expected double")

    got = client.wait_async(shapeless.id, timeout_s=60)
    assert got.status == "FAILED" and "dataframe_split" in got.error.message


def test_unknown_models_and_ids_are_refused_at_once(client: Any, churn: Registered) -> None:
    with pytest.raises(NotFound):
        client.submit_async("ghost@champion", {"instances": [[1, 2, 3, 4]]})
    with pytest.raises(NotFound):
        client.submit_async("churn/7", {"instances": [[1, 2, 3, 4]]})
    with pytest.raises(NotFound):
        client.get_async("0000000000000000")
    with pytest.raises(InvalidArgument, match="model"):
        client.submit_async("", {"instances": [[1, 2, 3, 4]]})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_rest_api_answers_202_then_the_result(
    server: ServerThread, churn: Registered, project: str, loaded: Any
) -> None:
    df = make_frame(4)[FEATURES]
    with httpx.Client(base_url=f"{server.url}/api/v1/projects/{project}", timeout=30) as api:
        r = api.post(
            "/async-inference",
            json={"model": "churn@champion", "payload": {"instances": df.to_numpy().tolist()}},
        )
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        deadline = time.monotonic() + 60
        while (body := api.get(f"/async-inference/{rid}").json())["status"] in (
            "QUEUED",
            "RUNNING",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert body["status"] == "SUCCEEDED", body
        assert body["result"]["predictions"] == loaded.predict(df).tolist()

        # A retried submission with the same idempotency key is answered once.
        first = api.post(
            "/async-inference",
            json={
                "model": "churn@champion",
                "payload": {"instances": [[0, 0, 0, 0]]},
                "idempotency_key": "a1",
            },
        )
        again = api.post(
            "/async-inference",
            json={
                "model": "churn@champion",
                "payload": {"instances": [[0, 0, 0, 0]]},
                "idempotency_key": "a1",
            },
        )
        assert first.json()["id"] == again.json()["id"]
        listed = api.get("/async-inference").json()["data"]
        assert sorted(x["id"] for x in listed) == sorted([rid, first.json()["id"]])
        assert all(x["result"] is None for x in listed)  # results only on the request itself

        assert_error(
            api.post("/async-inference", json={"payload": {}}), 400, "INVALID_ARGUMENT", "model"
        )
        assert_error(
            api.post("/async-inference", json={"model": "churn@champion"}),
            400,
            "INVALID_ARGUMENT",
            "payload",
        )
        assert_error(
            api.post("/async-inference", json={"model": "ghost@x", "payload": {}}), 404, "NOT_FOUND"
        )
        assert_error(api.get("/async-inference/nope"), 404, "NOT_FOUND")
        assert api.delete(f"/async-inference/{rid}").status_code == 204
        assert_error(api.get(f"/async-inference/{rid}"), 404, "NOT_FOUND")


def test_a_request_accepted_by_a_process_that_died_is_still_answered(
    services: Any, project: str, churn: Registered, loaded: Any, tmp_path: Path
) -> None:
    """A request recorded by a process that stopped before answering (here: a service whose
    workers are shut down, with a short lease) is answered by the next process that looks."""
    from shipyard.inference.asynchronous import AsyncInferenceService
    from shipyard.inference.resolve import ModelCache

    dead = AsyncInferenceService(
        services.db,
        services.store,
        services.projects,
        services.async_inference.resolver,
        ModelCache(),
        queued_lease_s=0.3,
    )
    dead.shutdown()  # it accepts, records, and never works
    df = make_frame(6)[FEATURES]
    req = dead.submit(
        project,
        AsyncInferenceCreate(model=churn.ref, payload={"instances": df.to_numpy().tolist()}),
    )
    time.sleep(0.5)
    assert dead.get(project, req.id).status == "QUEUED"

    alive = AsyncInferenceService(
        services.db,
        services.store,
        services.projects,
        services.async_inference.resolver,
        ModelCache(),
    )
    try:
        alive.get(project, req.id)  # a look starts its workers, whose sweep takes the request
        deadline = time.monotonic() + 60
        while (got := alive.get(project, req.id)).status != "SUCCEEDED":
            assert got.status != "FAILED", got.error
            assert time.monotonic() < deadline
            time.sleep(0.05)
        np.testing.assert_array_equal(got.result["predictions"], loaded.predict(df))
    finally:
        alive.shutdown()
