"""``RayExecutor`` on a real local Ray: results, errors, live logs, cancel, timeout, slots, env.

One Ray is started for the module (about 5-10 s) and stopped at its end; Ray picks its own free
ports (never Redis's 6379). The task functions below are imported by the task's own process on
the Ray node, by import path, exactly as with ``LocalExecutor``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.core.executors import LocalExecutor, TaskSpec, TaskState, TaskStatus

if TYPE_CHECKING:
    from shipyard.core.ray_executor import RayExecutor

# Ray is imported by the tests, not at module level: the tasks import this module for its task
# functions, and importing Ray there would only slow each task's start.

ROOT = str(Path(__file__).resolve().parents[2])  # so a task can import ``tests.core...``
ENV = {"PYTHONPATH": ROOT}
HERE = "tests.core.test_ray_executor"


# -- task functions (run in the task's process) ---------------------------------------------------


def add(a: int, b: int) -> dict:
    print(f"adding {a} and {b}")
    print("to stderr", file=sys.stderr)
    return {"sum": a + b, "pid": os.getpid()}


def boom(message: str) -> None:
    print("about to fail")
    raise ValueError(message)


def refuse(column: str) -> None:
    raise InvalidArgument.for_field(column, "expected double, got str 'x'")


def wait_for_gate(marker: str, gate: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.02)


def loaded_modules(names: list[str]) -> dict:
    return {"loaded": [n for n in names if n in sys.modules], "ppid": os.getppid()}


def environment(names: list[str]) -> dict:
    return {"env": {n: os.environ.get(n) for n in names}, "cwd": os.getcwd()}


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayExecutor]:
    import ray

    from shipyard.core.ray_executor import RayExecutor

    e = RayExecutor(
        tmp_path_factory.mktemp("ray-tasks"), num_cpus=2, kill_grace_s=2.0, preload=["wave"]
    )
    yield e
    e.shutdown()
    assert not ray.is_initialized()  # the Ray this executor started is stopped with it


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0): read its state
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition", debug=None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} never happened {debug() if debug else ''}"
        time.sleep(0.02)


# -- tests ----------------------------------------------------------------------------------------


def test_the_local_ray_leaves_redis_port_alone(ex: RayExecutor) -> None:
    import ray

    address = ray.get_runtime_context().gcs_address
    assert not address.endswith(":6379"), address
    assert ex.slots == 2


def test_a_callable_returns_its_value_and_its_output(ex: RayExecutor) -> None:
    tid = ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 2, "b": 3}, env=ENV, name="add"))
    st = ex.wait(tid, 60)
    assert st.state == TaskState.SUCCEEDED, st
    assert st.exit_code == 0
    assert st.result["sum"] == 5
    assert st.result["pid"] != os.getpid()
    assert st.name == "add"
    assert st.started_at is not None and st.finished_at is not None
    assert st.submitted_at <= st.started_at <= st.finished_at
    log = ex.logs(tid)
    assert "adding 2 and 3" in log and "to stderr" in log  # stdout and stderr, one log
    assert Path(st.log_path or "").read_text() == log
    assert ex.logs(tid, tail_bytes=10) == log[-10:]
    ex.forget(tid)
    with pytest.raises(NotFound):
        ex.status(tid)


def test_a_failing_task_reports_its_error(ex: RayExecutor) -> None:
    st = ex.wait(ex.submit(TaskSpec(target=f"{HERE}:boom", args={"message": "bad 7"}, env=ENV)), 60)
    assert st.state == TaskState.FAILED
    assert st.exit_code == 1
    assert st.error is not None
    assert st.error["type"] == "ValueError"
    assert st.error["message"] == "bad 7"
    assert "in boom" in st.error["traceback"]
    assert "about to fail" in ex.logs(st.id) and "ValueError: bad 7" in ex.logs(st.id)

    st = ex.wait(ex.submit(TaskSpec(target=f"{HERE}:refuse", args={"column": "f2"}, env=ENV)), 60)
    assert st.error is not None
    assert st.error["code"] == "INVALID_ARGUMENT" and st.error["details"]["field"] == "f2"

    st = ex.wait(ex.submit(TaskSpec(target="shipyard.no_such_module:f")), 60)
    assert st.state == TaskState.FAILED and st.error["type"] == "ModuleNotFoundError"


def test_logs_are_readable_while_the_task_runs(ex: RayExecutor) -> None:
    code = (
        "import time\nfor i in range(40):\n    print('line', i, flush=True)\n    time.sleep(0.05)"
    )
    tid = ex.submit(TaskSpec(command=[sys.executable, "-c", code]))
    wait_for(lambda: "line 3\n" in ex.logs(tid), what="a live log line")
    assert ex.status(tid).state == TaskState.RUNNING
    assert "line 39" not in ex.logs(tid)
    st = ex.wait(tid, 60)
    assert st.state == TaskState.SUCCEEDED
    assert ex.logs(tid).count("line") == 40  # complete once final: nothing lost at the end


def test_cancel_stops_a_running_task_and_its_children(ex: RayExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(marker)!r} + ".tmp", "w").write(str(p.pid))
        os.replace({str(marker)!r} + ".tmp", {str(marker)!r})
        time.sleep(60)
        """
    )
    tid = ex.submit(TaskSpec(command=[sys.executable, "-c", script]))
    wait_for(marker.exists, what="the task's child", debug=lambda: (ex.status(tid), ex.logs(tid)))
    child = int(marker.read_text())
    # The node's start notice reaches this process a poll later than the child's marker can.
    wait_for(lambda: ex.status(tid).state == TaskState.RUNNING, 10, what="RUNNING")
    t0 = time.monotonic()
    st = ex.cancel(tid)
    assert st.state == TaskState.CANCELLED
    assert time.monotonic() - t0 < 10
    wait_for(lambda: not alive(child), 5, what="the child's end")
    assert ex.cancel(tid).state == TaskState.CANCELLED  # cancelling again changes nothing


