"""The runtime's configuration file (written by the endpoints control plane), parsed and checked.

Every error names the field (``variants[1].weight: must be >= 0``), so a bad file written by hand
or by a buggy caller is refused at start or at ``/shipyard/reload`` with one readable line.
Only the standard library here: the front process stays import-light.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument

WORKER_MODES = ("auto", "thread", "process")


@dataclass(frozen=True)
class ModelSpec:
    """One model to host: a variant, the shadow, or a model of a multi-model endpoint."""

    name: str  # the variant's name (or the model's name in a multi-model endpoint)
    model_path: str
    model_name: str
    model_version: str
    weight: float = 1.0

    def same_model(self, other: ModelSpec) -> bool:
        return (self.model_path, self.model_name, self.model_version) == (
            other.model_path,
            other.model_name,
            other.model_version,
        )


@dataclass(frozen=True)
class CaptureConfig:
    sample_rate: float
    dir: str
    max_file_bytes: int = 16 * 1024 * 1024
    rotate_s: float = 60.0


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 64
    max_wait_ms: float = 2.0


@dataclass(frozen=True)
class MultiModelConfig:
    models_dir: str
    memory_budget_mb: float = 1024.0


@dataclass(frozen=True)
class ScalingConfig:
    min_workers: int = 1
    max_workers: int = 1
    idle_to_zero_s: float | None = None
    target_inflight_per_worker: int = 8
    # How long a worker above min_workers may stay idle before it is stopped.
    scale_down_after_s: float = 30.0
    # "auto": one worker thread in the server process when max_workers is 1, worker processes
    # otherwise (runtime/__init__.py has the measurements behind that choice); "process" keeps
    # a one-worker endpoint's model in its own process, restarted if it crashes.
    worker_mode: str = "auto"


@dataclass(frozen=True)
class RuntimeConfig:
    endpoint: str
    host: str = "127.0.0.1"
    port: int = 8080
    variants: tuple[ModelSpec, ...] = ()
    shadow: ModelSpec | None = None
    capture: CaptureConfig | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    multi_model: MultiModelConfig | None = None
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    trust_code: bool = False
    auth_token: str | None = None
    # A batch running longer than this is given up: its worker is killed and restarted and its
    # requests answered 503 (a thread cannot be killed: its requests are answered, it runs on).
    request_timeout_s: float = 60.0

    @property
    def worker_mode(self) -> str:
        mode = self.scaling.worker_mode
        if mode == "auto":
            return "thread" if self.scaling.max_workers == 1 else "process"
        return mode

    def all_models(self) -> list[ModelSpec]:
        return [*self.variants, *([self.shadow] if self.shadow else [])]


def load_config(path: str | Path) -> RuntimeConfig:
    """Read and check the config file; raises ``InvalidArgument`` naming the bad field."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgument.for_field("config", f"no such file: {p}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidArgument.for_field("config", f"cannot read {p}: {e}") from None
    return parse_config(raw)


