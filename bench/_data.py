"""What both sides of a benchmark share: the runs the search benchmark loads into each tool's
store (the same values for every tool), the metric batches, and the timing loop.

Standard library only: imported both by Shipyard's side and by the MLflow worker (in its own
virtual environment), so both stores hold identical params and metrics, their search results
can be checked against each other, and both are timed by the same code.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

N_PARAMS = 5
N_METRICS = 5
BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEARCH_FILTER = "metrics.m0 > 0.5"
SEARCH_ORDER = "metrics.m0 DESC"
SEARCH_PAGE = 100


@dataclass(frozen=True)
class SyntheticRun:
    index: int
    name: str
    start_ms: int
    end_ms: int
    params: dict[str, str]
    metrics: dict[str, float]


def synthetic_runs(n: int, seed: int = 20260101) -> Iterator[SyntheticRun]:
    rng = random.Random(seed)
    for i in range(n):
        start = BASE_TIME_MS + i * 1000
        yield SyntheticRun(
            index=i,
            name=f"run-{i:06d}",
            start_ms=start,
            end_ms=start + 500,
            params={f"p{j}": str(rng.randint(0, 999)) for j in range(N_PARAMS)},
            metrics={f"m{j}": rng.random() for j in range(N_METRICS)},
        )


def chunks(it: Iterator[SyntheticRun], size: int) -> Iterator[list[SyntheticRun]]:
    batch: list[SyntheticRun] = []
    for r in it:
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def metric_batches(n: int, batch_size: int, keys: int = 10) -> list[list[tuple[str, float, int]]]:
    """``n`` metric points as (key, value, step), ``keys`` keys per step, cut into batches."""
    points = [(f"k{i % keys}", 1.0 / (i + 1), i // keys) for i in range(n)]
    return [points[i : i + batch_size] for i in range(0, n, batch_size)]


def timed_reps(fn: Callable[[], Any], reps: int, budget_s: float) -> tuple[list[float], Any]:
    """Call ``fn`` (two warm-up calls first), ``reps`` times or until the next call would
    overrun ``budget_s``; at least once. A first call slower than a tenth of the budget is
    counted as a sample instead of a warm-up: a search that takes minutes is not warmed."""
    start = time.perf_counter()
    times: list[float] = []
    result = None
    for _ in range(2):
        t = time.perf_counter()
        result = fn()
        took = time.perf_counter() - t
        if took > budget_s / 10:
            times.append(took)
            break
    while len(times) < reps:
        spent = time.perf_counter() - start
        if times and spent + max(times) > budget_s:
            break
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result