def test_tasks_run_in_parallel_when_slots_allow_and_queue_otherwise(
    ex: RayExecutor, tmp_path: Path
) -> None:
    def gated(name: str, gate: str, cpus: int = 1) -> str:
        return ex.submit(
            TaskSpec(
                target=f"{HERE}:wait_for_gate",
                args={"marker": str(tmp_path / name), "gate": str(tmp_path / gate)},
                env=ENV,
                cpus=cpus,
            )
        )

    # Two slots, one CPU each: each task waits for the other to have started, so both succeed
    # only if they ran at the same time.
    a, b = gated("a", "b"), gated("b", "a")
    sa, sb = ex.wait(a, 60), ex.wait(b, 60)
    assert sa.state == sb.state == TaskState.SUCCEEDED, (sa, sb)

    # A task holding both CPUs makes the next one wait, and a queued task can be cancelled.
    big = gated("big", "release", cpus=2)
    wait_for((tmp_path / "big").exists, what="the big task's start")
    after = gated("after", "big")
    dropped = gated("dropped", "big")
    time.sleep(0.5)
    assert ex.status(after).state == TaskState.QUEUED
    assert not (tmp_path / "after").exists()
    assert ex.cancel(dropped).state == TaskState.CANCELLED
    (tmp_path / "release").write_text("go")
    s_big, s_after = ex.wait(big, 60), ex.wait(after, 60)
    assert s_big.state == s_after.state == TaskState.SUCCEEDED
    assert s_after.started_at and s_big.finished_at
    assert s_after.started_at >= s_big.finished_at - 0.2  # (clocks: node vs executor)
    assert not (tmp_path / "dropped").exists()  # the cancelled one never ran


