"""The figures an endpoint's server reports at ``GET /shipyard/stats``, boiled down to what the
endpoint list shows: requests, latency p50 and p99 (overall and per variant), workers and
restarts. Tolerant by design: a figure the server does not report is None, never an error, so
the list still renders while a server starts or runs an older runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class VariantFigures:
    requests: int | None = None
    errors: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class Figures:
    requests: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    workers: int | None = None
    worker_restarts: int = 0
    variants: dict[str, VariantFigures] = field(default_factory=dict)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _int(v: Any) -> int | None:
    n = _num(v)
    return None if n is None else int(n)


def _latency(d: dict[str, Any]) -> tuple[float | None, float | None]:
    """p50 and p99 in milliseconds, from the shapes a server may use."""
    lat = d.get("latency_ms")
    if isinstance(lat, dict):
        return _num(lat.get("p50")), _num(lat.get("p99"))
    p50 = d.get("latency_p50_ms", d.get("p50_ms"))
    p99 = d.get("latency_p99_ms", d.get("p99_ms"))
    return _num(p50), _num(p99)


def _variant(d: Any) -> VariantFigures:
    if not isinstance(d, dict):
        return VariantFigures()
    p50, p99 = _latency(d)
    errors = _int(d.get("errors"))
    if errors is None and ("client_errors" in d or "server_errors" in d):
        errors = (_int(d.get("client_errors")) or 0) + (_int(d.get("server_errors")) or 0)
    return VariantFigures(requests=_int(d.get("requests")), errors=errors, p50_ms=p50, p99_ms=p99)


def summarize(stats: dict[str, Any]) -> Figures:
    out = Figures()
    variants = stats.get("variants")
    if isinstance(variants, dict):
        out.variants = {str(k): _variant(v) for k, v in variants.items()}
    elif isinstance(variants, list):
        out.variants = {
            str(v["name"]): _variant(v) for v in variants if isinstance(v, dict) and "name" in v
        }
    shadow = stats.get("shadow")
    if isinstance(shadow, dict) and isinstance(shadow.get("name"), str):
        out.variants.setdefault(shadow["name"], _variant(shadow))
    total: dict[str, Any] = stats["total"] if isinstance(stats.get("total"), dict) else stats
    out.requests = _int(total.get("requests"))
    if out.requests is None and out.variants:
        shadow_name = shadow.get("name") if isinstance(shadow, dict) else None
        counts = [
            f.requests
            for n, f in out.variants.items()
            if n != shadow_name and f.requests is not None
        ]
        out.requests = sum(counts) if counts else None
    out.p50_ms, out.p99_ms = _latency(total)
    if out.p50_ms is None:
        # No endpoint-wide figure: the busiest production variant's (exact with one variant).
        shadow_name = shadow.get("name") if isinstance(shadow, dict) else None
        production = [f for n, f in out.variants.items() if n != shadow_name]
        busiest = max(production, key=lambda f: f.requests or 0, default=None)
        if busiest is not None:
            out.p50_ms, out.p99_ms = busiest.p50_ms, busiest.p99_ms
    workers = stats.get("workers")
    if isinstance(workers, dict):
        out.workers = _int(workers.get("count", workers.get("live", workers.get("running"))))
        out.worker_restarts = _int(workers.get("restarts")) or 0
    elif isinstance(workers, list):
        out.workers = len(workers)
    else:
        out.workers = _int(workers)
    if not out.worker_restarts:
        out.worker_restarts = _int(stats.get("restarts")) or 0
    return out
