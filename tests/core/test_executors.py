"""``LocalExecutor``: real subprocesses, their logs, exit statuses, cancellation and slots.

The task functions below are imported by the task's own process (``python -m
shipyard.core.executors``), by import path, exactly as a batch shard is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.core.executors import LocalExecutor, TaskSpec, TaskState

ROOT = str(Path(__file__).resolve().parents[2])  # so a task can import ``tests.core...``
ENV = {"PYTHONPATH": ROOT}
HERE = "tests.core.test_executors"


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


def sleep_and_mark(marker: str, seconds: float) -> None:
    Path(marker + ".tmp").write_text(str(os.getpid()))
    os.replace(marker + ".tmp", marker)  # whole or absent: the test reads it at once
    time.sleep(seconds)
    Path(marker + ".done").write_text("finished")


def not_json() -> object:
    return {1, 2, 3}


def unbuilt_models() -> dict:
    from shipyard.core.schemas import deferred_models

    return {"unbuilt": [c.__qualname__ for c in deferred_models()]}


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["fork-server", "spawn"])
def fork_server(request: pytest.FixtureRequest) -> bool:
    """Callables run through the fork server (the default) or a fresh interpreter each."""
    return bool(request.param)


@pytest.fixture
def ex(tmp_path: Path, fork_server: bool):  # type: ignore[no-untyped-def]
    e = LocalExecutor(tmp_path / "tasks", slots=2, kill_grace_s=2.0, fork_server=fork_server)
    yield e
    e.shutdown()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(path: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# -- tests ----------------------------------------------------------------------------------------


def test_a_callable_runs_in_its_own_process_and_returns_json(ex: LocalExecutor) -> None:
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
    assert "adding 2 and 3" in log and "to stderr" in log  # stdout and stderr, one file
    assert Path(st.log_path or "").read_text() == log
    assert ex.logs(tid, tail_bytes=10) == log[-10:]


def test_a_raising_callable_fails_with_its_traceback(ex: LocalExecutor) -> None:
    tid = ex.submit(TaskSpec(target=f"{HERE}:boom", args={"message": "bad row 7"}, env=ENV))
    st = ex.wait(tid, 60)
    assert st.state == TaskState.FAILED
    assert st.exit_code == 1
    assert st.error is not None
    assert st.error["type"] == "ValueError"
    assert st.error["message"] == "bad row 7"
    assert "in boom" in st.error["traceback"]
    log = ex.logs(tid)
    assert "about to fail" in log and "ValueError: bad row 7" in log


def test_a_shipyard_error_keeps_its_code_and_field(ex: LocalExecutor) -> None:
    tid = ex.submit(TaskSpec(target=f"{HERE}:refuse", args={"column": "f2"}, env=ENV))
    st = ex.wait(tid, 60)
    assert st.state == TaskState.FAILED
    assert st.error is not None
    assert st.error["code"] == "INVALID_ARGUMENT"
    assert st.error["details"]["field"] == "f2"
    assert st.error["message"].startswith("f2: expected double")


def test_a_return_value_that_is_not_json_fails_clearly(ex: LocalExecutor) -> None:
    st = ex.wait(ex.submit(TaskSpec(target=f"{HERE}:not_json", env=ENV)), 60)
    assert st.state == TaskState.FAILED
    assert "not JSON" in (st.error or {})["message"]


def test_a_command_records_its_exit_status_and_output(ex: LocalExecutor, tmp_path: Path) -> None:
    code = "import sys; print('hello from a command'); sys.exit(3)"
    st = ex.wait(ex.submit(TaskSpec(command=[sys.executable, "-c", code], cwd=str(tmp_path))), 60)
    assert st.state == TaskState.FAILED
    assert st.exit_code == 3
    assert st.error == {"type": "ExitCode", "message": "exited with status 3"}
    assert "hello from a command" in ex.logs(st.id)

    ok = ex.wait(ex.submit(TaskSpec(command=[sys.executable, "-c", "print('fine')"])), 60)
    assert ok.state == TaskState.SUCCEEDED and ok.exit_code == 0


def test_cancel_terminates_a_running_task_and_its_children(
    ex: LocalExecutor, tmp_path: Path
) -> None:
    # A command whose own child sleeps: the cancel must reach the whole process group.
    marker = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(marker)!r} + ".tmp", "w").write(str(p.pid))
        import os; os.replace({str(marker)!r} + ".tmp", {str(marker)!r})
        time.sleep(60)
        """
    )
    tid = ex.submit(TaskSpec(command=[sys.executable, "-c", script]))
    wait_for(marker)
    child = int(marker.read_text())
    assert ex.status(tid).state == TaskState.RUNNING
    t0 = time.monotonic()
    st = ex.cancel(tid)
    assert st.state == TaskState.CANCELLED
    assert time.monotonic() - t0 < 10
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
    assert ex.cancel(tid).state == TaskState.CANCELLED  # cancelling again changes nothing