def test_a_task_past_its_timeout_is_killed_and_failed(ex: RayExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "slow"
    script = textwrap.dedent(
        f"""
        import os, time
        open({str(marker)!r} + ".tmp", "w").write(str(os.getpid()))
        os.replace({str(marker)!r} + ".tmp", {str(marker)!r})
        time.sleep(30)
        open({str(marker)!r} + ".done", "w").write("finished")
        """
    )
    # Long enough for the command to start on a loaded machine, so there is something to kill.
    tid = ex.submit(TaskSpec(command=[sys.executable, "-c", script], timeout_s=4.0))
    st = ex.wait(tid, 30)
    assert st.state == TaskState.FAILED
    assert st.error == {"type": "Timeout", "message": "ran past 4.0 s"}
    assert st.started_at and st.finished_at and st.finished_at - st.started_at < 10
    pid = int(marker.read_text())
    assert not alive(pid), (st, Path(f"/proc/{pid}/stat").read_text(), ex.logs(tid))
    assert not Path(str(marker) + ".done").exists()


def test_env_and_cwd_reach_the_task(ex: RayExecutor, tmp_path: Path) -> None:
    spec = TaskSpec(
        target=f"{HERE}:environment",
        args={"names": ["SHIPYARD_RUN_ID", "SHIPYARD_TASK_ID"]},
        env={**ENV, "SHIPYARD_RUN_ID": "r-123"},
        cwd=str(tmp_path),
    )
    st = ex.wait(ex.submit(spec), 60)
    assert st.state == TaskState.SUCCEEDED, st
    assert st.result["env"] == {"SHIPYARD_RUN_ID": "r-123", "SHIPYARD_TASK_ID": st.id}
    assert st.result["cwd"] == str(tmp_path)


def test_callables_start_from_a_fork_server_with_its_modules_loaded(ex: RayExecutor) -> None:
    """A fork server per Ray worker imports ``preload`` once; a task forked from it has them
    loaded (a module no task imports itself) and starts in milliseconds."""
    spec = TaskSpec(target=f"{HERE}:loaded_modules", args={"names": ["wave"]}, env=ENV)
    results = [ex.wait(ex.submit(spec), 60) for _ in range(3)]
    assert all(r.state == TaskState.SUCCEEDED for r in results), results
    assert all(r.result["loaded"] == ["wave"] for r in results)
    assert len({r.result["ppid"] for r in results}) <= 2  # a Ray worker's server, reused
    # A command gets a fresh interpreter: nothing preloaded.
    code = "import sys; print('wave' in sys.modules)"
    st = ex.wait(ex.submit(TaskSpec(command=[sys.executable, "-c", code])), 60)
    assert ex.logs(st.id).strip() == "False"


def test_resources_are_checked_and_reserved(ex: RayExecutor, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cpus: the task needs 3 CPUs"):
        ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, cpus=3))
    with pytest.raises(InvalidArgument, match="gpus: the task needs 1 GPUs"):
        ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, gpus=1))
    with pytest.raises(InvalidArgument, match="memory_gb"):
        ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, memory_gb=0))
    with pytest.raises(InvalidArgument, match="memory_gb: the task needs 100000 GiB"):
        ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, memory_gb=100_000))
    with pytest.raises(InvalidArgument, match="gpus"):
        ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, gpus=-1))
    with pytest.raises(InvalidArgument, match="target"):
        ex.submit(TaskSpec())
    with pytest.raises(NotFound):
        ex.cancel("nope")
    from shipyard.core.ray_executor import RayExecutor

    with pytest.raises(InvalidArgument, match="num_cpus"):
        RayExecutor(tmp_path, address="auto", num_cpus=2)  # a cluster has its own
    with pytest.raises(NotFound):
        ex.logs("nope")
    # A memory reservation the node can hold: scheduled and run.
    st = ex.wait(
        ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, env=ENV, memory_gb=0.25)),
        60,
    )
    assert st.state == TaskState.SUCCEEDED and st.result["sum"] == 2


def test_shutdown_cancels_what_runs_and_leaves_a_shared_ray_running(
    ex: RayExecutor, tmp_path: Path
) -> None:
    from shipyard.core.ray_executor import RayExecutor

    other = RayExecutor(tmp_path / "other", kill_grace_s=1.0)  # joins this process's Ray
    marker = tmp_path / "m"
    running = other.submit(
        TaskSpec(
            target=f"{HERE}:wait_for_gate",
            args={"marker": str(marker), "gate": str(tmp_path / "never")},
            env=ENV,
            cpus=2,
        )
    )
    queued = other.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 2}, env=ENV))
    wait_for(marker.exists, what="the task's start")
    other.shutdown()
    assert other.status(running).state == TaskState.CANCELLED
    assert other.status(queued).state == TaskState.CANCELLED
    wait_for(lambda: not alive(int(marker.read_text())), 5, what="the task's end")
    with pytest.raises(InvalidArgument, match="shut down"):
        other.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 2}))
    # The Ray it shared is still there for the executor that started it.
    st = ex.wait(ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, env=ENV)), 60)
    assert st.state == TaskState.SUCCEEDED


def _shape(st: TaskStatus) -> tuple:
    error = None
    if st.error is not None:
        error = (st.error["type"], st.error["message"], sorted(st.error))
    result = st.result if not isinstance(st.result, dict) else sorted(st.result)
    return (st.state, st.exit_code, result, error)


def test_the_same_spec_gives_the_same_result_on_both_executors(
    ex: RayExecutor, tmp_path: Path
) -> None:
    specs = [
        TaskSpec(target=f"{HERE}:add", args={"a": 2, "b": 3}, env=ENV),
        TaskSpec(target=f"{HERE}:boom", args={"message": "bad"}, env=ENV),
        TaskSpec(target=f"{HERE}:refuse", args={"column": "f2"}, env=ENV),
        TaskSpec(command=[sys.executable, "-c", "import sys; print('hi'); sys.exit(3)"]),
        TaskSpec(command=[sys.executable, "-c", "print('fine')"]),
    ]
    local = LocalExecutor(tmp_path / "local", slots=2)
    try:
        local_ids = [local.submit(s) for s in specs]
        ray_ids = [ex.submit(s) for s in specs]
        for spec, lid, rid in zip(specs, local_ids, ray_ids, strict=True):
            on_local, on_ray = local.wait(lid, 60), ex.wait(rid, 60)
            assert _shape(on_ray) == _shape(on_local), spec
            assert on_ray.name == on_local.name
            assert ex.logs(rid) == local.logs(lid)
    finally:
        local.shutdown()


