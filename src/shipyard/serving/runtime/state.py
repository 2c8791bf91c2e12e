"""The serving state: variants and their traffic split, per-variant figures, the shadow.

A ``Routing`` is an immutable snapshot; a reload builds a new one and swaps it in one
assignment, so a request sees either the old variants or the new ones, never a mix.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from typing import Any

from shipyard.serving.runtime.config import ModelSpec
from shipyard.serving.runtime.meta import ModelMeta


class LatencyWindow:
    """The last ``size`` latencies (seconds), for p50/p99 on demand."""

    __slots__ = ("buf", "i", "n", "size")

    def __init__(self, size: int = 4096) -> None:
        self.buf = [0.0] * size
        self.size = size
        self.i = 0
        self.n = 0

    def add(self, v: float) -> None:
        self.buf[self.i] = v
        self.i = (self.i + 1) % self.size
        if self.n < self.size:
            self.n += 1

    def percentiles(self) -> dict[str, float | None]:
        if not self.n:
            return {"p50": None, "p90": None, "p99": None, "mean": None}
        vals = sorted(self.buf[: self.n])

        def q(p: float) -> float:
            return round(vals[min(len(vals) - 1, max(0, math.ceil(p * len(vals)) - 1))] * 1000, 3)

        return {
            "p50": q(0.5),
            "p90": q(0.9),
            "p99": q(0.99),
            "mean": round(sum(vals) / len(vals) * 1000, 3),
        }


@dataclass
class VariantStats:
    requests: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow)

    def record(self, status: int, seconds: float) -> None:
        self.requests += 1
        if status < 400:
            self.ok += 1
        elif status < 500:
            self.client_errors += 1
        else:
            self.server_errors += 1
        self.latency.add(seconds)

    def describe(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "client_errors": self.client_errors,
            "server_errors": self.server_errors,
            "latency_ms": self.latency.percentiles(),
        }


@dataclass
class ShadowStats:
    requests: int = 0
    agree: int = 0
    disagree: int = 0
    errors: int = 0
    skipped: int = 0  # the primary failed: nothing to compare
    latency: LatencyWindow = field(default_factory=LatencyWindow)

    def describe(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "agree": self.agree,
            "disagree": self.disagree,
            "errors": self.errors,
            "latency_ms": self.latency.percentiles(),
        }


@dataclass
class Variant:
    spec: ModelSpec
    key: str
    meta: ModelMeta
    stats: VariantStats = field(default_factory=VariantStats)
    shadow_stats: ShadowStats | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def name_header(self) -> bytes:
        return self.spec.name.encode()


class Routing:
    def __init__(self, endpoint: str, variants: list[Variant], shadow: Variant | None) -> None:
        self.endpoint = endpoint
        self.variants = variants
        self.shadow = shadow
        self.by_name = {v.name: v for v in variants}
        self.cum: list[float] = []
        total = 0.0
        for v in variants:
            total += v.spec.weight
            self.cum.append(total)
        self.total = total
        self.single = variants[0] if len(variants) == 1 else None
        # The model names a caller may use in /v2/models/{name}: the endpoint's, each
        # variant's model name, and each variant's own name (which pins that variant).
        self.names: set[str] = {endpoint}
        for v in variants:
            self.names.add(v.spec.model_name)
            self.names.add(v.name)
        self.versions = sorted({v.spec.model_version for v in variants})

    def choose(self) -> Variant:
        if self.single is not None:
            return self.single
        i = bisect.bisect_right(self.cum, random.random() * self.total)
        return self.variants[min(i, len(self.variants) - 1)]

    def for_version(self, version: str) -> Variant | None:
        matches = [v for v in self.variants if v.spec.model_version == version]
        if not matches:
            return None
        if len(matches) == 1:
            return matches[0]
        return Routing(self.endpoint, matches, None).choose()

    def pinned(self, name: str) -> Variant | None:
        """A URL name that is a variant's own name (and not the shared model name)."""
        v = self.by_name.get(name)
        if v is None or name == self.endpoint:
            return None
        if any(o.spec.model_name == name for o in self.variants):
            return None
        return v


def agree(a: Any, b: Any) -> bool:
    """Do two answers match (floats within a relative 1e-6)?"""
    if a == b:
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(agree(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return False
