"""Compute: run a task (a Python callable by import path with JSON arguments, or a command) and
follow it to a final state.

``Executor`` is the seam: ``LocalExecutor`` runs tasks as subprocesses of this machine;
``RayExecutor`` (core/ray_executor.py) runs the same ``TaskSpec`` on a Ray cluster. The protocol keeps
to what every backend can do: submit, poll, cancel, read the log. What to run next, retries and
leases belong to the caller (a batch job's coordinator; the jobs queue in the metadata store),
so a task is always "run this once and tell me how it ended".

Every task runs in ``python -m shipyard.core.executors <task dir>``, a small runner that
imports and calls the target (or runs the command without a shell), writes ``result.json``
atomically, and exits 0 on success. The runner leads its own process group so that a cancel
reaches the command's children too, and it ends the group if the process that started it dies,
so a killed coordinator leaves no orphans writing output behind its back.

Starting Python is cheap; importing pandas, pyarrow and scikit-learn is not (seconds per task).
So a ``LocalExecutor`` runs callables through a fork server: one process that imports the
``preload`` modules once and forks a child per task, which starts in milliseconds with those
modules loaded. The child is a task like any other (its own session and log, the same runner),
watches the fork server as its parent, and the fork server ends when the executor's process
does. Commands are started with ``subprocess`` directly.

A task's files, under ``<root>/<task id>/``: ``task.json`` (the spec), ``task.log`` (its stdout
and stderr, interleaved as written) and ``result.json``::

    {"ok": true, "value": <what the callable returned>}
    {"ok": false, "error": {"type", "message", "code"?, "details"?, "traceback"}}
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from shipyard.core.errors import InvalidArgument, NotFound, ShipyardError
from shipyard.core.ids import new_id

_SRC = str(Path(__file__).resolve().parents[2])


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


@dataclass
class TaskSpec:
    """What to run: exactly one of ``target`` ("package.module:function", called with
    ``**args``, which must be JSON) or ``command`` (an argv list, never a shell string)."""

    target: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    command: list[str] | None = None
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    # Slots the task holds while it runs (a CPU each on LocalExecutor; num_cpus on Ray).
    cpus: int = 1
    timeout_s: float | None = None
    # Memory reserved for the task (Ray schedules by it; the jobs launcher enforces it) and GPUs
    # it needs (Ray's num_gpus). LocalExecutor runs a task whatever these say.
    memory_gb: float | None = None
    gpus: float = 0

    def check(self) -> bytes:
        """Validate and return the JSON form; raises ``InvalidArgument`` naming the field."""
        if (self.target is None) == (self.command is None):
            raise InvalidArgument.for_field("target", "give exactly one of target or command")
        if self.target is not None:
            mod, sep, fn = self.target.partition(":")
            if not sep or not mod or not fn.isidentifier():
                raise InvalidArgument.for_field(
                    "target", f"expected 'package.module:function', got {self.target!r}"
                )
        if self.command is not None and (
            not self.command or not all(isinstance(a, str) for a in self.command)
        ):
            raise InvalidArgument.for_field("command", "expected a non-empty list of strings")
        if self.cpus < 1:
            raise InvalidArgument.for_field("cpus", f"expected at least 1, got {self.cpus}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidArgument.for_field("timeout_s", "expected a positive number of seconds")
        if self.memory_gb is not None and not (
            isinstance(self.memory_gb, int | float)
            and not isinstance(self.memory_gb, bool)
            and self.memory_gb > 0
        ):
            raise InvalidArgument.for_field(
                "memory_gb", f"expected a positive number of GiB, got {self.memory_gb!r}"
            )
        if (
            not isinstance(self.gpus, int | float)
            or isinstance(self.gpus, bool)
            or not self.gpus >= 0
        ):
            raise InvalidArgument.for_field(
                "gpus", f"expected a number of GPUs >= 0, got {self.gpus!r}"
            )
        try:
            return orjson.dumps(
                {
                    "target": self.target,
                    "args": self.args,
                    "command": self.command,
                    "name": self.name,
                }
            )
        except TypeError as exc:
            raise InvalidArgument.for_field("args", f"must be JSON: {exc}") from None


@dataclass
class TaskStatus:
    id: str
    name: str
    state: TaskState
    exit_code: int | None = None
    # What the callable returned (JSON), once it succeeded.
    result: Any = None
    # Why it failed: {"type", "message", "code"?, "details"?, "traceback"?}.
    error: dict[str, Any] | None = None
    log_path: str | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


@runtime_checkable
class Executor(Protocol):
    """Runs tasks. Every method is thread-safe; ``status`` never blocks on a running task.

    Raises: ``submit`` -> ``InvalidArgument`` for a bad spec; ``status``/``cancel``/``logs`` ->
    ``NotFound`` for an id this executor never issued.
    """

    @property
    def slots(self) -> int:
        """How many CPUs' worth of tasks run at once."""
        ...

    def submit(self, spec: TaskSpec) -> str:
        """Queue a task and return its id at once."""
        ...

    def status(self, task_id: str) -> TaskStatus: ...

    def cancel(self, task_id: str) -> TaskStatus:
        """Stop a task: a queued one never starts, a running one is terminated (then killed
        after a grace period). Cancelling a finished task changes nothing."""
        ...

    def logs(self, task_id: str, tail_bytes: int | None = None) -> str: ...

    def wait(self, task_id: str, timeout_s: float | None = None) -> TaskStatus:
        """Block until the task is final or the timeout passes; return its status."""
        ...

    def shutdown(self) -> None:
        """Cancel what is queued or running and release the executor's resources."""
        ...


