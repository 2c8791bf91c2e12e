"""Model workers, the request queues in front of them, adaptive batching and scaling.

Adaptive batching: each hosted model has a lane (a queue). A request goes to a free worker at
once: at concurrency 1 nothing waits. While every worker is busy, requests queue, and the moment
a worker frees up it takes what is queued (up to ``max_batch_size``) as one batch. When recent
concurrency says more requests are on their way than are queued (clients whose answers just left
send again within a fraction of a millisecond), a free worker's batch may be held back for them,
at most ``max_wait_ms`` and at most half the model's recent batch time: for a model whose every
batch costs milliseconds this doubles the rows per batch; for a fast model the hold is too short
to bother and never happens. A full batch while every worker is busy is queued in the least
busy worker, so the worker starts it without a round trip.

Workers are processes started from a fork server that has already imported numpy, pandas and
the models' libraries, so a new worker costs a fork and a model load, not an interpreter start
(this is what keeps a cold start from zero under 2 s). With one worker, a thread of the server
process can be used instead (``ThreadWorker``): no copy of the request crosses a socket.

A worker that dies (a crash, ``kill -9``, a model that runs past ``request_timeout_s``) fails
only the batches it held, each request with a 503 that says so; queued requests wait for the
replacement, which is started at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shipyard.serving.runtime.wire import JSON_CT, error_body
from shipyard.serving.runtime.workers import (
    _STATE_DEAD,
    _STATE_READY,
    _STATE_STARTING,
    _STATE_STOPPING,
    BaseWorker,
    Batch,
    LoadSpec,
    ProcessWorker,
    Result,
    ThreadWorker,
    _unavailable,
)

__all__ = ["Batch", "Lane", "LoadSpec", "Pool", "PoolSettings", "preload_modules"]


class Lane:
    """The queue of one hosted model."""

    __slots__ = (
        "key",
        "queue",
        "timer",
        "shadow",
        "want_preds",
        "inflight",
        "requests",
        "batches",
        "rows",
        "peak_cur",
        "peak_prev",
        "peak_t",
        "batch_s",
        "fill_target",
        "held",
    )

    def __init__(self, key: str, shadow: bool = False) -> None:
        self.key = key
        self.want_preds = False  # answer with the predictions too (to compare with a shadow)
        self.queue: deque[tuple[Any, asyncio.Future[Result], float]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.shadow = shadow
        self.inflight = 0  # requests handed to workers, not yet answered
        self.requests = 0
        self.batches = 0
        self.rows = 0
        # Recent concurrency (requests queued or running, highest over the last 0.25-0.5 s)
        # and how long a batch takes (moving average): together they say whether a batch
        # is worth holding back for requests that are on their way.
        self.peak_cur = 0
        self.peak_prev = 0
        self.peak_t = 0.0
        self.batch_s = 0.0
        self.fill_target = 0
        self.held = 0  # batches held back to fill

    def observe(self, now: float) -> None:
        if now - self.peak_t > 0.25:
            self.peak_prev, self.peak_cur, self.peak_t = self.peak_cur, 0, now
        total = len(self.queue) + self.inflight
        if total > self.peak_cur:
            self.peak_cur = total

    @property
    def peak(self) -> int:
        return max(self.peak_cur, self.peak_prev)


@dataclass
class PoolSettings:
    mode: str = "process"
    min_workers: int = 1
    max_workers: int = 1
    idle_to_zero_s: float | None = None
    target_inflight_per_worker: int = 8
    scale_down_after_s: float = 30.0
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    request_timeout_s: float = 60.0
    preload: list[str] = field(default_factory=list)


class Pool:
    def __init__(self, settings: PoolSettings, log: Callable[[str], None]) -> None:
        self.s = settings
        self.log = log
        self.workers: list[BaseWorker] = []
        self.lanes: dict[str, Lane] = {}
        self.specs: dict[str, LoadSpec] = {}
        self.info: dict[str, dict[str, Any]] = {}  # key -> what the last load reported
        self._bids = itertools.count(1)
        self._wids = itertools.count(1)
        self._ctx: Any = None
        self.restarts = 0
        self.last_crash: dict[str, Any] | None = None
        self.cold_starts = 0
        self.scale_ups = 0
        self.scale_downs = 0  # workers stopped for being idle (scaling to zero not included)
        self.scaled_to_zero_count = 0
        self.last_cold_start_s: float | None = None
        self.load_error: str | None = None
        self.last_request = time.monotonic()
        self._cold_t0: float | None = None
        self._crash_times: deque[float] = deque(maxlen=5)
        self._tick_task: asyncio.Task[None] | None = None
        self._starting = 0
        self.closed = False
        self.ever_ready = False
        self._restart_pending = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def mp_context(self) -> Any:
        if self._ctx is None:
            import multiprocessing as mp

            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(
                [
                    *self.s.preload,  # the import guards (no_extras, no_pandas, no_pyarrow) first
                    "shipyard.serving.runtime.worker",
                    "shipyard.serving.runtime.engine",
                ]
            )
            self._ctx = ctx
        return self._ctx

    async def start_loop(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._tick_task = asyncio.create_task(self._tick())

    async def start(self) -> None:
        """Start the first workers; each loads every registered model before taking work."""
        n = max(self.s.min_workers, 1)
        await asyncio.gather(*(self._start_worker(self._new_worker()) for _ in range(n)))

    async def close(self) -> None:
        self.closed = True
        if self._tick_task:
            self._tick_task.cancel()
        await asyncio.gather(*(w.stop() for w in list(self.workers)), return_exceptions=True)

    @property
    def degraded(self) -> bool:
        """A worker crashed and no worker is serving until its replacement is ready."""
        return self._restart_pending and not self.live

    @property
    def live(self) -> list[BaseWorker]:
        return [w for w in self.workers if w.state == _STATE_READY]

    # -- models ----------------------------------------------------------------------------

    def lane(self, key: str) -> Lane:
        return self.lanes[key]

    async def register(self, spec: LoadSpec, shadow: bool = False) -> dict[str, Any]:
        """Load ``spec`` on every running worker (workers started later load it too)."""
        self.specs[spec.key] = spec
        self.lanes.setdefault(spec.key, Lane(spec.key, shadow))
        targets = [w for w in self.workers if w.state in (_STATE_STARTING, _STATE_READY)]
        ready = [w for w in targets if w.state == _STATE_READY]
        try:
            infos = await asyncio.gather(*(self._load_on(w, spec) for w in ready))
        except Exception:
            self.specs.pop(spec.key, None)
            self.lanes.pop(spec.key, None)
            for w in self.workers:  # the workers where it did load
                if spec.key in w.loaded:
                    w.loaded.discard(spec.key)
                    w.unload(spec.key)
            raise
        if infos:
            self.info[spec.key] = infos[0]
        self._pump_all()
        return self.info.get(spec.key, {})

    async def _load_on(self, w: BaseWorker, spec: LoadSpec) -> dict[str, Any]:
        info = await w.load(spec)
        w.loaded.add(spec.key)
        self.info.setdefault(spec.key, info)
        return info

    async def unregister(self, key: str) -> None:
        """Stop routing to ``key`` once its queue and batches are done; unload it."""
        lane = self.lanes.get(key)
        self.specs.pop(key, None)
        while lane is not None and (lane.queue or lane.inflight):
            await asyncio.sleep(0.005)
        self.lanes.pop(key, None)
        self.info.pop(key, None)
        for w in self.workers:
            if key in w.loaded:
                w.loaded.discard(key)
                w.unload(key)

    # -- workers ---------------------------------------------------------------------------

    def _new_worker(self) -> BaseWorker:
        """Count the worker at once, so that a burst of requests starts one worker, not many."""
        cls = ThreadWorker if self.s.mode == "thread" else ProcessWorker
        w = cls(self, next(self._wids))
        self.workers.append(w)
        self._starting += 1
        return w

    async def _start_worker(self, w: BaseWorker) -> None:
        try:
            if self.closed:
                raise RuntimeError("the server is stopping")
            await w.start()
            # Every hosted model, including those registered while this one loads.
            while missing := [s for s in self.specs.values() if s.key not in w.loaded]:
                await self._load_on(w, missing[0])
        except Exception as e:
            self.load_error = str(e)
            self.log(f"worker {w.id} failed to start: {e}")
            w.state = _STATE_STOPPING
            with contextlib.suppress(Exception):
                await w.stop()
            if w in self.workers:
                self.workers.remove(w)
            self._fail_queued(f"the model could not be loaded: {e}")
            return
        finally:
            self._starting -= 1
        if w.state != _STATE_STARTING:
            return  # it died while loading (reported by _on_exit)
        w.state = _STATE_READY
        w.ready_at = time.time()
        w.idle_since = time.monotonic()
        self.load_error = None
        self.ever_ready = True
        self._restart_pending = False
        if self._cold_t0 is not None:
            self.last_cold_start_s = round(time.monotonic() - self._cold_t0, 4)
            self.cold_starts += 1
            self._cold_t0 = None
            self.log(f"cold start took {self.last_cold_start_s:.3f} s")
        self._pump_all()

    def spawn(self) -> None:
        if not self.closed:
            self._launch(self._new_worker())

    def _launch(self, w: BaseWorker) -> None:
        task = asyncio.get_running_loop().create_task(self._start_worker(w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_exit(self, w: BaseWorker, crashed: bool) -> None:
        prev = w.state
        w.state = _STATE_DEAD
        if w in self.workers:
            self.workers.remove(w)
        reason = w.exit_reason or "the model worker crashed"
        for bid, batch in list(w.batches.items()):
            del w.batches[bid]
            msg = (
                f"{reason} (pid {w.pid}) while handling this request; "
                "it is being restarted: retry the request"
            )
            self._finish(batch, [_unavailable(msg)] * len(batch.futures))
        if not crashed or self.closed:
            return
        self.restarts += 1
        self._restart_pending = True
        crash: dict[str, Any] = {
            "worker": w.id,
            "pid": w.pid,
            "exit_code": None,
            "reason": reason,
            "state": prev,
            "at": time.time(),
        }
        self.last_crash = crash
        if isinstance(w, ProcessWorker):
            # The exit status comes from the fork server: wait for it off the event loop.
            fut = self.loop.run_in_executor(None, w.exitcode)

            def noted(f: asyncio.Future[int | None]) -> None:
                crash["exit_code"] = f.result()
                self.log(f"worker {w.id} (pid {w.pid}) exited with code {crash['exit_code']}")

            fut.add_done_callback(noted)
        self.log(f"worker {w.id} (pid {w.pid}) is gone: {reason}; restarting it")
        now = time.monotonic()
        self._crash_times.append(now)
        recent = sum(1 for t in self._crash_times if now - t < 10)
        delay = 0.0 if recent <= 1 else min(0.25 * 2 ** (recent - 2), 5.0)
        # Counted now (not when the delay is over), so the minimum check does not add another.
        replacement = self._new_worker()
        self.loop.call_later(delay, self._launch, replacement)

    # -- requests --------------------------------------------------------------------------

    def submit(self, key: str, item: Any) -> asyncio.Future[Result]:
        lane = self.lanes.get(key)
        fut: asyncio.Future[Result] = self.loop.create_future()
        if lane is None:
            fut.set_result(_unavailable(f"model {key!r} is not being served"))
            return fut
        now = time.monotonic()
        self.last_request = now
        lane.queue.append((item, fut, now))
        lane.requests += 1
        live = self.live
        if not live:
            if not self.workers and not self._starting:
                self._cold_t0 = now
                self.log("cold start: no worker running, starting one")
                self.spawn()
            elif self.load_error and not self._starting:
                self._fail_queued(f"the model could not be loaded: {self.load_error}")
            return fut
        lane.observe(now)
        if lane.timer is not None:  # held back for a fuller batch
            if len(lane.queue) >= lane.fill_target:
                self._release(lane)
            return fut
        self._pump(lane, live)
        if lane.queue and lane.timer is None:
            self._maybe_scale_up(live)
            if len(lane.queue) >= self.s.max_batch_size:
                self._pipeline(lane, live)
        return fut

    def _pump(self, lane: Lane, live: list[BaseWorker], hold: bool = True) -> None:
        while lane.queue:
            w = next((w for w in live if not w.batches and lane.key in w.loaded), None)
            if w is None or lane.timer is not None:
                return
            if hold and self._hold(lane, live):
                return
            hold = True
            self._dispatch(lane, w)

    def _hold(self, lane: Lane, live: list[BaseWorker]) -> bool:
        """Hold a free worker's batch back for requests that are surely on their way?

        Clients whose answers just went out send their next request within a fraction of a
        millisecond; for a model whose every batch costs milliseconds (a forest), waiting for
        them doubles the rows per batch. So: when recent concurrency says more requests are
        coming than are queued, wait for them, at most ``max_wait_ms`` and at most half a
        batch's time. At concurrency 1 the queue already holds everything: no wait.
        """
        serving = sum(1 for w in live if lane.key in w.loaded) or 1
        target = min(self.s.max_batch_size, -(-lane.peak // serving))
        if len(lane.queue) >= target:
            return False
        wait = min(self.s.max_wait_ms / 1000, 0.5 * lane.batch_s)
        if wait < 0.0002:
            return False
        lane.fill_target = target
        lane.held += 1
        lane.timer = self.loop.call_later(wait, self._release, lane)
        return True

    def _release(self, lane: Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        live = self.live
        if live:
            self._pump(lane, live, hold=False)

    def _pump_all(self) -> None:
        live = self.live
        if not live:
            return
        for lane in sorted(self.lanes.values(), key=lambda ln: ln.shadow):
            if lane.queue:
                self._pump(lane, live)

    def _pipeline(self, lane: Lane, live: list[BaseWorker]) -> None:
        """A full batch while every worker is busy: queue it in the least busy worker."""
        cands = [w for w in live if lane.key in w.loaded and w.busy < 2]
        if cands:
            self._dispatch(lane, min(cands, key=lambda w: w.busy))

    def _dispatch(self, lane: Lane, w: BaseWorker) -> None:
        q = lane.queue
        n = min(len(q), self.s.max_batch_size)
        entries = [q.popleft() for _ in range(n)]
        bid = next(self._bids)
        futs = [e[1] for e in entries]
        batch = Batch(w, lane, futs, time.monotonic())
        w.batches[bid] = batch
        lane.inflight += n
        lane.batches += 1
        lane.rows += n
        # A worker going away answers the batch from its _on_exit.
        with contextlib.suppress(ConnectionError):
            w.send_batch(bid, lane.key, [e[0] for e in entries], lane.want_preds)

    def _on_result(self, w: BaseWorker, bid: int, results: Any) -> None:
        batch = w.batches.pop(bid, None)
        if batch is None:
            return
        if isinstance(results, asyncio.Future):
            try:
                results = results.result()
            except Exception as e:  # a bug in the engine, not the caller's request
                body = error_body(f"internal error: {type(e).__name__}: {e}")
                results = [(500, body, JSON_CT, None, None)] * len(batch.futures)
        w.done_batches += 1
        now = time.monotonic()
        took = now - batch.started
        lane = batch.lane
        lane.batch_s = took if lane.batch_s == 0.0 else 0.8 * lane.batch_s + 0.2 * took
        if not w.batches:
            w.idle_since = now
        self._finish(batch, results)
        self._pump_all()

    def _finish(self, batch: Batch, results: list[Result]) -> None:
        batch.lane.inflight -= len(batch.futures)
        for fut, res in zip(batch.futures, results, strict=True):
            if not fut.done():
                fut.set_result(res)

    def _fail_queued(self, msg: str) -> None:
        for lane in self.lanes.values():
            while lane.queue:
                _, fut, _ = lane.queue.popleft()
                if not fut.done():
                    fut.set_result(_unavailable(msg))

    # -- scaling ---------------------------------------------------------------------------

    def inflight(self) -> int:
        return sum(len(ln.queue) + ln.inflight for ln in self.lanes.values())

    def _maybe_scale_up(self, live: list[BaseWorker]) -> None:
        if self.s.mode == "thread" or self._starting:
            return
        if len(self.workers) >= self.s.max_workers:
            return
        if self.inflight() / max(len(live), 1) > self.s.target_inflight_per_worker:
            self.log(f"scaling up to {len(self.workers) + 1} workers")
            self.scale_ups += 1
            self.spawn()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            try:
                self._check()
            except Exception as e:  # pragma: no cover - keep the loop alive
                self.log(f"pool check failed: {e}")

    def _check(self) -> None:
        now = time.monotonic()
        # A batch past its time: the worker is stuck in the model. Kill it; its requests get a
        # 503 and a replacement starts.
        for w in list(self.workers):
            for bid, b in list(w.batches.items()):
                if now - b.started > self.s.request_timeout_s:
                    w.exit_reason = (
                        f"the model worker ran past request_timeout_s "
                        f"({self.s.request_timeout_s:g} s) and was stopped"
                    )
                    if isinstance(w, ProcessWorker):
                        w.kill()
                    else:
                        del w.batches[bid]
                        self._finish(b, [_unavailable(w.exit_reason)] * len(b.futures))
                    break
        idle_all = self.inflight() == 0
        zero = self.s.idle_to_zero_s
        if (
            zero is not None
            and idle_all
            and self.workers
            and not self._starting
            and now - self.last_request >= zero
        ):
            self.log(f"no request for {zero:g} s: scaling to zero")
            self.scaled_to_zero_count += 1
            for w in list(self.workers):
                self._retire(w)
            return
        live = self.live
        if (
            len(live) > max(self.s.min_workers, 1)
            and not self._starting
            and (zero is None or now - self.last_request < zero)
        ):
            idle = [
                w for w in live if not w.batches and now - w.idle_since > self.s.scale_down_after_s
            ]
            if idle and self.inflight() / (len(live) - 1) <= self.s.target_inflight_per_worker:
                w = min(idle, key=lambda w: w.idle_since)
                self.log(f"worker {w.id} idle for {self.s.scale_down_after_s:g} s: stopping it")
                self.scale_downs += 1
                self._retire(w)
        # Below the minimum (after a failed start): top up.
        active = len(self.workers)
        recently_used = zero is None or now - self.last_request < zero
        if (
            active < self.s.min_workers
            and not self._starting
            and recently_used
            and not self.load_error
        ):
            self.spawn()

    def _retire(self, w: BaseWorker) -> None:
        w.state = _STATE_STOPPING
        if w in self.workers:
            self.workers.remove(w)
        task = self.loop.create_task(w.stop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reporting -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.s.mode,
            "count": len(self.workers),
            "ready": len(self.live),
            "starting": self._starting,
            "min": self.s.min_workers,
            "max": self.s.max_workers,
            "pids": [w.pid for w in self.workers if w.pid is not None],
            "items": [w.describe() for w in self.workers],
            "restarts": self.restarts,
            "last_crash": self.last_crash,
            "cold_starts": self.cold_starts,
            "scale_ups": self.scale_ups,
            "scale_downs": self.scale_downs,
            "scaled_to_zero_times": self.scaled_to_zero_count,
            "last_cold_start_s": self.last_cold_start_s,
            "scaled_to_zero": not self.workers and not self._starting and self.ever_ready,
            "inflight": self.inflight(),
        }


def preload_modules(flavors: set[str], *, pandas: bool = True, skops: bool = True) -> list[str]:
    """What the fork server imports ahead, so a new worker only forks and loads its model
    (skops only where a scikit-learn model is stored with it, not as model.npz)."""
    mods = ["numpy", *(["pandas"] if pandas else []), "orjson", "shipyard.models.format"]
    if "sklearn" in flavors:
        mods += [
            *(["shipyard.serving.runtime.lean_skops"] if skops else []),
            "sklearn.linear_model",
            "sklearn.ensemble",
            "sklearn.tree",
        ]
    if "lightgbm" in flavors:
        mods.append("lightgbm")
    if "xgboost" in flavors:
        mods.append("xgboost")
    if "onnx" in flavors:
        mods.append("onnxruntime")
    if "python_function" in flavors:
        mods.append("cloudpickle")
    return mods
