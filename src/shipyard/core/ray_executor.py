"""``RayExecutor``: the ``Executor`` protocol on a Ray cluster (``pip install 'shipyard[ray]'``).

A task becomes one Ray task that holds ``num_cpus=spec.cpus``, ``num_gpus=spec.gpus`` and
``memory=spec.memory_gb`` while it runs, and Ray's scheduler decides where and when it starts
(until then the task is ``queued``). On its node, the Ray task runs exactly what
``LocalExecutor`` runs: the runner of ``shipyard.core.executors`` in its own process group, in a
scratch folder of that node, with the spec's ``env`` and ``cwd``. So a target callable, its JSON
result, its error with type/message/traceback, a command's exit status, and the orphan guard
(the runner ends its group when the process that started it dies) are the same on both
executors; Shipyard must be installed on every node. The task's environment is the node's (a
Ray worker's) with ``spec.env`` over it, not this process's: give what the task needs in
``env``.

As on ``LocalExecutor``, a callable is started by a fork server (one per Ray worker process,
started on its first callable task with the ``preload`` modules imported, ended with the
worker), so it starts in milliseconds instead of an interpreter's start and imports; a command,
or a task that needs a GPU (CUDA and fork do not mix), gets a fresh ``python -m
shipyard.core.executors <task dir> <parent pid>``.

Logs, on one machine or on a cluster with no shared file system: the node's task tails its log
file and pushes each new chunk, every ``_POLL_S``, to a small actor owned by the executor (the
"log sink", no CPU); one thread of the executor drains the sink and appends the chunks to
``<root>/<task id>/task.log``, which ``logs()`` reads while the task runs. Before the Ray task
returns it waits for its last chunk to reach the sink, so a final task's log is complete. The
sink, unlike Ray's streaming generators, works through Ray Client (``ray://``) too.

Stopping: ``cancel`` asks Ray to interrupt the task (``ray.cancel``, not forced): the node's
task then sends SIGTERM to the runner's group and SIGKILL after ``kill_grace_s``; a task still
not done after the grace period is force-cancelled (its Ray worker is killed, and the runner's
orphan guard ends the group). ``timeout_s`` counts from the start on the node and is enforced
there, the same way. A queued task is removed from Ray's queue and never starts. Ray never
retries a task (``max_retries=0``): retries belong to the caller, as on ``LocalExecutor``.

Connecting: ``address=None`` starts a private Ray in this process (``num_cpus`` CPUs, no
dashboard; Ray picks free ports, so Redis's 6379 is never touched) and stops it when the last
executor using it shuts down; ``"auto"``, ``"host:port"`` (a GCS address) or ``"ray://host:port"``
(Ray Client) joins a running cluster, which is left running. Ray turns token authentication on
for a new head, so joining uses token mode when this machine has a token (``~/.ray/auth_token``,
``RAY_AUTH_TOKEN``) and ``RAY_AUTH_MODE`` is unset. One process talks to one Ray cluster: an
executor made while Ray is already initialized in this process uses that connection.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shipyard.core.errors import InvalidArgument, NotFound, ShipyardError, Unavailable
from shipyard.core.executors import (
    _SRC,
    TaskSpec,
    TaskState,
    TaskStatus,
    _exit_message,
    _ForkServer,
    _read_result,
    read_task_log,
)
from shipyard.core.ids import new_id

try:
    import ray
except ImportError:  # pragma: no cover - the `ray` extra is not installed
    ray = None  # type: ignore[assignment]

# How often a running task ships its new log bytes, and the executor collects them.
_POLL_S = 0.1
_CHUNK = 1 << 20
_GIB = 1 << 30


def _need_ray() -> Any:
    if ray is None:
        raise Unavailable(
            "the Ray executor needs Ray: pip install 'shipyard[ray]'", {"field": "executor"}
        )
    return ray


# -- the process-wide Ray connection ------------------------------------------------------------

_conn_lock = threading.Lock()
_conn_users = 0
_conn_ours = False  # ray.init was called by an executor (so the last one out shuts it down)


def _connect(address: str | None, num_cpus: int | None) -> None:
    global _conn_users, _conn_ours
    r = _need_ray()
    with _conn_lock:
        if not r.is_initialized():
            if address in (None, "local"):
                # "local", not None: None would join a cluster named by RAY_ADDRESS or the last
                # `ray start` on this machine instead of starting a private one.
                r.init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                _default_auth_mode()
                r.init(address=address, log_to_driver=False, configure_logging=False)
            _conn_ours = True
        _conn_users += 1


def _default_auth_mode() -> None:
    """Ray (2.52 on) starts a head with token authentication on, but a process that joins it
    sends its token only with ``RAY_AUTH_MODE=token``; without it the join fails after a long
    retry. So when this machine has a token and the mode is not chosen, choose token mode (what
    `ray start` itself does; Ray caches its config, hence its own helper)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # pragma: no cover - a Ray without token authentication
        return
    with contextlib.suppress(Exception):
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _disconnect() -> None:
    global _conn_users, _conn_ours
    with _conn_lock:
        _conn_users -= 1
        if _conn_users == 0 and _conn_ours:
            _conn_ours = False
            ray.shutdown()