# -- LocalExecutor ------------------------------------------------------------------------------


@dataclass
class _Task:
    spec: TaskSpec
    status: TaskStatus
    dir: Path
    proc: Any = None  # a subprocess.Popen, or a _Forked child of the fork server
    cancel_requested: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def read_task_log(path: Path, tail_bytes: int | None = None) -> str:
    """A task's log as text (its last ``tail_bytes`` only, if given); empty before it exists."""
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        if tail_bytes is not None:
            f.seek(max(0, path.stat().st_size - tail_bytes))
        return f.read().decode("utf-8", "replace")


class LocalExecutor:
    """Subprocesses on this machine, ``slots`` CPUs' worth at a time (default: one per CPU).

    Tasks start in submission order; one that needs more slots than are free waits at the head
    of the queue (no starvation of big tasks by small ones).

    Beyond the ``Executor`` protocol, ``add_done_callback(fn)`` has ``fn(task_id)`` called as
    each task reaches its final state, so a caller can react at once instead of polling
    ``status`` (the jobs worker does, where an executor offers it).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        slots: int | None = None,
        *,
        python: str | None = None,
        kill_grace_s: float = 5.0,
        fork_server: bool = hasattr(os, "fork"),
        preload: Sequence[str] = (),
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._slots = max(1, slots or os.cpu_count() or 1)
        self.python = python or sys.executable
        self.kill_grace_s = kill_grace_s
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._queue: deque[str] = deque()
        self._used = 0
        self._closed = False
        self.fork_server = fork_server
        self.preload = list(preload)
        self._server: _ForkServer | None = None
        self._server_lock = threading.Lock()
        self._done_callbacks: list[Callable[[str], object]] = []

    @property
    def slots(self) -> int:
        return self._slots

    def add_done_callback(self, fn: Callable[[str], object]) -> None:
        """Call ``fn(task_id)`` whenever a task becomes final (succeeded, failed, cancelled),
        after its status says so. Called from the executor's threads: keep it quick (set an
        event); an exception it raises is ignored."""
        with self._lock:
            self._done_callbacks.append(fn)

    def remove_done_callback(self, fn: Callable[[str], object]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._done_callbacks.remove(fn)

    def _notify_done(self, task_id: str) -> None:
        """Outside the lock: tell the callbacks that ``task_id`` is final."""
        with self._lock:
            callbacks = list(self._done_callbacks)
        for fn in callbacks:
            with contextlib.suppress(Exception):
                fn(task_id)

    def _fork_server(self) -> _ForkServer | None:
        """The fork server, started on first use (it imports ``preload``: seconds, once)."""
        if not self.fork_server:
            return None
        with self._server_lock:
            if self._server is None or not self._server.alive:
                self._server = _ForkServer(self.python, self.preload, self.root / "fork-server.log")
            return self._server

    def submit(self, spec: TaskSpec) -> str:
        data = spec.check()
        if spec.target is not None:
            self._fork_server()  # outside the lock: starting it may take a while
        if spec.cpus > self._slots:
            raise InvalidArgument.for_field(
                "cpus", f"the task needs {spec.cpus} CPUs; this executor has {self._slots}"
            )
        task_id = new_id()
        tdir = self.root / task_id
        tdir.mkdir(parents=True)
        (tdir / "task.json").write_bytes(data)
        status = TaskStatus(
            id=task_id,
            name=spec.name or (spec.target or spec.command[0]),  # type: ignore[index]
            state=TaskState.QUEUED,
            log_path=str(tdir / "task.log"),
            submitted_at=time.time(),
        )
        with self._lock:
            if self._closed:
                raise InvalidArgument("the executor is shut down")
            self._tasks[task_id] = _Task(spec, status, tdir)
            self._queue.append(task_id)
            failed = self._dispatch_locked()
        for tid in failed:
            self._notify_done(tid)
        return task_id

    def _get(self, task_id: str) -> _Task:
        t = self._tasks.get(task_id)
        if t is None:
            raise NotFound(f"task {task_id} not found", {"field": "task_id"})
        return t

    def status(self, task_id: str) -> TaskStatus:
        with self._lock:
            s = self._get(task_id).status
            return TaskStatus(**s.__dict__)

    def _dispatch_locked(self) -> list[str]:
        """Start what fits; returns the ids of tasks that could not start (now final)."""
        failed: list[str] = []
        while self._queue and not self._closed:
            t = self._tasks[self._queue[0]]
            if self._used + t.spec.cpus > self._slots:
                break
            self._queue.popleft()
            self._start_locked(t)
            if t.status.state.final:
                failed.append(t.status.id)
        return failed

    def _start_locked(self, t: _Task) -> None:
        env = {**os.environ, **t.spec.env, "SHIPYARD_TASK_ID": t.status.id}
        # The runner must find this very package, whatever the task's working directory.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH")) if p)
        log_path = t.dir / "task.log"
        server = self._server if t.spec.target is not None and self.fork_server else None
        try:
            if server is not None and server.alive:
                t.proc = server.spawn(t.status.id, t.dir, log_path, t.spec.cwd, env)
            else:
                with open(log_path, "ab") as log:
                    t.proc = subprocess.Popen(
                        [
                            self.python,
                            "-m",
                            "shipyard.core.executors",
                            str(t.dir),
                            str(os.getpid()),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=t.spec.cwd,
                        env=env,
                        start_new_session=True,
                    )
        except OSError as exc:
            t.status.state = TaskState.FAILED
            t.status.error = {"type": type(exc).__name__, "message": f"could not start: {exc}"}
            t.status.finished_at = time.time()
            t.done.set()
            return
        self._used += t.spec.cpus
        t.status.state = TaskState.RUNNING
        t.status.started_at = time.time()
        threading.Thread(
            target=self._reap, args=(t,), name=f"task-{t.status.id}", daemon=True
        ).start()

    def _reap(self, t: _Task) -> None:
        assert t.proc is not None
        timed_out = False
        try:
            t.proc.wait(timeout=t.spec.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._terminate(t)
        code = t.proc.wait()
        result = _read_result(t.dir / "result.json")
        with self._lock:
            s = t.status
            s.exit_code = code
            s.finished_at = time.time()
            if t.cancel_requested:
                s.state = TaskState.CANCELLED
            elif timed_out:
                s.state = TaskState.FAILED
                s.error = {"type": "Timeout", "message": f"ran past {t.spec.timeout_s} s"}
            elif code == 0 and result is not None and result.get("ok"):
                s.state = TaskState.SUCCEEDED
                s.result = result.get("value")
            else:
                s.state = TaskState.FAILED
                if result is not None and not result.get("ok"):
                    s.error = result.get("error")
                else:
                    s.error = {"type": "ExitCode", "message": _exit_message(code)}
            self._used -= t.spec.cpus
            t.done.set()
            failed = self._dispatch_locked()
        for tid in (t.status.id, *failed):
            self._notify_done(tid)

    def _terminate(self, t: _Task) -> None:
        """SIGTERM to the task's process group, SIGKILL after the grace period."""
        proc = t.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def cancel(self, task_id: str) -> TaskStatus:
        with self._lock:
            t = self._get(task_id)
            if t.status.state.final:
                return TaskStatus(**t.status.__dict__)
            t.cancel_requested = True
            if t.status.state == TaskState.QUEUED:
                self._queue.remove(task_id)
                t.status.state = TaskState.CANCELLED
                t.status.finished_at = time.time()
                t.done.set()
                status = TaskStatus(**t.status.__dict__)
                # It may have been the head of the queue, holding back tasks that fit now.
                failed = self._dispatch_locked()
            else:
                status, failed = None, []
        if status is not None:
            for tid in (task_id, *failed):
                self._notify_done(tid)
            return status
        # Outside the lock: the grace period must not block other callers.
        self._terminate(t)
        t.done.wait()
        return self.status(task_id)

    def logs(self, task_id: str, tail_bytes: int | None = None) -> str:
        with self._lock:
            path = self._get(task_id).dir / "task.log"
        return read_task_log(path, tail_bytes)

    def wait(self, task_id: str, timeout_s: float | None = None) -> TaskStatus:
        with self._lock:
            t = self._get(task_id)
        t.done.wait(timeout_s)
        return self.status(task_id)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            ids = [tid for tid, t in self._tasks.items() if not t.status.state.final]
        # Ask every task to stop at once, then wait, so the grace periods overlap.
        for tid in ids:
            threading.Thread(target=self.cancel, args=(tid,), daemon=True).start()
        for tid in ids:
            self._tasks[tid].done.wait(self.kill_grace_s + 5)
        with self._server_lock:
            if self._server is not None:
                self._server.close()
                self._server = None

    def forget(self, task_id: str) -> None:
        """Drop a final task's in-memory status (its files stay)."""
        with self._lock:
            t = self._tasks.get(task_id)
            if t is not None and t.status.state.final:
                del self._tasks[task_id]


