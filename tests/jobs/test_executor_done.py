"""What the jobs worker relies on from ``LocalExecutor`` to settle a job as soon as its task
ends: a callback for every task that becomes final (however it ended), called once its status
says so, and a forked task reported over as soon as its code has returned, with its real exit
status whichever way it ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.core.executors import LocalExecutor, TaskSpec, TaskState, TaskStatus


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalExecutor]:
    ex = LocalExecutor(tmp_path_factory.mktemp("tasks"), 2, kill_grace_s=2.0)
    yield ex
    ex.shutdown()


ROOT = str(Path(__file__).resolve().parents[2])  # so that a task imports this module


def run_code(source: str) -> None:
    exec(source)


def code(source: str) -> TaskSpec:
    """A callable task (forked from the fork server) that runs ``source``."""
    return TaskSpec(
        target="tests.jobs.test_executor_done:run_code",
        args={"source": source},
        env={"PYTHONPATH": ROOT},
    )


class Seen:
    def __init__(self, ex: LocalExecutor) -> None:
        self.ex = ex
        self.calls: list[tuple[str, TaskStatus]] = []
        self.cond = threading.Condition()

    def __call__(self, task_id: str) -> None:
        # The status is final by the time the callback runs.
        st = self.ex.status(task_id)
        with self.cond:
            self.calls.append((task_id, st))
            self.cond.notify_all()

    def of(self, task_id: str, timeout_s: float = 30.0) -> TaskStatus:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                got = [st for tid, st in self.calls if tid == task_id]
                if got:
                    return got[0]
                left = deadline - time.monotonic()
                assert left > 0, f"no callback for {task_id}"
                self.cond.wait(left)


def test_every_task_that_ends_is_announced_once_with_its_final_status(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    seen = Seen(executor)
    executor.add_done_callback(seen)
    try:
        ok = executor.submit(TaskSpec(target="os:getpid"))
        exit3 = executor.submit(code("import sys; sys.exit(3)"))
        killed = executor.submit(code("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
        raised = executor.submit(code("raise ValueError('boom')"))
        command = executor.submit(TaskSpec(command=["sh", "-c", "exit 4"]))
        # Two slots: a long task, another behind it, and a queued one cancelled before it runs.
        executor.wait(ok, 30)
        long = executor.submit(code("import time; time.sleep(60)"))
        blocker = executor.submit(code("import time; time.sleep(60)"))
        queued = executor.submit(TaskSpec(target="os:getpid", cpus=2))
        assert executor.status(queued).state == TaskState.QUEUED
        executor.cancel(queued)
        executor.cancel(long)
        executor.cancel(blocker)

        st = seen.of(ok)
        assert st.state == TaskState.SUCCEEDED and st.exit_code == 0
        assert st.result == executor.status(ok).result and isinstance(st.result, int)
        st = seen.of(exit3)
        assert (st.state, st.exit_code) == (TaskState.FAILED, 3)
        st = seen.of(killed)
        assert st.state == TaskState.FAILED and st.exit_code == -9
        assert st.error == {"type": "ExitCode", "message": "killed by signal SIGKILL"}
        st = seen.of(raised)
        assert st.state == TaskState.FAILED and st.error is not None
        assert (st.error["type"], st.error["message"]) == ("ValueError", "boom")
        st = seen.of(command)
        assert (st.state, st.exit_code) == (TaskState.FAILED, 4)
        for tid in (queued, long, blocker):
            assert seen.of(tid).state == TaskState.CANCELLED
        ids = [tid for tid, _ in seen.calls]
        assert sorted(ids) == sorted({*ids})  # each once
    finally:
        executor.remove_done_callback(seen)
    after = executor.submit(TaskSpec(target="os:getpid"))
    executor.wait(after, 30)
    time.sleep(0.2)
    assert after not in [tid for tid, _ in seen.calls]  # removed: no longer called


def test_many_short_tasks_in_a_row_each_end_once_with_their_own_result(
    executor: LocalExecutor,
) -> None:
    # A forked task is reported over when its code returns (before its process has finished
    # exiting), and its exit is noted later: neither may be mistaken for another task's.
    seen = Seen(executor)
    executor.add_done_callback(seen)
    try:
        ids = [
            executor.submit(code(f"import sys; sys.exit({i % 3})" if i % 3 else "pass"))
            for i in range(12)
        ]
        for i, tid in enumerate(ids):
            st = seen.of(tid)
            assert st.exit_code == i % 3
            assert st.state == (TaskState.SUCCEEDED if i % 3 == 0 else TaskState.FAILED)
            assert executor.wait(tid, 5).exit_code == i % 3
    finally:
        executor.remove_done_callback(seen)