# -- what runs on the cluster -------------------------------------------------------------------


class _LogSink:
    """Collects the tasks' log chunks and start notices until the executor drains them.

    One caller's calls to an actor run in the order they were made, so a task's chunks arrive
    in order."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, Any]] = []

    def push(self, task_id: str, kind: str, payload: Any) -> None:
        self._events.append((task_id, kind, payload))

    def drain(self) -> list[tuple[str, str, Any]]:
        events, self._events = self._events, []
        return events


_node_lock = threading.Lock()
# This Ray worker's fork servers, by preload list (two executors with different lists may share
# the worker; the older server goes when a third list comes).
_node_servers: dict[tuple[str, ...], _ForkServer] = {}


def _node_fork_server(preload: list[str]) -> _ForkServer | None:
    """This Ray worker's fork server (started on its first callable task, kept while the worker
    lives, ended with it): a task then starts in milliseconds instead of an interpreter's start
    and imports, as on ``LocalExecutor``."""
    key = tuple(preload)
    with _node_lock:
        server = _node_servers.get(key)
        if server is not None and server.alive:
            return server
        _node_servers.pop(key, None)
        if server is not None:
            server.close()
        while len(_node_servers) >= 2:
            _node_servers.pop(next(iter(_node_servers))).close()
        logs = Path(tempfile.gettempdir()) / "shipyard-fork-servers"
        logs.mkdir(exist_ok=True)
        log = logs / f"{os.getpid()}.log"  # one Ray worker's: preload failures land here
        try:
            server = _ForkServer(sys.executable, list(preload), log)
        except OSError:
            return None
        _node_servers[key] = server
        return server


def _terminate_group(proc: Any, grace_s: float) -> int:
    """SIGTERM to the runner's process group, SIGKILL after the grace period; its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def _run_on_node(
    sink: Any,
    task_id: str,
    task_json: bytes,
    env: dict[str, str],
    cwd: str | None,
    timeout_s: float | None,
    kill_grace_s: float,
    is_target: bool,
    fork_server: bool,
    preload: list[str],
) -> dict[str, Any]:
    """The body of the Ray task: run the runner in a scratch folder, ship its log, report."""
    started_at = time.time()
    sink.push.remote(task_id, "started", {"at": started_at, "node": socket.gethostname()})
    tdir = Path(tempfile.mkdtemp(prefix=f"shipyard-task-{task_id}-"))
    try:
        (tdir / "task.json").write_bytes(task_json)
        full_env = {**os.environ, **env, "SHIPYARD_TASK_ID": task_id}
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, full_env.get("PYTHONPATH")) if p)
        log_path = tdir / "task.log"
        log_path.touch()  # read from the start, whoever opens it to write
        proc: Any = None
        server = _node_fork_server(preload) if fork_server and is_target else None
        try:
            if server is not None:
                try:
                    proc = server.spawn(task_id, tdir, log_path, cwd, full_env)
                except OSError:  # the fork server died: start a process instead
                    pass
                except BaseException:
                    # Interrupted (a cancel) before the child was known: end the fork server,
                    # which ends its children, all this task's (a Ray worker runs one task).
                    server.close()
                    raise
            if proc is None:
                with open(log_path, "ab") as log:
                    proc = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "shipyard.core.executors",
                            str(tdir),
                            str(os.getpid()),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=cwd,
                        env=full_env,
                        start_new_session=True,
                    )
        except OSError as exc:
            return {
                "start_error": {"type": type(exc).__name__, "message": f"could not start: {exc}"}
            }

        reader = open(log_path, "rb")  # noqa: SIM115 - closed below

        def ship(wait: bool = False) -> None:
            last = None
            while chunk := reader.read(_CHUNK):
                last = sink.push.remote(task_id, "log", chunk)
            if wait and last is not None:
                # The sink gone (its node died): the log's end is lost, not the task's result.
                with contextlib.suppress(Exception):
                    ray.get(last, timeout=30)

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        timed_out = False
        try:
            try:
                while True:
                    try:
                        code = proc.wait(timeout=_POLL_S)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    ship()
                    if deadline is not None and time.monotonic() >= deadline:
                        timed_out = True
                        code = _terminate_group(proc, kill_grace_s)
                        break
            except BaseException:
                # ray.cancel interrupts the task (KeyboardInterrupt): stop the runner, keep
                # its log. The Ray worker lives on, so the runner must not outlive this.
                try:
                    _terminate_group(proc, kill_grace_s)
                except BaseException:  # interrupted again: no more grace
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise
                ship(wait=True)
                raise
            ship(wait=True)
        finally:
            reader.close()
        return {
            "started_at": started_at,
            "exit_code": code,
            "timed_out": timed_out,
            "result": _read_result(tdir / "result.json"),
        }
    finally:
        shutil.rmtree(tdir, ignore_errors=True)