# -- the fork server -------------------------------------------------------------------------------


class _Forked:
    """A child of the fork server, with the part of ``Popen``'s interface the executor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def _set_exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"task {self.pid}", timeout or 0)
        assert self.returncode is not None
        return self.returncode


class _ForkServer:
    """``python -m shipyard.core.executors --fork-server <modules>``: imports the modules, then
    forks a task per request line. Lines back: ``ready``, ``started <id> <pid>``,
    ``done <pid> <code>`` (the task is over and its result written: what ends it here, a
    process with a large memory image taking a while to exit) and ``exit <pid> <code>`` (once
    it has; ignored after ``done``)."""

    def __init__(self, python: str, preload: list[str], log_path: Path) -> None:
        env = {**os.environ}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH")) if p)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [python, "-m", "shipyard.core.executors", "--fork-server", *preload],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._out = self.proc.stdout
        self._in = self.proc.stdin
        self._lock = threading.Lock()
        self._started: dict[str, Any] = {}
        self._children: dict[int, _Forked] = {}
        self._early: dict[int, int] = {}  # exits read before their "started" was handled
        self._done: set[int] = set()  # said "done": their "exit" line is to be ignored
        if self._out.readline().strip() != b"ready":
            self.proc.kill()
            raise OSError("the executor's fork server did not start; see fork-server.log")
        self.alive = True
        threading.Thread(target=self._read, name="fork-server", daemon=True).start()

    def _read(self) -> None:
        for raw in self._out:
            parts = raw.decode().split()
            if len(parts) == 3 and parts[0] == "started":
                with self._lock:
                    slot = self._started.get(parts[1])
                if slot is not None:
                    slot.put(int(parts[2]))
            elif len(parts) == 3 and parts[0] in ("done", "exit"):
                pid, code = int(parts[1]), int(parts[2])
                with self._lock:
                    if parts[0] == "exit" and pid in self._done:
                        # Already ended at its "done" (which always comes first).
                        self._done.discard(pid)
                        continue
                    if parts[0] == "done":
                        self._done.add(pid)
                    child = self._children.pop(pid, None)
                    if child is None:
                        self._early[pid] = code
                if child is not None:
                    child._set_exit(code)
        # The fork server is gone, and with it (see _fork_server_main) every task it started.
        self.alive = False
        with self._lock:
            children, self._children = list(self._children.values()), {}
            slots = list(self._started.values())
        for child in children:
            child._set_exit(-signal.SIGKILL)
        for slot in slots:
            slot.put(None)

    def spawn(
        self, task_id: str, tdir: Path, log: Path, cwd: str | None, env: dict[str, str]
    ) -> _Forked:
        import queue

        slot: queue.Queue[int | None] = queue.Queue()
        request = {
            "id": task_id,
            "dir": str(tdir),
            "log": str(log),
            "cwd": cwd,
            "env": env,
        }
        with self._lock:
            self._started[task_id] = slot
        try:
            self._in.write(orjson.dumps(request) + b"\n")
            self._in.flush()
            pid = slot.get(timeout=60)
        except (OSError, ValueError) as exc:
            raise OSError(f"the fork server is gone: {exc}") from exc
        finally:
            with self._lock:
                self._started.pop(task_id, None)
        if pid is None:
            raise OSError("the fork server is gone")
        child = _Forked(pid)
        with self._lock:
            code = self._early.pop(pid, None)
            if code is None:
                self._children[pid] = child
        if code is not None:
            child._set_exit(code)
        return child

    def close(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError, ValueError):
            self._in.close()  # end of input: the server kills what it still runs and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _fork_server_main(preload: list[str]) -> int:
    """The fork server: single-threaded, so that forking it is safe."""
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional library: tasks import it themselves if needed
            print(f"fork server: could not preload {name}: {exc}", file=sys.stderr)
    schemas = sys.modules.get("shipyard.core.schemas")
    if schemas is not None:
        # Our models build their validators on first use: build them here, once, rather than
        # in every task.
        schemas.build_deferred_models()
    # What is loaded now is shared with every task, page for page, until someone writes to it;
    # a garbage collection in a task would visit (and so copy) all of it. Out of the collector's
    # sight, it stays shared, and a task starts and collects faster.
    import gc

    gc.collect()
    gc.freeze()
    rfd, wfd = sys.stdin.fileno(), sys.stdout.fileno()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # A task says "done" through this FIFO, opened only then (so that no process it started
    # holds it): the server passes the line on before the task's process has finished exiting.
    fifo_dir = tempfile.mkdtemp(prefix="shipyard-fork-")
    fifo = os.path.join(fifo_dir, "done")
    os.mkfifo(fifo, 0o600)
    done_r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    done_w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # never at end of file
    fds = (rfd, wfd, wake_r, wake_w, done_r, done_w)
    children: set[int] = set()
    buf = b""
    done_buf = b""
    os.write(wfd, b"ready\n")
    try:
        return _fork_server_loop(rfd, wfd, wake_r, done_r, fifo, fds, children, buf, done_buf)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(fifo)
            os.rmdir(fifo_dir)


def _fork_server_loop(
    rfd: int,
    wfd: int,
    wake_r: int,
    done_r: int,
    fifo: str,
    fds: tuple[int, ...],
    children: set[int],
    buf: bytes,
    done_buf: bytes,
) -> int:
    import select

    # A process forked ahead of time that waits for the next task (pid, its request pipe).
    spare: tuple[int, int] | None = _spawn_spare(fds)
    while True:
        try:
            ready, _, _ = select.select([rfd, wake_r, done_r], [], [])
        except InterruptedError:  # pragma: no cover - select retries by itself since 3.5
            continue
        if wake_r in ready:
            os.read(wake_r, 4096)
        # "done" lines first, always: a task writes its line before it exits, so passing them
        # on before reaping keeps each task's "done" ahead of its "exit".
        while True:
            try:
                chunk = os.read(done_r, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            done_buf += chunk
        while b"\n" in done_buf:
            line, done_buf = done_buf.split(b"\n", 1)
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"done" and int(parts[1]) in children:
                os.write(wfd, line + b"\n")
        while children or spare is not None:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if spare is not None and pid == spare[0]:  # it died waiting: the next task forks
                os.close(spare[1])
                spare = None
                continue
            children.discard(pid)
            os.write(wfd, f"exit {pid} {os.waitstatus_to_exitcode(status)}\n".encode())
        if rfd not in ready:
            continue
        data = os.read(rfd, 1 << 16)
        if not data:  # the executor's process is gone: so are its tasks
            for pid in [*children, *([spare[0]] if spare is not None else [])]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            return 0
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = orjson.loads(line)
            req["done_fifo"] = fifo
            handed = _hand_to_spare(spare, req) if spare is not None else None
            spare = None
            if handed is None:
                handed = os.fork()
                if handed == 0:
                    _prepare_task_process()
                    _forked_task(req, fds)
            children.add(handed)
            os.write(wfd, f"started {req['id']} {handed}\n".encode())
        if spare is None:
            spare = _spawn_spare(fds)


_rss_at_fork: int | None = None


def rss_at_fork() -> int | None:
    """In a task forked by the fork server: its resident bytes when forked, all of them shared
    with the server (None in a process started otherwise)."""
    return _rss_at_fork


def _spawn_spare(fds: tuple[int, ...]) -> tuple[int, int]:
    """Fork a process that waits on a pipe for its task's request: the fork, the kernel's copy of
    the server's page tables (about 10 ms for a server holding pandas and scikit-learn), is paid
    while the server waits, not when a task is asked for. Returns (pid, the pipe's write end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(w)
            _prepare_task_process()
            data = b""
            while chunk := os.read(r, 1 << 16):
                data += chunk
            if not data:  # the server is gone, or let this spare go
                os._exit(0)
            _forked_task(orjson.loads(data), (*fds, r))
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(r)
    return pid, w


def _hand_to_spare(spare: tuple[int, int], req: dict[str, Any]) -> int | None:
    """Give the waiting spare its request; its pid, or None if it is gone (the caller forks)."""
    pid, w = spare
    try:
        os.write(w, orjson.dumps(req))  # blocks only while the spare reads a large request
        return pid
    except OSError:
        return None
    finally:
        os.close(w)


def _prepare_task_process() -> None:
    """In a process just forked from the server, before its task is known: its own session
    (so that a cancel ends its whole group), default signals, and its size at the fork."""
    global _rss_at_fork
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm") as f:
        _rss_at_fork = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    os.setsid()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _forked_task(req: dict[str, Any], fds: tuple[int, ...]) -> None:
    """In the forked child (``_prepare_task_process`` done): become a task like one started by
    ``Popen``, run, and exit."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)  # over the server's request pipe
        os.dup2(log, 1)  # over its reply pipe
        os.dup2(log, 2)
        for fd in {null, log, *fds} - {0, 1, 2}:
            os.close(fd)
        # Fresh stream objects: the parent's may hold locks or buffered bytes.
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
        os.environ.clear()
        os.environ.update(req["env"])
        if req.get("cwd"):
            os.chdir(req["cwd"])
        # What a fresh interpreter would have put on sys.path from PYTHONPATH and -m.
        for p in reversed([os.getcwd(), *req["env"].get("PYTHONPATH", "").split(os.pathsep)]):
            if p and p not in sys.path:
                sys.path.insert(0, p)
        sys.argv = ["shipyard-task", req["dir"]]
        numpy = sys.modules.get("numpy")
        if numpy is not None:  # forked children must not share the parent's random state
            numpy.random.seed()
        code = _run(Path(req["dir"]), os.getppid())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(Exception):
            # Over: say so now, not once the kernel has torn down this process's memory (a
            # copy of the server's, preloaded libraries and all: tens of milliseconds).
            fd = os.open(req["done_fifo"], os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, f"done {os.getpid()} {code & 0xFF}\n".encode())
            finally:
                os.close(fd)
        os._exit(code)


def _exit_message(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# -- the runner: python -m shipyard.core.executors <task dir> [<parent pid>] --------------------


def _write_result(tdir: Path, result: dict[str, Any]) -> None:
    tmp = tdir / f".result.json.{os.getpid()}"
    try:
        data = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:
        data = orjson.dumps(
            {
                "ok": False,
                "error": {
                    "type": "TypeError",
                    "message": f"the task's return value is not JSON: {exc}",
                },
            }
        )
    tmp.write_bytes(data)
    os.replace(tmp, tdir / "result.json")


def _watch_parent(parent: int) -> None:
    """End the whole task (its process group) when the process that started it is gone."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(0, signal.SIGKILL)
            os._exit(137)


def _error_dict(exc: BaseException) -> dict[str, Any]:
    err: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    if isinstance(exc, ShipyardError):
        err.update(code=exc.code, message=exc.message, details=exc.details)
    return err


def _run(tdir: Path, parent: int | None) -> int:
    spec = orjson.loads((tdir / "task.json").read_bytes())
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    # SIGTERM (a cancel) becomes SystemExit, so `finally` blocks and temp-file cleanups run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if spec.get("command"):
        proc = subprocess.Popen(spec["command"])
        try:
            code = proc.wait()
        except SystemExit:
            proc.terminate()
            code = proc.wait()
            raise
        if code == 0:
            _write_result(tdir, {"ok": True, "value": None})
        else:
            _write_result(
                tdir, {"ok": False, "error": {"type": "ExitCode", "message": _exit_message(code)}}
            )
        return 0 if code == 0 else (code if code > 0 else 128 - code)
    module, _, name = spec["target"].partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
        value = fn(**spec.get("args", {}))
    except Exception as exc:
        # The error boundary around user code: their failure, with their traceback.
        traceback.print_exc()
        _write_result(tdir, {"ok": False, "error": _error_dict(exc)})
        return 1
    _write_result(tdir, {"ok": True, "value": value})
    return 0


if __name__ == "__main__":
    # Run as the imported module, not as ``__main__``: a task's code that imports this module
    # (``rss_at_fork``) must find the one the fork server runs, not a second copy.
    from shipyard.core import executors

    if sys.argv[1:2] == ["--fork-server"]:
        sys.exit(executors._fork_server_main(sys.argv[2:]))
    sys.exit(executors._run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