JOIN_SCRIPT = f"""
import json, sys, time
from shipyard.core.executors import TaskSpec
from shipyard.core.ray_executor import RayExecutor
ex = RayExecutor(sys.argv[1], address=sys.argv[2])
st = ex.wait(ex.submit(TaskSpec(target="{HERE}:add", args={{"a": 4, "b": 5}},
                                env={{"PYTHONPATH": {ROOT!r}}})), 60)
code = "import time\\nfor i in range(12):\\n    print('tick', i, flush=True)\\n    time.sleep(0.1)"
live = ex.submit(TaskSpec(command=[sys.executable, "-c", code]))
deadline = time.monotonic() + 60
while "tick 2" not in ex.logs(live) and time.monotonic() < deadline:
    time.sleep(0.05)
seen_live = ex.status(live).state == "running" and "tick 11" not in ex.logs(live)
ex.wait(live, 60)
print(json.dumps({{"state": st.state, "result": st.result, "log": ex.logs(st.id),
                  "seen_live": seen_live, "live_log": ex.logs(live)}}))
ex.shutdown()
"""


def _join(tmp_path: Path, address: str) -> dict:
    """Run a second driver that joins ``address``, as a fresh shell would start it: Ray's token
    mode not chosen, so the executor chooses it (Ray starts clusters with token auth on)."""
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run(
        [sys.executable, "-c", JOIN_SCRIPT, str(tmp_path / "joined"), address],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got: dict = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["state"] == "succeeded" and got["result"]["sum"] == 9
    assert "adding 4 and 5" in got["log"]
    assert got["seen_live"], "the log was readable while the task ran"
    assert got["live_log"].count("tick") == 12
    return got


def test_another_process_joins_the_cluster_by_its_address(tmp_path: Path, ex: RayExecutor) -> None:
    """A second driver (a `shipyard worker`, say) runs tasks on a running cluster, given its
    address; leaving does not stop the cluster."""
    import ray

    _join(tmp_path, ray.get_runtime_context().gcs_address)
    # The cluster (this process's) still runs tasks.
    st = ex.wait(ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, env=ENV)), 60)
    assert st.state == TaskState.SUCCEEDED


def test_a_process_joins_through_ray_client(tmp_path: Path, ex: RayExecutor) -> None:
    """``ray://``: Ray Client, where Ray's streaming generators do not work; the log sink does."""
    import signal
    import socket

    import ray

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # One server process for its clients ("legacy"): the "proxy" mode's spawn of a server per
    # client was seen to die at start under load (Ray 2.60), which is Ray's, not the executor's.
    # Its log stays in tmp_path, for a failure to be read.
    with open(tmp_path / "client-server.log", "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ray.util.client.server",
                "--address",
                ray.get_runtime_context().gcs_address,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--mode",
                "legacy",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 60, what="the Ray Client server")
        _join(tmp_path, f"ray://127.0.0.1:{port}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)


def test_a_task_does_not_outlive_the_driver_that_submitted_it(
    tmp_path: Path, ex: RayExecutor
) -> None:
    """A `shipyard worker` on a shared cluster is killed (SIGKILL, no clean-up): Ray ends the
    tasks it owned and the runner's orphan guard ends their processes, in a second or two."""
    import signal

    import ray

    marker = tmp_path / "orphan.pid"
    script = textwrap.dedent(
        f"""
        import time
        from shipyard.core.executors import TaskSpec
        from shipyard.core.ray_executor import RayExecutor
        ex = RayExecutor({str(tmp_path / "driver")!r}, address={ray.get_runtime_context().gcs_address!r})
        ex.submit(TaskSpec(target="{HERE}:wait_for_gate",
                           args={{"marker": {str(marker)!r}, "gate": {str(tmp_path / "never")!r}}},
                           env={{"PYTHONPATH": {ROOT!r}}}))
        time.sleep(120)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    driver = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        wait_for(marker.exists, 90, what="the task's start")
        task_pid = int(marker.read_text())
        assert alive(task_pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        wait_for(lambda: not alive(task_pid), 15, what="the orphaned task's end")
    finally:
        driver.kill()
        driver.wait()
    # The cluster is unharmed.
    st = ex.wait(ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, env=ENV)), 60)
    assert st.state == TaskState.SUCCEEDED