# -- the executor -------------------------------------------------------------------------------


@dataclass
class _RayTask:
    spec: TaskSpec
    status: TaskStatus
    dir: Path
    ref: Any = None
    cancel_requested: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class RayExecutor:
    """Tasks on a Ray cluster; ``slots`` is the cluster's CPU count.

    ``address``: None (or "local") starts a private local Ray with ``num_cpus`` CPUs (default:
    this machine's); "auto", "host:port" or "ray://host:port" joins a cluster. ``preload``:
    modules each Ray worker's fork server imports once (as ``LocalExecutor``'s), so a callable
    task starts with them loaded; ``fork_server=False`` starts every task in a fresh interpreter.

    Ray queues what does not fit yet; a task that needs more CPUs, GPUs or memory than the whole
    cluster has is refused at submit (an autoscaling cluster should be joined when it has the
    nodes).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        kill_grace_s: float = 5.0,
        fork_server: bool = hasattr(os, "fork"),
        preload: Sequence[str] = (),
    ) -> None:
        if num_cpus is not None and address not in (None, "local"):
            raise InvalidArgument.for_field(
                "num_cpus", "only for a Ray started here (address None); a cluster has its own"
            )
        if num_cpus is not None and num_cpus < 1:
            raise InvalidArgument.for_field("num_cpus", f"expected at least 1, got {num_cpus}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.kill_grace_s = kill_grace_s
        self.fork_server = fork_server
        self.preload = list(preload)
        try:
            _connect(address, num_cpus)
        except ShipyardError:
            raise
        except Exception as exc:
            raise Unavailable(
                f"could not connect to Ray at {address or 'a new local instance'}: {exc}",
                {"field": "ray_address"},
            ) from exc
        self._lock = threading.Lock()
        self._tasks: dict[str, _RayTask] = {}
        self._closed = False
        self._resources: tuple[float, dict[str, float]] = (0.0, {})
        self._remote_run: Any = ray.remote(_run_on_node)
        try:
            self._sink: Any = self._new_sink()
            # Started now, so that a cluster that cannot run it says so here, not by losing logs.
            ray.get(self._sink.drain.remote(), timeout=120)
        except Exception as exc:
            _disconnect()
            raise Unavailable(
                f"the Ray cluster could not start the executor's log actor: {exc}",
                {"field": "ray_address"},
            ) from exc
        self._wake = threading.Event()
        self._follower = threading.Thread(target=self._follow, name="ray-executor", daemon=True)
        self._follower.start()

    @staticmethod
    def _new_sink() -> Any:
        return ray.remote(_LogSink).options(num_cpus=0, max_restarts=0, max_concurrency=1).remote()

    # -- capacity

    def _cluster(self) -> dict[str, float]:
        """The cluster's total resources, re-read at most every 5 s (nodes come and go)."""
        at, res = self._resources
        if time.monotonic() - at > 5.0 or not res:
            res = dict(ray.cluster_resources())
            self._resources = (time.monotonic(), res)
        return res

    @property
    def slots(self) -> int:
        return max(1, int(self._cluster().get("CPU", 0)))

    # -- the protocol

    def submit(self, spec: TaskSpec) -> str:
        data = spec.check()
        if self._closed:
            raise InvalidArgument("the executor is shut down")
        res = self._cluster()
        if spec.cpus > res.get("CPU", 0):
            raise InvalidArgument.for_field(
                "cpus",
                f"the task needs {spec.cpus} CPUs; the Ray cluster has {int(res.get('CPU', 0))}",
            )
        if spec.gpus > res.get("GPU", 0):
            raise InvalidArgument.for_field(
                "gpus",
                f"the task needs {spec.gpus} GPUs; the Ray cluster has {res.get('GPU', 0):g}",
            )
        if spec.memory_gb is not None and spec.memory_gb * _GIB > res.get("memory", 0):
            raise InvalidArgument.for_field(
                "memory_gb",
                f"the task needs {spec.memory_gb:g} GiB; the Ray cluster has "
                f"{res.get('memory', 0) / _GIB:.1f} GiB for tasks",
            )
        task_id = new_id()
        tdir = self.root / task_id
        tdir.mkdir(parents=True)
        (tdir / "task.json").write_bytes(data)
        (tdir / "task.log").touch()
        status = TaskStatus(
            id=task_id,
            name=spec.name or (spec.target or spec.command[0]),  # type: ignore[index]
            state=TaskState.QUEUED,
            log_path=str(tdir / "task.log"),
            submitted_at=time.time(),
        )
        options: dict[str, Any] = {
            "num_cpus": spec.cpus,
            "max_retries": 0,
            "retry_exceptions": False,
            "name": f"shipyard:{status.name}",
        }
        if spec.gpus:
            options["num_gpus"] = spec.gpus
        if spec.memory_gb is not None:
            options["memory"] = int(spec.memory_gb * _GIB)
        with self._lock:
            if self._closed:
                raise InvalidArgument("the executor is shut down")
            task = _RayTask(spec, status, tdir)
            self._tasks[task_id] = task
            task.ref = self._remote_run.options(**options).remote(
                self._sink,
                task_id,
                data,
                dict(spec.env),
                spec.cwd,
                spec.timeout_s,
                self.kill_grace_s,
                spec.target is not None,
                # CUDA and fork do not mix: a GPU task gets a fresh interpreter.
                self.fork_server and not spec.gpus,
                self.preload,
            )
        self._wake.set()
        return task_id

    def _get(self, task_id: str) -> _RayTask:
        t = self._tasks.get(task_id)
        if t is None:
            raise NotFound(f"task {task_id} not found", {"field": "task_id"})
        return t

    def status(self, task_id: str) -> TaskStatus:
        with self._lock:
            return TaskStatus(**self._get(task_id).status.__dict__)

    def cancel(self, task_id: str) -> TaskStatus:
        with self._lock:
            t = self._get(task_id)
            if t.status.state.final:
                return TaskStatus(**t.status.__dict__)
            first = not t.cancel_requested
            t.cancel_requested = True
        # Queued: Ray drops it. Running: the node's task stops the runner (SIGTERM, then SIGKILL).
        # Asked once: a second interrupt would cut the runner's grace period short.
        if first:
            with contextlib.suppress(Exception):
                ray.cancel(t.ref, force=False)
        if not t.done.wait(self.kill_grace_s + 5):
            with contextlib.suppress(Exception):
                ray.cancel(t.ref, force=True)
            t.done.wait(30)
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
            if self._closed:
                return
            self._closed = True
            ids = [tid for tid, t in self._tasks.items() if not t.status.state.final]
        # Ask every task to stop at once, then wait, so the grace periods overlap.
        for tid in ids:
            threading.Thread(target=self.cancel, args=(tid,), daemon=True).start()
        for tid in ids:
            self._tasks[tid].done.wait(self.kill_grace_s + 10)
        self._wake.set()
        self._follower.join(timeout=5)
        with contextlib.suppress(Exception):
            ray.kill(self._sink)
        _disconnect()

    def forget(self, task_id: str) -> None:
        """Drop a final task's in-memory status (its files stay)."""
        with self._lock:
            t = self._tasks.get(task_id)
            if t is not None and t.status.state.final:
                del self._tasks[task_id]

    # -- following the tasks: one thread for all of them

    def _follow(self) -> None:
        while True:
            with self._lock:
                running = {t.ref: t for t in self._tasks.values() if not t.done.is_set()}
                closed = self._closed
            if not running:
                if closed:
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                refs = list(running)
                ready, _ = ray.wait(refs, num_returns=1, timeout=_POLL_S)
                if ready:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            except Exception as exc:
                if not ray.is_initialized():  # the connection is gone: so are the tasks
                    for t in running.values():
                        self._end(t, error={"type": type(exc).__name__, "message": str(exc)})
                    return
                time.sleep(_POLL_S)
                continue
            # Drained after the wait: a finished task's last chunk is in the sink by now.
            self._apply(self._drain())
            for ref in ready:
                t = running[ref]
                try:
                    self._finish(t, ref)
                except Exception as exc:  # never leave a task unfinished (nor this thread dead)
                    if not t.done.is_set():
                        self._end(t, error={"type": type(exc).__name__, "message": str(exc)})

    def _drain(self) -> list[tuple[str, str, Any]]:
        try:
            events: list[tuple[str, str, Any]] = ray.get(self._sink.drain.remote(), timeout=30)
            return events
        except ray.exceptions.RayActorError:
            # The sink's node died: a new sink for the tasks submitted from now on (those
            # running keep their results; the rest of their logs is lost).
            self._sink = self._new_sink()
        except Exception:  # a slow or failed call: the chunks wait in the sink for the next
            pass
        return []

    def _apply(self, events: list[tuple[str, str, Any]]) -> None:
        for task_id, kind, payload in events:
            with self._lock:
                t = self._tasks.get(task_id)
                if t is None:
                    continue
                if kind == "started" and t.status.state == TaskState.QUEUED:
                    t.status.state = TaskState.RUNNING
                    # The node's clock, kept within what this process saw.
                    t.status.started_at = min(
                        max(float(payload["at"]), t.status.submitted_at), time.time()
                    )
            if kind == "log":
                # (A log folder removed under a running task loses its log, not its status.)
                with contextlib.suppress(OSError), open(t.dir / "task.log", "ab") as f:
                    f.write(payload)

    def _finish(self, t: _RayTask, ref: Any) -> None:
        try:
            out = ray.get(ref)
        except Exception as exc:
            cancelled = isinstance(exc, ray.exceptions.TaskCancelledError) or (
                isinstance(exc, ray.exceptions.RayTaskError)
                and isinstance(exc.cause, ray.exceptions.TaskCancelledError | KeyboardInterrupt)
            )
            if t.cancel_requested or cancelled:
                self._end(t, cancelled=True)
            else:
                message = str(exc).strip().splitlines()
                self._end(
                    t,
                    error={
                        "type": type(exc).__name__,
                        "message": message[-1] if message else type(exc).__name__,
                    },
                )
            return
        if out.get("start_error"):
            self._end(t, error=out["start_error"])
            return
        with self._lock:
            if t.status.started_at is None:  # its start notice was lost with the sink
                t.status.started_at = min(
                    max(float(out["started_at"]), t.status.submitted_at), time.time()
                )
        code = out["exit_code"]
        result = out.get("result")
        if result is not None:
            with contextlib.suppress(OSError):
                (t.dir / "result.json").write_bytes(orjson.dumps(result))
        if t.cancel_requested:
            self._end(t, code=code, cancelled=True)
        elif out.get("timed_out"):
            self._end(
                t,
                code=code,
                error={"type": "Timeout", "message": f"ran past {t.spec.timeout_s} s"},
            )
        elif code == 0 and result is not None and result.get("ok"):
            self._end(t, code=code, value=result.get("value"))
        elif result is not None and not result.get("ok"):
            self._end(t, code=code, error=result.get("error"))
        else:
            self._end(t, code=code, error={"type": "ExitCode", "message": _exit_message(code)})

    def _end(
        self,
        t: _RayTask,
        *,
        code: int | None = None,
        value: Any = None,
        error: dict[str, Any] | None = None,
        cancelled: bool = False,
    ) -> None:
        with self._lock:
            s = t.status
            s.exit_code = code
            s.finished_at = time.time()
            if s.started_at is not None:
                s.finished_at = max(s.finished_at, s.started_at)
            if cancelled:
                s.state = TaskState.CANCELLED
            elif error is not None:
                s.state = TaskState.FAILED
                s.error = error
            else:
                s.state = TaskState.SUCCEEDED
                s.result = value
            t.done.set()
