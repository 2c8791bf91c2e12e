"""The SDK's endpoint calls, the same test on the in-process and the HTTP backend."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.core.errors import InvalidArgument, NotFound, Unavailable
from tests.serving.conftest import Models, Register

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_create_predict_update_and_delete(
    client: Any, services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    register(project, "fraud", models.pos, alias="champion")
    register(project, "fraud", models.neg)
    seen: list[str] = []
    ep = client.create_endpoint(
        "fraud",
        model="fraud@champion",
        batching={"max_batch_size": 32},
        progress=lambda e, elapsed: seen.append(e.status.value),
    )
    assert ep.status.value == "InService" and ep.url
    assert seen[0] == "Creating" and seen[-1] == "InService"
    assert (ep.batching.max_batch_size, ep.batching.max_wait_ms) == (32, 2.0)

    fraud = client.endpoint("fraud")
    row = models.row()
    assert fraud.predict(row).tolist() == [1]
    assert fraud.predict(row.to_dict(orient="records")).tolist() == [1]
    assert fraud.predict(row.to_csv(index=False)).tolist() == [1]
    assert fraud.predict(row.values).tolist() == [1]
    with pytest.raises(InvalidArgument) as missing:
        fraud.predict(row.drop(columns=["f1"]))
    assert "f1" in missing.value.message

    # A partial setting keeps the rest; a new model version is served at once.
    ep = client.update_endpoint("fraud", batching={"max_wait_ms": 1})
    assert (ep.batching.max_batch_size, ep.batching.max_wait_ms) == (32, 1.0)
    ep = client.update_endpoint("fraud", "fraud/2")
    assert ep.deployment == 3 and ep.variants[0].model_version == "2"
    assert fraud.predict(row).tolist() == [0]
    assert [e.name for e in client.list_endpoints().data] == ["fraud"]
    assert [d.number for d in client.list_endpoint_deployments("fraud").data] == [3, 2, 1]

    stopped = client.stop_endpoint("fraud")
    assert stopped.status.value == "Stopped" and stopped.url is None
    with pytest.raises(Unavailable):
        fraud.predict(row)
    ep = client.start_endpoint("fraud")
    assert ep.status.value == "InService" and ep.variants[0].model_version == "2"
    assert client.endpoint("fraud").predict(row).tolist() == [0]

    client.delete_endpoint("fraud")
    with pytest.raises(NotFound):
        client.get_endpoint("fraud")


def test_an_endpoint_that_fails_to_start_raises_with_the_reason(
    client: Any, services: Any, project: str, register: Register, models: Models, reap: None
) -> None:
    register(project, "fraud", models.pos)
    folder = services.models.resolve(project, "models:/fraud/1").local_path
    next(p for p in folder.iterdir() if p.name.startswith("model.")).write_bytes(b"x")
    with pytest.raises(Unavailable) as err:
        client.create_endpoint("fraud", model="fraud/1")
    assert "failed to start" in err.value.message and "sha256" in err.value.message
    assert client.get_endpoint("fraud").status.value == "Failed"
