"""Fault injection: what a user relies on when things go wrong at the worst moment.

- Two processes logging to one embedded SQLite store at the same moment lose nothing and never
  see "database is locked".
- A server killed with SIGKILL while the SDK is flushing metrics, then restarted on the same
  port and store: every point logged is stored exactly once (retries carry the batch id).
- A batch posted twice with the same batch id is stored once.

(The PostgreSQL server becoming unreachable is out of scope here.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

# One writer: made by the test, run in its own interpreter. Both writers wait for the barrier
# file, then create the same experiment, their runs, params, tags and metrics in small batches.
WRITER = r"""
import json, sys, time
from pathlib import Path

home, barrier, me, n_runs, n_steps, every = sys.argv[1:7]
n_runs, n_steps, every = int(n_runs), int(n_steps), int(every)
Path(barrier + "." + me).touch()                       # "I am ready"
while not Path(barrier).exists():
    time.sleep(0.001)

import shipyard as sy
from shipyard.core.settings import Settings
from shipyard.sdk.client import Client
from shipyard.sdk.local import LocalBackend

client = Client(project="shared", backend=LocalBackend(settings=Settings(home=Path(home))))
sy.init(client=client)
out = []
for r in range(n_runs):
    with sy.start_run(experiment="together", name=f"{me}-{r}") as run:
        run.log_params({"writer": me, "run": r})
        for step in range(n_steps):
            sy.log_metric("loss", 1.0 / (step + 1), step=step)
            if step % every == every - 1:
                sy.flush()                              # one small transaction per batch
                run.set_tag("progress", step)
        client.backend.log_batch(
            client.project, run.id, params=[("done", "yes")], tags=[("writer", me)]
        )
        out.append(run.id)
print(json.dumps(out))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(extra)
    return env


def test_two_processes_log_to_one_sqlite_store_at_once(tmp_path: Path) -> None:
    home = tmp_path / "home"  # fresh: both processes also race to create the schema
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    barrier = tmp_path / "go"
    n_runs, n_steps, every = 2, 10_000, 100  # 20,000 points each, in 200 batches
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(home),
                str(barrier),
                me,
                str(n_runs),
                str(n_steps),
                str(every),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_clean_env(),
        )
        for me in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(Path(f"{barrier}.{me}").exists() for me in ("a", "b")):
            assert time.monotonic() < deadline, "writers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        barrier.touch()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    for p, (out, err) in zip(procs, results, strict=True):
        assert "database is locked" not in out + err, err
        assert p.returncode == 0, err
    run_ids = [rid for out, _ in results for rid in json.loads(out.strip().splitlines()[-1])]
    assert len(set(run_ids)) == 2 * n_runs

    from shipyard.core.settings import Settings
    from shipyard.sdk.client import Client
    from shipyard.sdk.local import LocalBackend

    backend = LocalBackend(settings=Settings(home=home))
    try:
        client = Client(project="shared", backend=backend)
        exps = client.list_experiments().data
        assert [e.name for e in exps] == ["together"]  # one experiment, not one per writer
        found = client.search_runs(["together"], page_size=100)
        assert sorted(r.id for r in found.data) == sorted(run_ids)
        for run in found.data:
            writer = run.name.split("-")[0]
            h = client.get_metric_history(run.id, "loss")
            assert h.steps == list(range(n_steps))  # every point, once, in order
            assert h.values[-1] == pytest.approx(1.0 / n_steps)
            assert run.params == {"writer": writer, "run": run.name.split("-")[1], "done": "yes"}
            assert run.tags["writer"] == writer
            assert run.tags["progress"] == str(n_steps - 1)
            assert run.metrics["loss"].step == n_steps - 1
            assert run.status.value == "FINISHED"
    finally:
        backend.services.close()


