"""Batch transform, for real: shards run as subprocesses through the ``LocalExecutor``, over CSV
and Parquet files made here, with the model from the registry; stop, resume and a coordinator
that dies, on SQLite and PostgreSQL, in-process and over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from shipyard.core.artifacts import sha256_file
from shipyard.core.errors import InvalidArgument
from shipyard.inference.schemas import BatchJobCreate
from tests.conftest import ServerThread, make_settings
from tests.inference.conftest import (
    FEATURES,
    Registered,
    make_frame,
    read_output,
    register,
    slow_predictions,
)
from tests.server.conftest import assert_error


def wait_until(fn: Any, timeout_s: float = 90.0, poll_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll_s)


def shards_done(get: Any, n: int) -> Any:
    """Wait until ``n`` shards of the job succeeded; fail at once if the job ended first."""

    def check() -> Any:
        job = get()
        assert not job.status.final, (job.status, job.error, job.shards)
        return job if job.progress.shards_done >= n else None

    return wait_until(check)


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name.startswith("part-")}


def assert_predictions(out: pd.DataFrame, src: pd.DataFrame, loaded: Any) -> None:
    expected = loaded.predict(src[FEATURES])
    assert len(out) == len(src)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)


@pytest.fixture(params=[("local", "sqlite"), ("http", "postgres")])
def batch_client(
    request: pytest.FixtureRequest, sqlite_home: Path, project: str, slow_model_dir: Path
) -> Iterator[Any]:
    """A client and its services on two representative set-ups (the full 2 x 2 matrix runs in
    ``test_batch_transform_predicts_every_row_like_the_model``)."""
    from shipyard.sdk.client import Client
    from shipyard.server.app import create_app
    from shipyard.server.context import Services

    kind, db = request.param
    url = (
        f"sqlite:///{sqlite_home / 'shipyard.db'}"
        if db == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    services = Services.from_settings(make_settings(sqlite_home, url))
    try:
        register(services, project, slow_model_dir, name="slow")
        if kind == "local":
            from shipyard.sdk.local import LocalBackend

            yield Client(project=project, backend=LocalBackend(services))
        else:
            from shipyard.sdk.http import HttpBackend

            with ServerThread(create_app(services)) as srv:
                backend = HttpBackend(srv.url, retry_for_s=5)
                yield Client(project=project, backend=backend)
                backend.close()
    finally:
        services.close()


# -- the happy paths ----------------------------------------------------------------------------


def test_batch_transform_predicts_every_row_like_the_model(
    client: Any, churn: Registered, loaded: Any, tmp_path: Path
) -> None:
    src = make_frame(1200)
    src.to_csv(tmp_path / "customers.csv", index=False)
    seen: list[Any] = []
    job = client.batch_transform(
        churn.ref,
        tmp_path / "customers.csv",
        tmp_path / "scored",
        shards=3,
        join_columns=["id", "region"],
        on_progress=seen.append,
        timeout_s=120,
    )
    assert job.status == "SUCCEEDED", job.error
    assert (job.model, job.model_name, job.model_version) == (
        "models:/churn@champion",
        "churn",
        "1",
    )
    assert job.input_format == "csv" and job.format == "parquet"

    out = read_output(tmp_path / "scored")
    assert list(out.columns) == ["id", "region", "prediction"]
    assert out["id"].tolist() == src["id"].tolist()  # every row once, in input order
    assert out["region"].tolist() == src["region"].tolist()  # quoted newlines survived
    assert_predictions(out, src, loaded)

    names = sorted(p.name for p in (tmp_path / "scored").iterdir())
    assert names == [
        "_manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    manifest = json.loads((tmp_path / "scored" / "_manifest.json").read_text())
    assert manifest["job_id"] == job.id and manifest["rows"] == 1200
    assert manifest["model"] == {"uri": "models:/churn@champion", "name": "churn", "version": "1"}
    assert manifest["columns"] == ["id", "region", "prediction"]
    for f in manifest["files"]:
        assert sha256_file(tmp_path / "scored" / f["file"]) == (f["sha256"], f["bytes"])
    assert sum(f["rows"] for f in manifest["files"]) == 1200
    assert job.manifest == str(tmp_path / "scored" / "_manifest.json")

    # Progress was visible while it ran, and only ever went forward.
    assert any(j.status in ("PENDING", "RUNNING") and j.progress.shards_done < 3 for j in seen)
    done = [j.progress.shards_done for j in seen]
    assert done == sorted(done) and done[-1] == 3
    p = job.progress
    assert (p.shards_total, p.shards_done, p.rows_total, p.rows_done) == (3, 3, 1200, 1200)
    assert p.fraction == 1.0 and p.rows_per_s is not None and p.rows_per_s > 0

    full = client.get_batch_job(job.id)
    assert [s.attempts for s in full.shards] == [1, 1, 1]
    assert sum(s.rows for s in full.shards) == 1200
    assert all(Path(s.log_path).is_file() for s in full.shards)
    listed = client.list_batch_jobs()
    assert [j.id for j in listed.data] == [job.id] and listed.data[0].shards is None
    assert client.list_batch_jobs(status="FAILED").data == []


def test_parquet_in_csv_out_with_every_input_column_joined(
    services: Any, project: str, churn: Registered, loaded: Any, tmp_path: Path
) -> None:
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    client = Client(project=project, backend=LocalBackend(services))
    src = make_frame(500)
    src.to_parquet(tmp_path / "in.parquet", row_group_size=64)
    job = client.batch_transform(
        f"models:/churn/{churn.version}",
        tmp_path / "in.parquet",
        tmp_path / "out",
        shards=2,
        join_all=True,
        format="csv",
        timeout_s=120,
    )
    assert job.status == "SUCCEEDED", job.error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_manifest.json",
        "part-00000.csv",
        "part-00001.csv",
    ]
    out = read_output(tmp_path / "out", "csv")
    assert list(out.columns) == [*src.columns, "prediction"]
    pd.testing.assert_frame_equal(out[src.columns], src, check_dtype=False)
    assert_predictions(out, src, loaded)


# -- stop, resume, failure ------------------------------------------------------------------------


def test_stop_mid_job_then_resume_redoes_only_unfinished_shards(
    batch_client: Any, tmp_path: Path
) -> None:
    c = batch_client
    src = make_frame(1000)
    src.to_parquet(tmp_path / "in.parquet")
    job = c.batch_transform(
        "slow@champion",
        tmp_path / "in.parquet",
        tmp_path / "out",
        shards=5,
        parallelism=1,
        join_columns=["id"],
        trust_code=True,
        wait=False,
    )
    shards_done(lambda: c.get_batch_job(job.id), 1)
    stopped = c.stop_batch_job(job.id)
    assert stopped.status == "STOPPED"
    done_before = {s.index for s in stopped.shards if s.status == "SUCCEEDED"}
    assert 1 <= len(done_before) < 5
    assert {s.status for s in stopped.shards} <= {"SUCCEEDED", "PENDING"}  # nothing left running
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"part-{i:05d}.parquet" for i in sorted(done_before)]  # no temp, no manifest
    before = mtimes(tmp_path / "out")
    attempts_before = {s.index: s.attempts for s in stopped.shards}
    assert c.stop_batch_job(job.id).status == "STOPPED"  # stopping again is harmless

    resumed = c.resume_batch_job(job.id, timeout_s=120)
    assert resumed.status == "SUCCEEDED", resumed.error
    after = {s.index: s for s in resumed.shards}
    for i in done_before:  # finished shards were not run again
        assert after[i].attempts == 1
        assert mtimes(tmp_path / "out")[f"part-{i:05d}.parquet"] == before[f"part-{i:05d}.parquet"]
    for i in set(range(5)) - done_before:
        assert after[i].attempts == attempts_before[i] + 1
    out = read_output(tmp_path / "out")
    assert out["id"].tolist() == src["id"].tolist()
    np.testing.assert_array_equal(out["prediction"], slow_predictions(src))
    assert resumed.progress.rows_done == 1000

    with pytest.raises(Exception, match="already succeeded") as info:
        c.resume_batch_job(job.id)
    assert type(info.value).__name__ == "Conflict"


def test_a_failed_shard_is_redone_on_resume_and_the_others_are_not(
    services: Any, project: str, churn: Registered, loaded: Any, tmp_path: Path
) -> None:
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    client = Client(project=project, backend=LocalBackend(services))
    src = make_frame(400)
    bad = src.copy()
    bad.loc[350, "f2"] = np.nan  # the model cannot take a NaN: the last shard fails
    bad.to_parquet(tmp_path / "in.parquet")
    job = client.batch_transform(
        churn.ref, tmp_path / "in.parquet", tmp_path / "out", shards=4, timeout_s=120
    )
    assert job.status == "FAILED"
    assert job.error.startswith("1 of 4 shards failed; shard 3: ValueError: Input X contains NaN")
    assert "shipyard batch resume" in job.error
    shards = {s.index: s for s in job.shards}
    assert [shards[i].status for i in range(4)] == ["SUCCEEDED"] * 3 + ["FAILED"]
    assert "Input X contains NaN" in Path(shards[3].log_path).read_text()  # the user's traceback
    assert not (tmp_path / "out" / "_manifest.json").exists()
    before = mtimes(tmp_path / "out")
    assert sorted(before) == [f"part-{i:05d}.parquet" for i in range(3)]

    src.to_parquet(tmp_path / "in.parquet")  # the data is fixed; the same rows, the same shards
    resumed = client.resume_batch_job(job.id, timeout_s=120)
    assert resumed.status == "SUCCEEDED", resumed.error
    assert [s.attempts for s in resumed.shards] == [1, 1, 1, 2]
    after = mtimes(tmp_path / "out")
    assert all(after[k] == v for k, v in before.items())
    assert_predictions(read_output(tmp_path / "out"), src, loaded)


def test_a_job_whose_process_died_is_failed_then_resumed(
    services: Any,
    db_url: str,
    sqlite_home: Path,
    project: str,
    slow_model_dir: Path,
    tmp_path: Path,
) -> None:
    """The process driving a job is killed (SIGKILL): its shard processes end with it, the job
    is FAILED once its lease runs out, and another process resumes it."""
    register(services, project, slow_model_dir, name="slow")
    make_frame(600).to_parquet(tmp_path / "in.parquet")
    script = textwrap.dedent(
        f"""
        import time
        from shipyard.core.settings import Settings
        from shipyard.inference.schemas import BatchJobCreate
        from shipyard.server.context import Services
        s = Services.from_settings(Settings(home={str(sqlite_home)!r}, database_url={db_url!r},
                                            artifact_root={str(sqlite_home / "artifacts")!r}))
        s.batch.lease_ms = 1500
        job = s.batch.create_job({project!r}, BatchJobCreate(
            model="slow@champion", input={str(tmp_path / "in.parquet")!r},
            output={str(tmp_path / "out")!r}, shards=4, parallelism=1, trust_code=True))
        print(job.id, flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        job_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert job_id, "the coordinator process did not start the job"
        shards_done(lambda: services.batch.get_job(project, job_id), 1)

        def one_running() -> Any:
            j = services.batch.get_job(project, job_id)
            return j if any(s.status == "RUNNING" for s in j.shards) else None

        job = wait_until(one_running)
        running = next(s for s in job.shards if s.status == "RUNNING")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()

    failed = wait_until(
        lambda: (j := services.batch.get_job(project, job_id)).status == "FAILED" and j,
        timeout_s=30,
    )
    assert "stopped answering" in failed.error
    shards = {s.index: s for s in failed.shards}
    assert shards[running.index].status == "FAILED"
    done_before = {i for i, s in shards.items() if s.status == "SUCCEEDED"}
    before = mtimes(tmp_path / "out")
    time.sleep(1.0)  # an orphaned shard (0.4 s a call) would have written by now: none may
    assert mtimes(tmp_path / "out") == before

    resumed = services.batch.resume_job(project, job_id)
    assert resumed.status in ("PENDING", "RUNNING")
    final = wait_until(
        lambda: (j := services.batch.get_job(project, job_id)).status.final and j, timeout_s=120
    )
    assert final.status == "SUCCEEDED", final.error
    for s in final.shards:
        assert s.attempts == (1 if s.index in done_before else shards[s.index].attempts + 1)
    assert all(mtimes(tmp_path / "out")[k] == v for k, v in before.items())


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_create_refuses_bad_requests_naming_the_field(
    server: ServerThread, services: Any, project: str, churn: Registered, tmp_path: Path
) -> None:
    src = make_frame(50)
    src.to_csv(tmp_path / "ok.csv", index=False)
    src.drop(columns=["f2"]).to_csv(tmp_path / "no_f2.csv", index=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("not ours")
    base = {
        "model": "churn@champion",
        "input": str(tmp_path / "ok.csv"),
        "output": str(tmp_path / "o"),
    }

    with httpx.Client(base_url=f"{server.url}/api/v1/projects/{project}", timeout=30) as api:

        def post(**overrides: Any) -> httpx.Response:
            return api.post("/batch-jobs", json={**base, **overrides})

        err = assert_error(
            post(input=str(tmp_path / "missing.csv")), 400, "INVALID_ARGUMENT", "input"
        )
        assert "no such file" in err["message"]
        err = assert_error(
            post(input=str(tmp_path / "no_f2.csv")), 400, "INVALID_ARGUMENT", "input"
        )
        assert "'f2'" in err["message"]
        err = assert_error(
            post(join_columns=["id", "nope"]), 400, "INVALID_ARGUMENT", "join_columns"
        )
        assert "'nope'" in err["message"]
        assert_error(post(join_columns=["id"], join_all=True), 400, "INVALID_ARGUMENT")
        err = assert_error(post(output=str(tmp_path / "full")), 400, "INVALID_ARGUMENT", "output")
        assert "not empty" in err["message"]
        assert_error(post(input="relative/ok.csv"), 400, "INVALID_ARGUMENT", "input")
        assert_error(post(format="xlsx"), 400, "INVALID_ARGUMENT", "format")
        assert_error(post(shards=0), 400, "INVALID_ARGUMENT", "shards")
        assert_error(post(model="ghost@champion"), 404, "NOT_FOUND")
        assert_error(post(model="churn@nobody"), 404, "NOT_FOUND")
        assert_error(api.get("/batch-jobs/nosuchjob"), 404, "NOT_FOUND")
        assert_error(api.post("/batch-jobs/nosuchjob/resume"), 404, "NOT_FOUND")
        assert (tmp_path / "full" / "keep.txt").exists()
        assert api.get("/batch-jobs").json()["data"] == []  # nothing was recorded

        # A retried create with the same idempotency key is one job.
        r1 = post(idempotency_key="k-1", shards=2)
        r2 = post(idempotency_key="k-1", shards=2)
        assert r1.status_code == r2.status_code == 201, r1.text
        assert r1.json()["id"] == r2.json()["id"]
        job_id = r1.json()["id"]
        busy = post(output=str(tmp_path / "o"), overwrite=True)  # the same folder, while it runs
        if busy.status_code != 201:  # unless the job already finished
            assert_error(busy, 409, "CONFLICT", "output")
        services.batch.wait_idle(120)
        assert api.get(f"/batch-jobs/{job_id}").json()["status"] == "SUCCEEDED"
        assert_error(api.post(f"/batch-jobs/{job_id}/stop"), 409, "CONFLICT")
        assert_error(api.post(f"/batch-jobs/{job_id}/resume"), 409, "CONFLICT")
        assert api.delete(f"/batch-jobs/{job_id}").status_code == 204
        assert_error(api.get(f"/batch-jobs/{job_id}"), 404, "NOT_FOUND")
        assert (tmp_path / "o" / "_manifest.json").exists()  # deleting a job keeps its files


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_with_auth_on_paths_stay_inside_the_project_batch_folder(
    sqlite_home: Path, db_url: str, project: str, model_dir: Path, loaded: Any, tmp_path: Path
) -> None:
    from shipyard.server.context import Services

    services = Services.from_settings(make_settings(sqlite_home, db_url, auth=True))
    try:
        register(services, project, model_dir)
        root = services.batch.data_root(project)
        root.mkdir(parents=True, exist_ok=True)
        src = make_frame(100)
        src.to_csv(root / "in.csv", index=False)
        outside = tmp_path / "outside.csv"
        src.to_csv(outside, index=False)

        def create(**kw: Any) -> Any:
            body = {"model": "churn@champion", "input": "in.csv", "output": "out", **kw}
            return services.batch.create_job(project, BatchJobCreate(**body))

        for bad in (str(outside), "../other-project/in.csv", "/etc/hosts"):
            with pytest.raises(InvalidArgument, match="^input: must be inside") as info:
                create(input=bad)
            assert info.value.details["field"] == "input"
        with pytest.raises(InvalidArgument, match="^output: must be inside"):
            create(output=str(tmp_path / "out"))
        with pytest.raises(InvalidArgument, match="^model: expected models:/"):
            create(model=str(model_dir))  # a folder on the server is not the caller's to load

        job = create(shards=2)  # relative paths are taken inside the project's folder
        assert job.input == str((root / "in.csv").resolve())
        services.batch.wait_idle(120)
        done = services.batch.get_job(project, job.id)
        assert done.status == "SUCCEEDED", done.error
        assert_predictions(read_output(root / "out"), src, loaded)
    finally:
        services.close()


def test_a_model_folder_path_works_when_auth_is_off(
    services: Any, project: str, model_dir: Path, loaded: Any, tmp_path: Path
) -> None:
    services.projects.ensure_project(project)
    src = make_frame(80)
    src.to_csv(tmp_path / "in.csv", index=False)
    job = services.batch.create_job(
        project,
        BatchJobCreate(
            model=str(model_dir),
            input=str(tmp_path / "in.csv"),
            output=str(tmp_path / "o"),
            shards=1,
        ),
    )
    assert job.model == str(model_dir) and job.model_name is None
    services.batch.wait_idle(120)
    assert services.batch.get_job(project, job.id).status == "SUCCEEDED"
    assert_predictions(read_output(tmp_path / "o"), src, loaded)
    assert os.listdir(tmp_path / "o")  # sanity: the folder has the results