def test_slots_bound_concurrency_and_a_queued_task_can_be_cancelled(
    tmp_path: Path, fork_server: bool
) -> None:
    ex = LocalExecutor(tmp_path / "tasks", slots=1, kill_grace_s=2.0, fork_server=fork_server)
    try:
        first_marker, second_marker = tmp_path / "first", tmp_path / "second"
        first = ex.submit(
            TaskSpec(
                target=f"{HERE}:sleep_and_mark",
                args={"marker": str(first_marker), "seconds": 0.5},
                env=ENV,
            )
        )
        second = ex.submit(
            TaskSpec(
                target=f"{HERE}:sleep_and_mark",
                args={"marker": str(second_marker), "seconds": 0.1},
                env=ENV,
            )
        )
        third = ex.submit(
            TaskSpec(
                target=f"{HERE}:sleep_and_mark",
                args={"marker": str(tmp_path / "third"), "seconds": 0.1},
                env=ENV,
            )
        )
        assert ex.status(second).state == TaskState.QUEUED
        assert ex.cancel(third).state == TaskState.CANCELLED
        a, b = ex.wait(first, 60), ex.wait(second, 60)
        assert a.state == b.state == TaskState.SUCCEEDED
        # One slot: the second started only after the first ended.
        assert b.started_at is not None and a.finished_at is not None
        assert b.started_at >= a.finished_at
        assert not (tmp_path / "third").exists()  # the cancelled one never ran
        with pytest.raises(InvalidArgument, match="cpus"):
            ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 1}, cpus=2))
    finally:
        ex.shutdown()


def test_a_task_past_its_timeout_is_killed_and_failed(ex: LocalExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "slow"
    tid = ex.submit(
        TaskSpec(
            target=f"{HERE}:sleep_and_mark",
            args={"marker": str(marker), "seconds": 30},
            env=ENV,
            timeout_s=1.5,
        )
    )
    st = ex.wait(tid, 30)
    assert st.state == TaskState.FAILED
    assert st.error == {"type": "Timeout", "message": "ran past 1.5 s"}
    assert not Path(str(marker) + ".done").exists()


def test_bad_specs_and_unknown_ids_are_refused(ex: LocalExecutor) -> None:
    with pytest.raises(InvalidArgument, match="target"):
        ex.submit(TaskSpec(target="a:b", command=["true"]))
    with pytest.raises(InvalidArgument, match="target"):
        ex.submit(TaskSpec())
    with pytest.raises(InvalidArgument, match="package.module:function"):
        ex.submit(TaskSpec(target="no_function_here"))
    with pytest.raises(InvalidArgument, match="args"):
        ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": object()}))
    with pytest.raises(InvalidArgument, match="command"):
        ex.submit(TaskSpec(command=[]))
    with pytest.raises(NotFound):
        ex.status("nope")
    with pytest.raises(NotFound):
        ex.cancel("nope")
    st = ex.wait(ex.submit(TaskSpec(target="shipyard.no_such_module:f")), 60)
    assert st.state == TaskState.FAILED and st.error["type"] == "ModuleNotFoundError"


def test_shutdown_cancels_what_runs(tmp_path: Path, fork_server: bool) -> None:
    ex = LocalExecutor(tmp_path / "tasks", slots=1, kill_grace_s=2.0, fork_server=fork_server)
    marker = tmp_path / "m"
    tid = ex.submit(
        TaskSpec(
            target=f"{HERE}:sleep_and_mark", args={"marker": str(marker), "seconds": 60}, env=ENV
        )
    )
    queued = ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 2}, env=ENV))
    wait_for(marker)
    ex.shutdown()
    assert ex.status(tid).state == TaskState.CANCELLED
    assert ex.status(queued).state == TaskState.CANCELLED
    assert not alive(int(marker.read_text()))
    with pytest.raises(InvalidArgument, match="shut down"):
        ex.submit(TaskSpec(target=f"{HERE}:add", args={"a": 1, "b": 2}))