class ServerProcess:
    """``shipyard server`` in its own process, so it can be killed with SIGKILL."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shipyard.cli.main", "server", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_clean_env(SHIPYARD_HOME=str(self.home)),
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start: " + self.log.read_text()
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


# The SDK's buffer sends metric-only batches column by column to ``.../metrics``; batches
# with params or tags go to ``.../batch``.
BATCH_PATHS = ("/batch", "/metrics")


@pytest.fixture
def server_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = ServerProcess(tmp_path / "server-home", free_port())
    srv.start()
    yield srv
    srv.stop()


def test_server_killed_mid_flush_loses_and_duplicates_nothing(server_process) -> None:  # type: ignore[no-untyped-def]
    import shipyard as sy
    from shipyard.sdk.client import Client
    from shipyard.sdk.http import HttpBackend

    n = 200_000
    backend = HttpBackend(server_process.url, retry_for_s=60)
    client = Client(project="faults", backend=backend)
    sy.init(client=client)
    run = sy.start_run(experiment="kill", name="survivor")
    failure: list[BaseException] = []

    def train() -> None:
        try:
            for step in range(n):
                sy.log_metric("loss", step * 0.5, step=step)
        except BaseException as exc:  # reported by the test below
            failure.append(exc)

    # Watch the SDK's batch requests through httpx's event hooks, to kill the server while one
    # is in flight (sent, not yet answered), not while the client sleeps between retries.
    batches = {"in_flight": False, "answered": 0}

    def sent(request: httpx.Request) -> None:
        if request.url.path.endswith(BATCH_PATHS):
            batches["in_flight"] = True

    def answered(response: httpx.Response) -> None:
        if response.request.url.path.endswith(BATCH_PATHS):
            batches["in_flight"] = False
            batches["answered"] += 1

    backend.http.event_hooks = {"request": [sent], "response": [answered]}
    trainer = threading.Thread(target=train)
    trainer.start()
    kills = 0
    try:
        for _ in range(2):
            # A batch answered since the last restart, then the next one in flight: kill -9.
            wait_for = batches["answered"] + 2
            deadline = time.monotonic() + 60
            while not (batches["answered"] >= wait_for and batches["in_flight"]):
                assert time.monotonic() < deadline, f"no batch in flight to interrupt: {batches}"
                assert not failure, failure
                time.sleep(0.001)
            server_process.kill()
            kills += 1
            time.sleep(0.2)  # the client now meets a refused connection and keeps retrying
            server_process.start()
        trainer.join(timeout=120)
        assert not trainer.is_alive()
        assert not failure, failure
        sy.flush()
        run.end()
    finally:
        while sy.active_run() is not None:
            sy.end_run()
    assert kills == 2

    h = client.get_metric_history(run.id, "loss")
    assert len(h.steps) == n  # no loss and no duplicates
    assert h.steps == list(range(n))
    assert h.values[123_457] == 123_457 * 0.5
    stored = client.get_run(run.id)
    assert stored.metrics["loss"].step == n - 1
    assert stored.status.value == "FINISHED"
    # Leave the module as a fresh interpreter has it, not bound to a server about to stop.
    from shipyard.sdk import fluent

    if fluent._buffer is not None:
        fluent._buffer.close()
    fluent._client = fluent._buffer = None
    backend.close()


def test_same_batch_id_posted_twice_is_stored_once(server, project) -> None:  # type: ignore[no-untyped-def]
    base = f"{server.url}/api/v1/projects/{project}"
    with httpx.Client(timeout=30) as http:
        assert http.post(f"{server.url}/api/v1/projects", json={"name": project}).status_code == 201
        exp = http.post(f"{base}/experiments", json={"name": "retries"}).json()
        run_ids = [
            http.post(f"{base}/runs", json={"experiment_id": exp["id"]}).json()["id"]
            for _ in range(2)
        ]
        batch_id = uuid.uuid4().hex
        body = {
            "metrics": [
                {"key": "acc", "value": i / 10, "step": i, "timestamp": 1_700_000_000_000 + i}
                for i in range(50)
            ],
            "params": [{"key": "lr", "value": "0.1"}],
            "tags": [{"key": "stage", "value": "first"}],
            "batch_id": batch_id,
        }
        first = http.post(f"{base}/runs/{run_ids[0]}/batch", json=body)
        assert first.status_code == 200 and first.json() == {"applied": True}
        retry = http.post(f"{base}/runs/{run_ids[0]}/batch", json=body)
        assert retry.status_code == 200 and retry.json() == {"applied": False}
        # The id is the client's for this run: another run may use the same one.
        other = http.post(f"{base}/runs/{run_ids[1]}/batch", json=body)
        assert other.json() == {"applied": True}
        # A new id is a new batch, stored again.
        again = http.post(
            f"{base}/runs/{run_ids[0]}/batch", json={**body, "batch_id": uuid.uuid4().hex}
        )
        assert again.json() == {"applied": True}

        h0 = http.get(f"{base}/runs/{run_ids[0]}/metrics/acc").json()
        h1 = http.get(f"{base}/runs/{run_ids[1]}/metrics/acc").json()
    assert h0["steps"] == sorted(list(range(50)) * 2)
    assert h1["steps"] == list(range(50))
