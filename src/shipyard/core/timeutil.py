"""Time is UTC everywhere. Stored as integer milliseconds since the epoch, ISO 8601 on the wire."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import overload


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@overload
def ms_to_dt(ms: int) -> datetime: ...
@overload
def ms_to_dt(ms: None) -> None: ...
@overload
def ms_to_dt(ms: int | None) -> datetime | None: ...


def ms_to_dt(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dt_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
