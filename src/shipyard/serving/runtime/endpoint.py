"""One endpoint's serving state over its life: boot, traffic, shadow, capture, reload, stats.

Reload (``POST /shipyard/reload``) re-reads the config file. Variants whose model is unchanged
keep serving untouched (a weight change is instant); new models are loaded and warmed on every
worker first, then the routing is swapped in one assignment, and only then do the replaced
variants drain (their queued and running requests finish) and unload. A client that keeps
sending requests through a reload sees no failed request. A reload whose new model cannot be
loaded changes nothing and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument, ShipyardError
from shipyard.serving.runtime.capture import CaptureWriter
from shipyard.serving.runtime.config import ModelSpec, RuntimeConfig, load_config
from shipyard.serving.runtime.meta import MANIFEST_NAME, ModelMeta
from shipyard.serving.runtime.multimodel import MultiModels
from shipyard.serving.runtime.pool import LoadSpec, Pool, PoolSettings, preload_modules
from shipyard.serving.runtime.state import Routing, ShadowStats, Variant, agree

VERSION = "0.1.0"


def log(msg: str) -> None:
    print(f"shipyard-runtime: {msg}", file=sys.stderr, flush=True)


def _flavors_under(root: str, limit: int = 2000) -> set[str]:
    """The flavors of the models in a multi-model directory (``<name>[/<version>]``)."""
    found: set[str] = set()
    seen = 0
    for manifest in [
        *Path(root).glob("*/" + MANIFEST_NAME),
        *Path(root).glob("*/*/" + MANIFEST_NAME),
    ]:
        seen += 1
        if seen > limit:
            break
        try:
            found.add(str(json.loads(manifest.read_bytes()).get("flavor")))
        except (OSError, ValueError, AttributeError):
            continue
    return found


def pool_settings(cfg: RuntimeConfig, mode: str, preload: list[str]) -> PoolSettings:
    s = cfg.scaling
    return PoolSettings(
        mode=mode,
        min_workers=s.min_workers,
        max_workers=s.max_workers,
        idle_to_zero_s=s.idle_to_zero_s,
        target_inflight_per_worker=s.target_inflight_per_worker,
        scale_down_after_s=s.scale_down_after_s,
        max_batch_size=cfg.batching.max_batch_size,
        max_wait_ms=cfg.batching.max_wait_ms,
        request_timeout_s=cfg.request_timeout_s,
        preload=preload,
    )


class EndpointRuntime:
    def __init__(self, cfg: RuntimeConfig, config_path: str | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.mode = cfg.worker_mode
        metas = [self._meta_of(s) for s in cfg.all_models()]
        flavors = {m.flavor if m else "sklearn" for m in metas}
        if cfg.multi_model is not None:
            flavors |= _flavors_under(cfg.multi_model.models_dir)
        # No pandas at all when every model takes its float matrix (models known up front).
        lean = cfg.multi_model is None and all(m is not None and m.array_input for m in metas)
        skops = cfg.multi_model is not None or any(m is None or m.needs_skops for m in metas)
        preload = preload_modules(flavors, pandas=not lean, skops=skops)
        if lean:
            preload.insert(0, "shipyard.serving.runtime.no_pandas")
        elif not cfg.trust_code:
            preload.insert(0, "shipyard.serving.runtime.no_pyarrow")
        if not cfg.trust_code:  # no model code runs here: keep out what only training uses
            preload.insert(0, "shipyard.serving.runtime.no_extras")
        self.pool = Pool(pool_settings(cfg, self.mode, preload), log)
        self.routing = Routing(cfg.endpoint, [], None)
        self.multi: MultiModels | None = None
        self.capture: CaptureWriter | None = None
        self.status = "Creating"
        self.error: str | None = None
        self.booted = False
        # Set when boot ends, loaded or failed: a prediction that arrives while the models load
        # waits for it (see app.py).
        self.boot_ended = asyncio.Event()
        self.started = time.time()
        self.reloads = 0
        self.last_reload: dict[str, Any] | None = None
        self._gen = itertools.count(1)
        self._reload_lock = asyncio.Lock()
        self._rid = itertools.count(1)
        self._rid_prefix = os.urandom(4).hex()
        self._background: set[asyncio.Task[Any]] = set()
        self.on_fatal: Any = None  # set by the server: stop the process after a failed boot

    @staticmethod
    def _meta_of(spec: ModelSpec) -> ModelMeta | None:
        try:
            return ModelMeta.read(spec.model_path)
        except ShipyardError:
            return None

    # -- life --------------------------------------------------------------------------------

    async def boot(self) -> None:
        try:
            await self._boot()
        finally:
            self.boot_ended.set()

    async def wait_booted(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the boot to end; whether the endpoint is booted."""
        if not self.booted and not self.boot_ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.boot_ended.wait(), timeout_s)
        return self.booted

    async def _boot(self) -> None:
        try:
            await self.pool.start_loop()
            variants, shadow = self._build(self.cfg, {})
            for v in [*variants, *([shadow] if shadow else [])]:
                await self.pool.register(self._load_spec(v), shadow=v is shadow)
            self._set_routing(variants, shadow)
            self._apply_side_settings(self.cfg)
            await self.pool.start()
            if self.pool.load_error:
                raise RuntimeError(self.pool.load_error)
        except Exception as e:
            self.status = "Failed"
            self.error = e.message if isinstance(e, ShipyardError) else str(e)
            log(f"error: the endpoint could not start: {self.error}")
            if self.on_fatal is not None:
                self.on_fatal()
            return
        self.booted = True
        self.status = "InService"
        log(
            f"endpoint {self.cfg.endpoint!r} ready on http://{self.cfg.host}:{self.cfg.port} "
            f"({self.mode} workers: {len(self.pool.workers)}; "
            f"variants: {', '.join(v.name for v in self.routing.variants) or '-'})"
        )

    async def close(self) -> None:
        await self.pool.close()
        if self.capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.capture.close)

    def _build(
        self, cfg: RuntimeConfig, current: dict[str, Variant]
    ) -> tuple[list[Variant], Variant | None]:
        """Variants for ``cfg``, reusing the current ones whose model is unchanged."""

        def make(spec: ModelSpec) -> Variant:
            old = current.get(spec.name)
            if old is not None and old.spec.same_model(spec):
                return Variant(spec, old.key, old.meta, old.stats, old.shadow_stats)
            try:
                meta = ModelMeta.read(spec.model_path)
            except ShipyardError as e:
                raise InvalidArgument.for_field(
                    f"variant {spec.name}", f"model_path: {e.message}"
                ) from None
            return Variant(spec, f"{spec.name}#{next(self._gen)}", meta)

        variants = [make(s) for s in cfg.variants]
        shadow = make(cfg.shadow) if cfg.shadow else None
        if shadow is not None and shadow.shadow_stats is None:
            shadow.shadow_stats = ShadowStats()
        return variants, shadow

    def _load_spec(self, v: Variant) -> LoadSpec:
        s = v.spec
        return LoadSpec(v.key, s.model_path, s.model_name, s.model_version, self.cfg.trust_code)

    def _set_routing(self, variants: list[Variant], shadow: Variant | None) -> None:
        keys = {v.key for v in variants}
        for key, lane in self.pool.lanes.items():
            lane.want_preds = shadow is not None and (key in keys or key == shadow.key)
        self.routing = Routing(self.cfg.endpoint, variants, shadow)

    def _apply_side_settings(self, cfg: RuntimeConfig) -> None:
        if cfg.capture != (self.capture.cfg if self.capture else None):
            old = self.capture
            self.capture = CaptureWriter(cfg.capture, cfg.endpoint) if cfg.capture else None
            if old is not None:
                self._spawn(asyncio.get_running_loop().run_in_executor(None, old.close))
        if cfg.multi_model is not None:
            if self.multi is None:
                self.multi = MultiModels(cfg.multi_model, self.pool, cfg.trust_code, log)
            else:
                self.multi.cfg = cfg.multi_model
                self.multi.root = Path(cfg.multi_model.models_dir).resolve()
                self.multi.trust_code = cfg.trust_code
                self._spawn(self.multi.enforce())

    def _spawn(self, aw: Any) -> None:
        t = asyncio.ensure_future(aw)
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    # -- reload ------------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        if self.config_path is None:
            raise InvalidArgument("this runtime was not started from a config file")
        async with self._reload_lock:
            t0 = time.perf_counter()
            cfg = load_config(self.config_path)
            for fld in ("endpoint", "host", "port"):
                if getattr(cfg, fld) != getattr(self.cfg, fld):
                    raise InvalidArgument.for_field(
                        fld, "cannot change on reload: start a new runtime for that"
                    )
            if cfg.worker_mode != self.mode:
                raise InvalidArgument.for_field(
                    "scaling.max_workers",
                    f"changes the worker mode ({self.mode} -> {cfg.worker_mode}); restart instead",
                )
            current = {v.name: v for v in self.routing.variants}
            if self.routing.shadow is not None:
                current[self.routing.shadow.name] = self.routing.shadow
            variants, shadow = self._build(cfg, current)
            old_keys = set(self.pool.specs) - {k for k in self.pool.specs if k.startswith("mm:")}
            fresh = [v for v in [*variants, *([shadow] if shadow else [])] if v.key not in old_keys]
            prev_status = self.status
            self.status = "Updating"
            try:
                await asyncio.gather(
                    *(self.pool.register(self._load_spec(v), shadow=v is shadow) for v in fresh)
                )
            except Exception as e:
                for v in fresh:
                    self._spawn(self.pool.unregister(v.key))
                self.status = prev_status
                raise RuntimeError(
                    f"reload failed, still serving the previous models: {e}"
                ) from None
            self.cfg = cfg
            self.pool.s = pool_settings(cfg, self.mode, self.pool.s.preload)
            self._set_routing(variants, shadow)
            self._apply_side_settings(cfg)
            keep = {v.key for v in variants} | ({shadow.key} if shadow else set())
            retired = sorted(old_keys - keep)
            await asyncio.gather(*(self.pool.unregister(k) for k in retired))
            self.status = "InService"
            self.reloads += 1
            self.last_reload = {
                "at": time.time(),
                "took_s": round(time.perf_counter() - t0, 4),
                "loaded": [v.name for v in fresh],
                "retired": retired,
            }
            log(f"reloaded: loaded {self.last_reload['loaded']}, retired {retired}")
            return {"status": "reloaded", **self.last_reload, "variants": self._variants()}

    # -- requests ----------------------------------------------------------------------------

    def request_id(self) -> str:
        return f"{self._rid_prefix}-{next(self._rid):x}"

    @property
    def ready(self) -> bool:
        return self.booted and self.status != "Failed" and not self.pool.degraded

    def after_response(
        self,
        variant: Variant,
        item: Any,
        result: Any,
        rid: str,
        path: str,
        t_start: float,
        t_end: float,
    ) -> None:
        """Off the response path: capture a sample, and feed the shadow a copy."""
        cap = self.capture
        sampled = cap is not None and cap.sampled()
        if sampled:
            assert cap is not None
            cap.put(self._record(variant, item, result, rid, path, t_start, t_end, shadow=False))
        shadow = self.routing.shadow
        if shadow is not None and result[0] == 200:
            fut = self.pool.submit(shadow.key, item)
            t0 = time.perf_counter()
            fut.add_done_callback(
                lambda f: self._shadow_done(
                    shadow, variant, item, result, f.result(), rid, path, t0, sampled
                )
            )

    def _shadow_done(
        self,
        shadow: Variant,
        primary: Variant,
        item: Any,
        result: Any,
        sres: Any,
        rid: str,
        path: str,
        t0: float,
        sampled: bool,
    ) -> None:
        st = shadow.shadow_stats
        assert st is not None
        st.requests += 1
        elapsed = time.perf_counter() - t0
        st.latency.add(elapsed)
        if sres[0] != 200:
            st.errors += 1
            same = False
        else:
            same = agree(result[4], sres[4])
            if same:
                st.agree += 1
            else:
                st.disagree += 1
        if sampled and self.capture is not None:
            now = time.time()
            rec = self._record(shadow, item, sres, rid, path, now - elapsed, now, shadow=True)
            rec["primary_variant"] = primary.name
            rec["agree"] = same
            self.capture.put(rec)

    def _record(
        self,
        v: Variant,
        item: Any,
        result: Any,
        rid: str,
        path: str,
        t_start: float,
        t_end: float,
        shadow: bool,
    ) -> dict[str, Any]:
        kind, body, ctype, hlen, _, _ = item
        status, rbody, rct, rheaders, _ = result
        return {
            "id": rid,
            "endpoint": self.cfg.endpoint,
            "variant": v.name,
            "model_name": v.spec.model_name,
            "model_version": v.spec.model_version,
            "shadow": shadow,
            "path": path,
            "status": status,
            "request_time": t_start,
            "response_time": t_end,
            "latency_ms": round((t_end - t_start) * 1000, 3),
            "request": body,
            "request_type": ctype,
            # A body that was answered 200 was read as JSON by the worker: no second parse.
            "request_trusted": status == 200 and "json" in ctype and hlen < 0,
            "response": rbody,
            "response_type": rct.decode() if isinstance(rct, bytes) else str(rct),
            "response_trusted": status == 200 and rct == b"application/json",
        }

    # -- stats -------------------------------------------------------------------------------

    def _variants(self) -> list[dict[str, Any]]:
        out = []
        for v in self.routing.variants:
            lane = self.pool.lanes.get(v.key)
            out.append(
                {
                    "name": v.name,
                    "model_name": v.spec.model_name,
                    "model_version": v.spec.model_version,
                    "weight": v.spec.weight,
                    "traffic": v.spec.weight / self.routing.total if self.routing.total else 0.0,
                    **v.stats.describe(),
                    "batches": lane.batches if lane else 0,
                    "mean_batch_size": round(lane.rows / lane.batches, 3)
                    if lane and lane.batches
                    else None,
                }
            )
        return out

    def stats(self) -> dict[str, Any]:
        shadow = self.routing.shadow
        status = self.status
        if status == "InService" and self.pool.degraded:
            status = "Degraded"
        return {
            "endpoint": self.cfg.endpoint,
            "status": status,
            "ready": self.ready,
            "error": self.error or self.pool.load_error,
            "server": {"name": "shipyard", "version": VERSION, "pid": os.getpid()},
            "uptime_s": round(time.time() - self.started, 3),
            "variants": self._variants(),
            "shadow": None
            if shadow is None or shadow.shadow_stats is None
            else {
                "name": shadow.name,
                "model_name": shadow.spec.model_name,
                "model_version": shadow.spec.model_version,
                **shadow.shadow_stats.describe(),
            },
            "workers": self.pool.describe(),
            "batching": {
                "max_batch_size": self.pool.s.max_batch_size,
                "max_wait_ms": self.pool.s.max_wait_ms,
            },
            "capture": self.capture.describe() if self.capture else None,
            "multi_model": self.multi.describe() if self.multi else None,
            "reloads": self.reloads,
            "last_reload": self.last_reload,
        }
