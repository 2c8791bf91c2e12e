"""Captured requests reach the artifact store when it is S3 (a real ``moto_server``): the
runtime writes under SHIPYARD_HOME, the control plane moves each complete file into the store."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.conftest import make_settings
from tests.core.test_artifacts import BUCKET, moto, s3fs  # noqa: F401  (the fixture)
from tests.serving.conftest import Models, register_model, wait_in_service


def test_captured_requests_land_in_an_s3_store(
    moto: dict[str, Any],  # noqa: F811
    tmp_path: Path,
    db_url: str,
    project: str,
    models: Models,
) -> None:
    from shipyard.server.context import Services
    from shipyard.serving.schemas import EndpointCreate

    prefix = uuid.uuid4().hex
    settings = make_settings(tmp_path / "home", db_url, artifact_storage_options=moto)
    settings.artifact_root = f"s3://{BUCKET}/{prefix}"
    services = Services.from_settings(settings)
    svc = services.endpoints
    try:
        register_model(services, project, "fraud", models.pos, models.X.head(5), tmp_path / "m")
        svc.create(
            project,
            EndpointCreate.model_validate(
                {"name": "fraud", "model": "fraud/1", "capture": {"sample_rate": 1.0}}
            ),
        )
        ep = wait_in_service(svc, project, "fraud")
        row = models.row()
        body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
        for _ in range(3):
            assert httpx.post(f"{ep.url}/invocations", json=body).status_code == 200
        svc.stop(project, "fraud")  # the runtime closes its capture file on the way out
        # The supervisor moves complete files every few seconds; a call does it at once.
        svc.ship_captures()
        keys = services.store.list_named(f"capture/{project}/fraud")
        assert len(keys) == 1 and keys[0].endswith(".jsonl"), keys
        lines = services.store.read_named(keys[0]).splitlines()
        records = [orjson.loads(x) for x in lines]
        assert len(records) == 3
        assert {r["endpoint"] for r in records} == {"fraud"}
        assert all(r["response"] == {"predictions": [1]} for r in records)
        # Moved, not copied: nothing complete is left behind, and a second pass moves nothing.
        assert not list((settings.home / "capture").rglob("*.jsonl"))
        assert svc.ship_captures() == 0
        # It is where a reader of the bucket expects it.
        fs = s3fs(moto)
        assert fs.exists(f"{BUCKET}/{prefix}/{keys[0]}")
    finally:
        for e in svc.list(project, with_stats=False).data:
            svc.delete(project, e.name)
        services.close()
