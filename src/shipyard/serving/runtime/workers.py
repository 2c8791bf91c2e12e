"""The two kinds of model worker, as the server sees them.

- ``ThreadWorker``: the engine in one thread of the server process (a one-worker endpoint).
- ``ProcessWorker``: a process forked from the fork server, fed over a private socketpair with
  length-prefixed pickles (see ``worker.py``); its death is noticed when the socket closes.

Both answer a batch by calling ``pool._on_result`` and report their end with ``pool._on_exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.serving.runtime.wire import JSON_CT, error_body
from shipyard.serving.runtime.worker import _LEN, frame

if TYPE_CHECKING:
    from shipyard.serving.runtime.pool import Lane, Pool

Result = tuple[int, bytes, bytes, Any, Any]

_STATE_STARTING, _STATE_READY, _STATE_STOPPING, _STATE_DEAD = (
    "starting",
    "ready",
    "stopping",
    "dead",
)

# A forked worker's exit status is a few bytes the fork server writes once to its sentinel, and
# ``Process.start()`` polls every live child (multiprocessing's ``_cleanup``). Two threads polling
# one sentinel at once race for those bytes; the loser reads EOF and multiprocessing reports 255.
# So starts and polls take turns; waiting for an exit happens outside the lock.
_MP_LOCK = threading.Lock()


def _start_proc(proc: Any) -> None:
    with _MP_LOCK:
        proc.start()


def _reap(proc: Any, timeout: float) -> int | None:
    """Wait up to ``timeout`` for ``proc`` to end; its exit code, or None if it still runs."""
    from multiprocessing.connection import wait

    wait([proc.sentinel], timeout)
    with _MP_LOCK:
        code: int | None = proc.exitcode
        return code


@dataclass
class LoadSpec:
    key: str
    path: str
    name: str
    version: str
    trust_code: bool


def _unavailable(msg: str) -> Result:
    return (503, error_body(msg), JSON_CT, None, None)


@dataclass
class Batch:
    worker: BaseWorker
    lane: Lane
    futures: list[asyncio.Future[Result]]
    started: float


class BaseWorker:
    kind = "base"

    def __init__(self, pool: Pool, wid: int) -> None:
        self.pool = pool
        self.id = wid
        self.pid: int | None = None
        self.state = _STATE_STARTING
        self.loaded: set[str] = set()
        self.batches: dict[int, Batch] = {}
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.idle_since = time.monotonic()
        self.done_batches = 0
        self.exit_reason: str | None = None

    @property
    def busy(self) -> int:
        return len(self.batches)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "kind": self.kind,
            "state": self.state,
            "inflight_batches": len(self.batches),
            "inflight_requests": sum(len(b.futures) for b in self.batches.values()),
            "batches": self.done_batches,
            "models": sorted(self.loaded),
            "started_at": self.started_at,
        }

    async def start(self) -> None:
        raise NotImplementedError

    async def load(self, spec: LoadSpec) -> dict[str, Any]:
        raise NotImplementedError

    def unload(self, key: str) -> None:
        raise NotImplementedError

    def send_batch(self, bid: int, key: str, items: list[Any], want: bool) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """Stop now, whatever it is doing (a batch past its time)."""


# Import guards (see their modules): imported before anything can import pandas.
_GUARDS = (
    "shipyard.serving.runtime.no_extras",
    "shipyard.serving.runtime.no_pandas",
    "shipyard.serving.runtime.no_pyarrow",
)


def _new_engine(preload: list[str]) -> Any:
    import importlib

    for mod in preload:
        if mod in _GUARDS:
            importlib.import_module(mod)
    from shipyard.serving.runtime.engine import Engine

    return Engine()


class ThreadWorker(BaseWorker):
    """The engine in one thread of the server process."""

    kind = "thread"

    async def start(self) -> None:
        self.pid = os.getpid()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="shipyard-model")
        self.loop = asyncio.get_running_loop()
        # numpy and the model libraries are imported in the model thread, not on the event loop.
        self.engine = await self.loop.run_in_executor(
            self.executor, _new_engine, self.pool.s.preload
        )

    async def load(self, spec: LoadSpec) -> dict[str, Any]:
        info = await self.loop.run_in_executor(
            self.executor,
            self.engine.load,
            spec.key,
            spec.path,
            spec.name,
            spec.version,
            spec.trust_code,
        )
        return dict(info)

    def unload(self, key: str) -> None:
        self.executor.submit(self.engine.unload, key)

    def send_batch(self, bid: int, key: str, items: list[Any], want: bool) -> None:
        fut = self.loop.run_in_executor(self.executor, self.engine.run_batch, key, items, want)
        fut.add_done_callback(lambda f: self.pool._on_result(self, bid, f))

    async def stop(self) -> None:
        self.state = _STATE_STOPPING
        self.engine.models.clear()
        self.executor.shutdown(wait=False)
        self.pool._on_exit(self, crashed=False)


class _Conn(asyncio.Protocol):
    def __init__(self, worker: ProcessWorker) -> None:
        self.worker = worker
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        import pickle

        buf = self.buf
        buf += data
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            msg = pickle.loads(bytes(buf[4 : 4 + n]))
            del buf[: 4 + n]
            self.worker._on_message(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker._on_lost()


class ProcessWorker(BaseWorker):
    kind = "process"
    _ids = itertools.count(1)

    async def start(self) -> None:
        from shipyard.serving.runtime import worker as worker_mod

        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctx = self.pool.mp_context()
        proc = ctx.Process(
            target=worker_mod.main, args=(child, self.id), name=f"shipyard-worker-{self.id}"
        )
        proc.daemon = True
        self.proc = proc
        self.pending: dict[int, asyncio.Future[Any]] = {}
        # start() talks to the fork server (and starts it the first time): not on the loop.
        await loop.run_in_executor(None, _start_proc, proc)
        child.close()
        self.pid = proc.pid
        self.conn = _Conn(self)
        parent.setblocking(False)
        await loop.create_unix_connection(lambda: self.conn, sock=parent)

    def _send(self, msg: Any) -> None:
        t = self.conn.transport
        if t is None or t.is_closing():
            raise ConnectionError("the worker is gone")
        t.write(frame(msg))

    async def load(self, spec: LoadSpec) -> dict[str, Any]:
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        self._send(("load", rid, spec.key, spec.path, spec.name, spec.version, spec.trust_code))
        ok, payload = await fut
        if not ok:
            raise RuntimeError(payload)
        return dict(payload)

    def unload(self, key: str) -> None:
        with contextlib.suppress(ConnectionError):
            self._send(("unload", key))

    def send_batch(self, bid: int, key: str, items: list[Any], want: bool) -> None:
        self._send(("b", bid, key, items, want))

    def _on_message(self, msg: Any) -> None:
        op = msg[0]
        if op == "r":
            self.pool._on_result(self, msg[1], msg[2])
        elif op in ("ok", "err"):
            fut = self.pending.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result((op == "ok", msg[2]))

    def _on_lost(self) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_result((False, "the worker exited while loading the model"))
        self.pending.clear()
        crashed = self.state != _STATE_STOPPING
        self.pool._on_exit(self, crashed=crashed)

    async def stop(self) -> None:
        self.state = _STATE_STOPPING
        with contextlib.suppress(ConnectionError):
            self._send(("stop",))
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, _reap, self.proc, 5) is None:
            self.kill()
        if self.conn.transport is not None:
            self.conn.transport.close()

    def kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    def exitcode(self) -> int | None:
        with contextlib.suppress(Exception):
            return _reap(self.proc, 5)
        return None
