"""Metric points as the service writes them: checked columns, and the chunks they are stored in.

A write batch stores one ``metric_chunks`` row per key it holds, with that key's steps,
timestamps and values packed as little-endian int64, int64 and float64 arrays (NaN for a value
of None). A history is its chunks in the order they were written (their ``id``), concatenated,
then sorted by (step, timestamp); the sort is stable, so points that tie keep the order they
were logged in, as the former one-row-per-point table gave. Checking, packing and unpacking are
a few passes in C per column (``set``, ``map``, ``sum``, ``array``), which is what lets a batch
of 10,000 points cost a handful of rows and a few milliseconds.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from shipyard.core.errors import InvalidArgument
from shipyard.tracking.schemas import MetricRow

MAX_KEY = 250
_I64_MIN, _I64_END = -(2**63), 2**63
_BIG_ENDIAN = sys.byteorder == "big"

INSERT_CHUNK = (
    "INSERT INTO metric_chunks (run_id, key, min_step, max_step, points, steps_i64, "
    "timestamps_i64, values_f64) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def check_key(key: object, field: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise InvalidArgument.for_field(
            field, f"expected a non-empty string of at most {MAX_KEY} characters, got {key!r}"
        )
    return key


class MetricColumns:
    """Metric points held column by column, checked once; what the service writes.

    The columns are plain lists, checked with a few passes in C, and packed once into arrays
    that the chunks are cut from; only a batch that fails the fast checks (a null, an int, a
    bad value) is walked point by point to clean it or to name the first offending field.
    ``latest`` maps each key, in order of first appearance, to the index of its point with the
    highest (step, timestamp), the later one on a tie: the value ``latest_metrics`` keeps.
    """

    __slots__ = (
        "_steps_a",
        "_stride",
        "_timestamps_a",
        "_values_a",
        "keys",
        "latest",
        "steps",
        "timestamps",
        "values",
    )

    def __init__(
        self,
        keys: list[Any],
        values: list[Any],
        steps: list[Any],
        timestamps: list[Any],
        field: Callable[[int, str], str],
    ) -> None:
        n = len(keys)
        for name, col in (("value", values), ("step", steps), ("timestamp", timestamps)):
            if len(col) != n:
                raise InvalidArgument.for_field(
                    field(min(n, len(col)), name),
                    f"expected {n} {name}s, one per key; got {len(col)}",
                )
        distinct = _checked_keys(keys, field)
        self.keys: list[str] = keys
        self.values, self._values_a = _checked_values(values, field)
        self.steps, self._steps_a = _checked_ints(
            steps, _I64_MIN, field, "step", "a 64-bit integer"
        )
        self.timestamps, self._timestamps_a = _checked_ints(
            timestamps, 0, field, "timestamp", "epoch milliseconds"
        )
        # A training loop logs the same keys in the same order at every step: then each key's
        # points are every k-th one, cut from the arrays by slicing.
        k = len(distinct)
        head = keys[:k]
        self._stride = k if n and n % k == 0 and keys == head * (n // k) else 0
        self.latest: dict[str, int] = _latest_index(
            keys, self.steps, self.timestamps, head if self._stride else None
        )

    @classmethod
    def from_rows(cls, rows: Iterable[MetricRow]) -> MetricColumns:
        """Columns from (key, value, step, timestamp) rows; errors name ``metrics[i].field``."""
        rows = list(rows)
        for i, r in enumerate(rows):
            if not isinstance(r, tuple | list) or len(r) != 4:
                raise InvalidArgument.for_field(
                    f"metrics[{i}]", f"expected (key, value, step, timestamp), got {r!r}"
                )
        cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] or [[], [], [], []]
        keys, values, steps, timestamps = cols
        return cls(keys, values, steps, timestamps, field=lambda i, name: f"metrics[{i}].{name}")

    def __len__(self) -> int:
        return len(self.keys)

    def chunk_rows(self, run_id: str) -> list[tuple[str, str, int, int, int, bytes, bytes, bytes]]:
        """One ``metric_chunks`` row per key (``INSERT_CHUNK``'s columns), in order of first
        appearance, each holding the key's points in the order they came."""
        k = self._stride
        if k:
            s, t, v = self._steps_a, self._timestamps_a, self._values_a
            return [
                _row(run_id, key, s[j::k], t[j::k], v[j::k]) for j, key in enumerate(self.keys[:k])
            ]
        where: dict[str, list[int]] = {key: [] for key in self.latest}
        for i, key in enumerate(self.keys):
            where[key].append(i)
        steps, timestamps, values = self.steps, self.timestamps, self.values
        return [
            _row(
                run_id,
                key,
                array("q", [steps[i] for i in ix]),
                array("q", [timestamps[i] for i in ix]),
                _float_array([values[i] for i in ix]),
            )
            for key, ix in where.items()
        ]


def _checked_keys(keys: list[Any], field: Callable[[int, str], str]) -> set[str]:
    """The distinct keys, once each is known to be a fit key."""
    try:
        distinct = set(keys)
    except TypeError:  # an unhashable key: find it below
        distinct = {None}
    if any(not isinstance(k, str) or not k or len(k) > MAX_KEY for k in distinct):
        for i, k in enumerate(keys):
            check_key(k, field(i, "key"))
    return distinct  # type: ignore[return-value]


def _checked_values(
    values: list[Any], field: Callable[[int, str], str]
) -> tuple[list[float | None], array[float]]:
    # All floats and a finite sum: no NaN, no infinity, nothing to convert (the common case).
    if set(map(type, values)) <= {float} and math.isfinite(sum(values)):
        return values, array("d", values)
    out: list[float | None] = []
    for i, raw in enumerate(values):
        if raw is None:
            out.append(None)
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InvalidArgument.for_field(
                field(i, "value"), f"expected a number, got {raw!r}"
            ) from None
        if math.isnan(value):
            out.append(None)
        elif math.isinf(value):
            # JSON has no infinity, so every surface would turn it into null (NaN): keep the
            # largest finite float instead, on every backend alike.
            out.append(math.copysign(sys.float_info.max, value))
        else:
            out.append(value)
    return out, _float_array(out)


def _checked_ints(
    col: list[Any], low: int, field: Callable[[int, str], str], name: str, what: str
) -> tuple[list[int], array[int]]:
    # Plain ints (not bools) that fit in 64 bits, which building the array checks.
    if set(map(type, col)) <= {int}:
        try:
            packed = array("q", col)
        except OverflowError:
            pass
        else:
            if low == _I64_MIN or not col or min(col) >= low:
                return col, packed
    for i, x in enumerate(col):
        if not isinstance(x, int) or isinstance(x, bool) or not low <= x < _I64_END:
            raise InvalidArgument.for_field(field(i, name), f"expected {what}, got {x!r}")
    return col, array("q", col)


def _latest_index(
    keys: list[str], steps: list[int], timestamps: list[int], head: list[str] | None
) -> dict[str, int]:
    """Per key, in order of first appearance, the index of its latest point (see
    ``MetricColumns``). ``head``: the keys of one period when the keys repeat."""
    # Steps and timestamps that never go down (a training loop's) make it the last occurrence.
    if steps == sorted(steps) and timestamps == sorted(timestamps):
        if head is not None:
            start = len(keys) - len(head)
            return {key: start + j for j, key in enumerate(head)}
        # Keeps each key where it first came and sets it to where it last came.
        return dict(zip(keys, range(len(keys)), strict=True))
    latest: dict[str, int] = {}
    for i, k in enumerate(keys):
        j = latest.get(k)
        if j is None or (steps[i], timestamps[i]) >= (steps[j], timestamps[j]):
            latest[k] = i
    return latest


def _float_array(values: Sequence[float | None]) -> array[float]:
    """float64s, with None as NaN."""
    try:
        return array("d", values)  # type: ignore[arg-type]
    except TypeError:  # a None among them
        return array("d", [math.nan if v is None else v for v in values])


def _bytes(a: array[Any]) -> bytes:
    """The array's items as little-endian bytes."""
    if _BIG_ENDIAN:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _row(
    run_id: str, key: str, steps: array[int], timestamps: array[int], values: array[float]
) -> tuple[str, str, int, int, int, bytes, bytes, bytes]:
    return (
        run_id,
        key,
        min(steps),
        max(steps),
        len(steps),
        _bytes(steps),
        _bytes(timestamps),
        _bytes(values),
    )


def chunk_row(
    run_id: str,
    key: str,
    steps: Sequence[int],
    timestamps: Sequence[int],
    values: Sequence[float | None],
) -> tuple[str, str, int, int, int, bytes, bytes, bytes]:
    """One ``metric_chunks`` row (``INSERT_CHUNK``'s columns) from one key's checked points."""
    return _row(run_id, key, array("q", steps), array("q", timestamps), _float_array(values))


def _unpack(typecode: str, b: bytes) -> list[Any]:
    a = array(typecode)
    a.frombytes(b)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tolist()


def unpack_floats(b: bytes) -> list[float | None]:
    """The values of a chunk, with NaN given back as None (what the store returns)."""
    values: list[Any] = _unpack("d", b)
    # The stored values are finite or NaN (infinities are clamped before they are written),
    # so the sum is NaN exactly when one of them is.
    if math.isnan(sum(values)):
        return [None if v != v else v for v in values]
    return values


def merge(
    chunks: Iterable[tuple[bytes, bytes, bytes]],
) -> tuple[list[int], list[int], list[float | None]]:
    """One history from its chunks' (steps, timestamps, values) bytes, given in the order they
    were written: ordered by step, then timestamp, then the order the points were logged in."""
    steps: list[int] = []
    timestamps: list[int] = []
    values: list[float | None] = []
    for s, t, v in chunks:
        steps += _unpack("q", s)
        timestamps += _unpack("q", t)
        values += unpack_floats(v)
    if steps == sorted(steps):
        if len(set(steps)) == len(steps):
            return steps, timestamps, values
        pairs = list(zip(steps, timestamps, strict=True))
        if pairs == sorted(pairs):
            return steps, timestamps, values
    else:
        pairs = list(zip(steps, timestamps, strict=True))
    order = sorted(range(len(pairs)), key=pairs.__getitem__)  # stable: ties keep log order
    return (
        [steps[i] for i in order],
        [timestamps[i] for i in order],
        [values[i] for i in order],
    )