def test_a_task_does_not_outlive_the_process_that_started_it(
    tmp_path: Path, fork_server: bool
) -> None:
    """The coordinator is killed (SIGKILL, no cleanup): its tasks end too, within a second or
    two, instead of running on unobserved and writing output nobody records."""
    marker = tmp_path / "orphan.pid"
    script = textwrap.dedent(
        f"""
        import time
        from shipyard.core.executors import LocalExecutor, TaskSpec
        ex = LocalExecutor({str(tmp_path / "tasks")!r}, slots=1, fork_server={fork_server})
        ex.submit(TaskSpec(target="{HERE}:sleep_and_mark",
                           args={{"marker": {str(marker)!r}, "seconds": 60}},
                           env={{"PYTHONPATH": {ROOT!r}}}))
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        wait_for(marker, 60)
        task_pid = int(marker.read_text())
        assert alive(task_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(task_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(task_pid)
    finally:
        parent.kill()
        parent.wait()


def loaded_modules(names: list[str]) -> dict:
    return {"loaded": [n for n in names if n in sys.modules], "ppid": os.getppid()}


def test_the_fork_server_starts_tasks_with_its_modules_loaded(tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path / "tasks", slots=2, preload=["wave", "no_such_module_here"])
    try:
        ids = [
            ex.submit(TaskSpec(target=f"{HERE}:loaded_modules", args={"names": ["wave"]}, env=ENV))
            for _ in range(4)
        ]
        results = [ex.wait(i, 60) for i in ids]
        assert all(r.state == TaskState.SUCCEEDED for r in results), results
        # Imported once by the fork server (a module no task imports itself), not per task.
        assert all(r.result["loaded"] == ["wave"] for r in results)
        parents = {r.result["ppid"] for r in results}
        assert len(parents) == 1 and os.getpid() not in parents
        assert (
            "could not preload no_such_module_here"
            in (tmp_path / "tasks" / "fork-server.log").read_text()
        )
        # A fresh interpreter (fork_server=False) has not imported it.
        plain = LocalExecutor(tmp_path / "plain", fork_server=False, preload=["wave"])
        st = plain.wait(
            plain.submit(
                TaskSpec(target=f"{HERE}:loaded_modules", args={"names": ["wave"]}, env=ENV)
            ),
            60,
        )
        assert st.result["loaded"] == [] and st.result["ppid"] == os.getpid()
        plain.shutdown()
    finally:
        ex.shutdown()


def random_number() -> float:
    import numpy as np

    return float(np.random.random())


def test_forked_tasks_do_not_share_random_state(tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path / "tasks", slots=2, preload=["numpy"])
    try:
        ids = [ex.submit(TaskSpec(target=f"{HERE}:random_number", env=ENV)) for _ in range(3)]
        values = [ex.wait(i, 60).result for i in ids]
        assert len(set(values)) == 3, values
    finally:
        ex.shutdown()


def own_env(key: str) -> dict:
    return {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "ppid": os.getppid(),
        "value": os.environ[key],
    }


def _fork_server_children(server_pid: int) -> set[int]:
    path = Path(f"/proc/{server_pid}/task/{server_pid}/children")
    return {int(p) for p in path.read_text().split()}


def test_the_fork_server_keeps_a_process_forked_ahead_for_the_next_task(tmp_path: Path) -> None:
    """Between tasks the fork server holds one spare process, forked while it waited; the next
    task runs in it (its own session, its own environment), and a spare that dies is not a
    task: nothing is reported for it, and the next task starts all the same."""
    ex = LocalExecutor(tmp_path / "tasks", slots=1)
    try:

        def run(value: str) -> dict:
            spec = TaskSpec(
                target=f"{HERE}:own_env", args={"key": "WHO"}, env={**ENV, "WHO": value}
            )
            st = ex.wait(ex.submit(spec), 60)
            assert st.state == TaskState.SUCCEEDED, (st.error, ex.logs(st.id))
            return st.result

        first = run("first")
        server = ex._fork_server()
        assert server is not None
        deadline = time.monotonic() + 10
        while not (spares := _fork_server_children(server.proc.pid) - {first["pid"]}):
            assert time.monotonic() < deadline, "no spare process was forked"
            time.sleep(0.02)
        (spare,) = spares
        second = run("second")
        assert second["pid"] == spare  # the task ran in the process forked ahead
        assert second["pgid"] == spare and second["ppid"] == server.proc.pid
        assert (first["value"], second["value"]) == ("first", "second")

        # A spare killed while it waits: not a task, and the next task still starts.
        deadline = time.monotonic() + 10
        while not (spares := _fork_server_children(server.proc.pid) - {second["pid"]}):
            assert time.monotonic() < deadline, "no spare process was forked"
            time.sleep(0.02)
        os.kill(spares.pop(), signal.SIGKILL)
        time.sleep(0.2)
        third = run("third")
        assert third["value"] == "third" and third["pid"] not in (first["pid"], second["pid"])
        assert server._early == {}  # no exit was reported for a process that was not a task
    finally:
        ex.shutdown()


def test_a_forked_task_finds_the_preloaded_models_built(tmp_path: Path) -> None:
    """Models build their validators on first use (a server builds only those it uses); the
    fork server builds those of what it preloads, so that no task builds them again."""
    e = LocalExecutor(
        tmp_path / "tasks", slots=1, fork_server=True, preload=["shipyard.tracking.schemas"]
    )
    try:
        st = e.wait(e.submit(TaskSpec(target=f"{HERE}:unbuilt_models", env=ENV)), 60)
    finally:
        e.shutdown()
    assert st.state == TaskState.SUCCEEDED, st
    assert st.result["unbuilt"] == []
