"""Multi-model endpoints: ``<models_dir>/<name>[/<version>]`` loaded on first request, least
recently used evicted when the loaded models' memory passes the budget.

A model's memory is estimated once, when it first loads: the growth of the worker's resident set
while loading and warming it, or its size on disk if that is larger (a small model's pages can
come from memory the allocator already held). The estimate is kept per folder, so a model that
is evicted and loaded again counts the same. The budget is per worker process: each worker holds
every loaded model.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.serving.runtime.config import ModelSpec, MultiModelConfig
from shipyard.serving.runtime.meta import MANIFEST_NAME, ModelMeta
from shipyard.serving.runtime.pool import LoadSpec, Pool
from shipyard.serving.runtime.state import Variant

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Entry:
    name: str
    version: str
    key: str
    path: str
    variant: Variant
    ready: asyncio.Future[None]
    last_used: float = field(default_factory=time.monotonic)
    loads: int = 1


class MultiModels:
    def __init__(
        self, cfg: MultiModelConfig, pool: Pool, trust_code: bool, log: Callable[[str], None]
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.trust_code = trust_code
        self.log = log
        self.root = Path(cfg.models_dir).resolve()
        self.entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self.estimates: dict[str, int] = {}
        self.loads = 0
        self.evictions = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def budget_bytes(self) -> int:
        return int(self.cfg.memory_budget_mb * 1024 * 1024)

    def resolve(self, name: str, version: str | None) -> tuple[str, str]:
        """The folder of ``name`` (and version), inside ``models_dir``; NotFound otherwise."""
        for label, seg in (("model name", name), ("model version", version)):
            if seg is not None and (not _SEGMENT.match(seg) or ".." in seg):
                raise InvalidArgument.for_field(
                    label, f"{seg!r} is not a valid name (letters, digits, '.', '_', '-')"
                )
        base = self.root / name
        if version is not None:
            folder = base / version
        elif (base / MANIFEST_NAME).is_file():
            folder, version = base, "1"
        else:
            versions = (
                [d.name for d in base.iterdir() if (d / MANIFEST_NAME).is_file()]
                if base.is_dir()
                else []
            )
            if not versions:
                raise NotFound(f"model {name!r} was not found in this multi-model endpoint")
            version = max(versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))
            folder = base / version
        real = folder.resolve()
        if not real.is_relative_to(self.root):
            raise InvalidArgument.for_field("model name", f"{name!r} leaves the models folder")
        if not (real / MANIFEST_NAME).is_file():
            raise NotFound(f"model {name!r} version {version!r} was not found")
        return str(real), version

    async def get(self, name: str, version: str | None) -> Entry:
        path, version = self.resolve(name, version)
        key = f"mm:{name}/{version}"
        e = self.entries.get(key)
        if e is None or e.path != path:
            e = self._start_load(name, version, key, path)
        await asyncio.shield(e.ready)
        e.last_used = time.monotonic()
        self.entries.move_to_end(key)
        return e

    def peek(self, name: str, version: str | None) -> tuple[Entry | None, str, str]:
        path, version = self.resolve(name, version)
        return self.entries.get(f"mm:{name}/{version}"), path, version

    def _start_load(self, name: str, version: str, key: str, path: str) -> Entry:
        meta = ModelMeta.read(path)
        spec = ModelSpec(name=name, model_path=path, model_name=name, model_version=version)
        variant = Variant(spec, key, meta)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        e = Entry(name, version, key, path, variant, ready)
        self.entries[key] = e
        self.loads += 1
        task = asyncio.get_running_loop().create_task(self._load(e))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return e

    async def _load(self, e: Entry) -> None:
        t0 = time.perf_counter()
        try:
            info = await self.pool.register(
                LoadSpec(e.key, e.path, e.name, e.version, self.trust_code)
            )
        except Exception as exc:
            self.entries.pop(e.key, None)
            e.ready.set_exception(
                RuntimeError(f"model {e.name!r} version {e.version!r} could not be loaded: {exc}")
            )
            e.ready.exception()  # retrieved: no "never retrieved" warning when nobody waits
            return
        if info:
            self._estimate(e)
        self.log(f"loaded model {e.name}/{e.version} in {time.perf_counter() - t0:.3f} s")
        e.ready.set_result(None)
        await self.enforce(keep=e.key)

    def _estimate(self, e: Entry) -> int:
        if e.path not in self.estimates:
            info = self.pool.info.get(e.key)
            if not info:
                return 0  # not loaded by any worker yet (a cold start is on its way)
            self.estimates[e.path] = max(
                int(info.get("rss_bytes", 0)), int(info.get("disk_bytes", 0))
            )
        return self.estimates[e.path]

    def used_bytes(self) -> int:
        return sum(self._estimate(e) for e in self.entries.values() if e.ready.done())

    async def enforce(self, keep: str | None = None) -> None:
        """Evict least recently used models until the estimate fits the budget."""
        while self.used_bytes() > self.budget_bytes:
            victim = next(
                (
                    e
                    for e in self.entries.values()
                    if e.key != keep and e.ready.done() and not self._busy(e)
                ),
                None,
            )
            if victim is None:
                return
            self.entries.pop(victim.key, None)
            self.evictions += 1
            self.log(f"evicting model {victim.name}/{victim.version} (least recently used)")
            await self.pool.unregister(victim.key)

    def _busy(self, e: Entry) -> bool:
        lane = self.pool.lanes.get(e.key)
        return lane is not None and bool(lane.queue or lane.inflight)

    def describe(self) -> dict[str, Any]:
        return {
            "models_dir": str(self.root),
            "memory_budget_mb": self.cfg.memory_budget_mb,
            "memory_used_mb": round(self.used_bytes() / 1024 / 1024, 3),
            "loads": self.loads,
            "evictions": self.evictions,
            "loaded": [
                {
                    "name": e.name,
                    "version": e.version,
                    "estimate_mb": round(self._estimate(e) / 1024 / 1024, 3),
                    "idle_s": round(time.monotonic() - e.last_used, 3),
                    "requests": e.variant.stats.requests,
                }
                for e in self.entries.values()
                if e.ready.done() and not e.ready.exception()
            ],
        }