def parse_config(raw: Any) -> RuntimeConfig:
    if not isinstance(raw, dict):
        raise InvalidArgument.for_field("config", "expected a JSON object")
    endpoint = _req(raw, "endpoint", "endpoint")
    host = _str(raw, "host", "host") or "127.0.0.1"
    port = _int(raw.get("port", 8080), "port", lo=0, hi=65535)
    auth_token = _str(raw, "auth_token", "auth_token")
    if not _is_loopback(host) and not auth_token:
        # DESIGN.md promise 1: bound beyond this machine, a server without auth is refused.
        raise InvalidArgument.for_field(
            "host", f"binding {host} (beyond loopback) needs auth_token; use 127.0.0.1 or set one"
        )
    variants_raw = raw.get("variants") or []
    if not isinstance(variants_raw, list):
        raise InvalidArgument.for_field("variants", "expected a list")
    variants = tuple(_model(v, f"variants[{i}]", weighted=True) for i, v in enumerate(variants_raw))
    names = [v.name for v in variants]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise InvalidArgument.for_field(f"variants[{i}].name", f"duplicate variant name {n!r}")
    if variants and sum(v.weight for v in variants) <= 0:
        raise InvalidArgument.for_field("variants", "at least one variant needs a weight above 0")
    shadow = None
    if raw.get("shadow") is not None:
        shadow = _model(raw["shadow"], "shadow", weighted=False)
        if shadow.name in names:
            raise InvalidArgument.for_field("shadow.name", f"{shadow.name!r} is also a variant")
    capture = None
    if raw.get("capture") is not None:
        c = _obj(raw["capture"], "capture")
        capture = CaptureConfig(
            sample_rate=_num(c.get("sample_rate", 0.0), "capture.sample_rate", lo=0.0, hi=1.0),
            dir=_abs_path(c, "dir", "capture.dir"),
            max_file_bytes=_int(
                c.get("max_file_bytes", 16 * 1024 * 1024), "capture.max_file_bytes", lo=1024
            ),
            rotate_s=_num(c.get("rotate_s", 60.0), "capture.rotate_s", lo=0.05),
        )
    b = _obj(raw.get("batching") or {}, "batching")
    batching = BatchingConfig(
        max_batch_size=_int(b.get("max_batch_size", 64), "batching.max_batch_size", lo=1),
        max_wait_ms=_num(b.get("max_wait_ms", 2.0), "batching.max_wait_ms", lo=0.0),
    )
    multi = None
    if raw.get("multi_model") is not None:
        m = _obj(raw["multi_model"], "multi_model")
        multi = MultiModelConfig(
            models_dir=_abs_path(m, "models_dir", "multi_model.models_dir"),
            memory_budget_mb=_num(
                m.get("memory_budget_mb", 1024), "multi_model.memory_budget_mb", lo=0.0
            ),
        )
    if not variants and multi is None:
        raise InvalidArgument.for_field("variants", "give at least one variant, or multi_model")
    s = _obj(raw.get("scaling") or {}, "scaling")
    idle = s.get("idle_to_zero_s")
    scaling = ScalingConfig(
        min_workers=_int(s.get("min_workers", 1), "scaling.min_workers", lo=0),
        max_workers=_int(s.get("max_workers", 1), "scaling.max_workers", lo=1),
        idle_to_zero_s=None if idle is None else _num(idle, "scaling.idle_to_zero_s", lo=0.01),
        target_inflight_per_worker=_int(
            s.get("target_inflight_per_worker", 8), "scaling.target_inflight_per_worker", lo=1
        ),
        scale_down_after_s=_num(
            s.get("scale_down_after_s", 30.0), "scaling.scale_down_after_s", lo=0.01
        ),
        worker_mode=str(s.get("worker_mode", "auto")),
    )
    if scaling.min_workers > scaling.max_workers:
        raise InvalidArgument.for_field(
            "scaling.min_workers",
            f"{scaling.min_workers} exceeds max_workers ({scaling.max_workers})",
        )
    if scaling.worker_mode not in WORKER_MODES:
        raise InvalidArgument.for_field(
            "scaling.worker_mode",
            f"unknown mode {scaling.worker_mode!r}; expected one of {', '.join(WORKER_MODES)}",
        )
    if scaling.worker_mode == "thread" and scaling.max_workers > 1:
        raise InvalidArgument.for_field(
            "scaling.worker_mode", "'thread' runs one worker: max_workers must be 1"
        )
    trust = raw.get("trust_code", False)
    if not isinstance(trust, bool):
        raise InvalidArgument.for_field("trust_code", "expected true or false")
    timeout = _num(raw.get("request_timeout_s", 60.0), "request_timeout_s", lo=0.01)
    return RuntimeConfig(
        request_timeout_s=timeout,
        endpoint=endpoint,
        host=host,
        port=port,
        variants=variants,
        shadow=shadow,
        capture=capture,
        batching=batching,
        multi_model=multi,
        scaling=scaling,
        trust_code=trust,
        auth_token=auth_token,
    )


def _model(raw: Any, where: str, *, weighted: bool) -> ModelSpec:
    d = _obj(raw, where)
    name = _req(d, "name", f"{where}.name")
    path = _abs_path(d, "model_path", f"{where}.model_path")
    return ModelSpec(
        name=name,
        model_path=path,
        model_name=_str(d, "model_name", f"{where}.model_name") or name,
        model_version=str(d.get("model_version") or "1"),
        weight=_num(d.get("weight", 1.0), f"{where}.weight", lo=0.0) if weighted else 0.0,
    )


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise InvalidArgument.for_field(where, "expected an object")
    return v


def _str(d: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise InvalidArgument.for_field(where, "is required")
        return None
    if not isinstance(v, str) or (required and not v):
        raise InvalidArgument.for_field(where, "expected a non-empty string")
    return v


def _req(d: dict[str, Any], key: str, where: str) -> str:
    v = _str(d, key, where, required=True)
    assert v is not None
    return v


def _abs_path(d: dict[str, Any], key: str, where: str) -> str:
    v = _req(d, key, where)
    if not os.path.isabs(v):
        raise InvalidArgument.for_field(where, f"expected an absolute path, got {v!r}")
    return v


def _num(v: Any, where: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidArgument.for_field(where, f"expected a number, got {v!r}")
    if lo is not None and v < lo:
        raise InvalidArgument.for_field(where, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise InvalidArgument.for_field(where, f"must be <= {hi}, got {v}")
    return float(v)


def _int(v: Any, where: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument.for_field(where, f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise InvalidArgument.for_field(where, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise InvalidArgument.for_field(where, f"must be <= {hi}, got {v}")
    return v


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
