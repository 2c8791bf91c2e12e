"""What Studio's pages show, computed from the services' schemas: formatting, the runs table's
state in the URL, chart data. No HTTP and no queries here (artifacts: ``previews``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlencode

from shipyard.core.errors import InvalidArgument
from shipyard.tracking.schemas import MetricHistory, RunPublic

E = TypeVar("E", bound=Enum)

# One colour per run, in the order the runs were chosen; at most 10 runs are compared, so every
# run gets its own (Tableau 10, readable on white and distinguishable by most colour-blind eyes).
PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]

# Charts draw at most this many points per series; longer histories are thinned evenly (the
# first and last points always kept) and the chart says so. A browser stays responsive, and a
# page with 100,000-point histories stays a few hundred kilobytes.
MAX_POINTS = 5000
SYSTEM_PREFIX = "system/"

# -- formatting -------------------------------------------------------------------------------


def fmt_num(v: float | int | str | None) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.6g}"
    return str(v)


def fmt_count(n: int | None) -> str:
    """A count for people: 100,000."""
    return "—" if n is None else f"{n:,}"


def exact_time(dt: datetime | None) -> str:
    if dt is None:
        return ""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(dt: datetime | None) -> str:
    if dt is None:
        return ""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def reltime(dt: datetime | None, now: datetime | None = None) -> str:
    """'just now', '5 minutes ago', '3 days ago' (the exact time goes in a tooltip)."""
    if dt is None:
        return ""
    now = now or datetime.now(UTC)
    s = (now - dt).total_seconds()
    future = s < 0
    s = abs(s)
    if s < 45:
        return "just now"
    units = (("year", 31536000), ("month", 2592000), ("day", 86400), ("hour", 3600))
    unit, size = next(((u, n) for u, n in units if s >= n * 0.95), ("minute", 60))
    count = max(1, round(s / size))
    text = f"{count} {unit}{'s' if count != 1 else ''}"
    return f"in {text}" if future else f"{text} ago"


def duration(start: datetime | None, end: datetime | None, now: datetime | None = None) -> str:
    if start is None:
        return ""
    s = int(((end or now or datetime.now(UTC)) - start).total_seconds())
    if s < 0:
        return "0s"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@dataclass
class Marked:
    """A filter with the part the parser refused: ``before`` + ``bad`` + ``after``."""

    before: str
    bad: str
    after: str


def mark_error(text: str, details: dict[str, Any]) -> Marked | None:
    """Locate the offending part of ``text`` from an ``InvalidArgument``'s ``position`` (0-based
    character offset) and ``token``. None when the error does not say where."""
    pos = details.get("position")
    if not isinstance(pos, int) or isinstance(pos, bool) or not 0 <= pos <= len(text):
        return None
    token = details.get("token")
    if isinstance(token, str) and token and text.startswith(token, pos):
        end = pos + len(token)
    else:
        # The token may be missing or normalised; mark the word that starts at ``pos``.
        m = re.match(r"\s*\S+", text[pos:])
        end = pos + (m.end() if m else 0)
    return Marked(text[:pos], text[pos:end], text[end:])


def choice_param(raw: str, choices: type[E], name: str = "status") -> E | None:
    """A list filter's value from the query string: None when empty; else one of ``choices``,
    or a 400 naming the parameter and what it takes."""
    if not raw:
        return None
    try:
        return choices(raw)
    except ValueError:
        allowed = ", ".join(str(c.value) for c in choices)
        raise InvalidArgument.for_field(name, f"expected one of {allowed}, got {raw!r}") from None


# -- the runs table's state, all of it in the URL ---------------------------------------------

PAGE_SIZES = (25, 50, 100, 200)
# Built-in columns: (key, label, order_by field or None when it cannot be sorted on).
BUILTIN_COLUMNS = [
    ("status", "Status", "status"),
    ("name", "Run", "name"),
    ("start_time", "Started", "start_time"),
    ("duration", "Duration", None),
    ("created_by", "User", None),
]
# Keys the search language reads unquoted (see ``tracking.search``); others are back-quoted.
KEY_RE = re.compile(r"^[\w/.\-]+$")


def order_field(column: str) -> str:
    """The search language's name for a column: ``metrics.loss``, ``params.`my key```."""
    kind, _, key = column.partition(".")
    if kind in ("params", "metrics", "tags") and key:
        if KEY_RE.match(key):
            return f"{kind}.{key}"
        return f"{kind}.`{key.replace('`', '``')}`"
    return column


@dataclass
class RunsView:
    """Filter, sort, chosen columns, page and selection of an experiment's runs page.

    ``cols`` is None until the user chooses columns; then it is the exact list (possibly
    empty), sent as repeated ``col`` parameters plus an empty ``col`` that marks the choice.
    """

    filter: str = ""
    sort: str = ""  # a column key; a leading "-" sorts descending
    cols: list[str] | None = None
    page: int = 1
    size: int = 50
    sel: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, params: Any) -> RunsView:
        def one(name: str, default: str = "") -> str:
            return str(params.get(name) or default).strip()

        try:
            page = max(1, int(one("page", "1")))
        except ValueError:
            page = 1
        try:
            size = int(one("size", "50"))
        except ValueError:
            size = 50
        if size not in PAGE_SIZES:
            size = 50
        cols = None
        if "col" in params:
            cols = list(dict.fromkeys(c for c in params.getlist("col") if c))
        sel = list(dict.fromkeys(s for s in params.getlist("sel") if s))
        return cls(
            filter=str(params.get("filter") or ""),
            sort=one("sort"),
            cols=cols,
            page=page,
            size=size,
            sel=sel,
        )

    @property
    def order_by(self) -> list[str] | None:
        if not self.sort:
            return None
        desc = self.sort.startswith("-")
        col = self.sort.lstrip("-")
        return [f"{order_field(col)} {'DESC' if desc else 'ASC'}"]

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    def pairs(self, **changes: Any) -> list[tuple[str, str]]:
        v: dict[str, Any] = {
            "filter": self.filter,
            "sort": self.sort,
            "cols": self.cols,
            "page": self.page,
            "size": self.size,
            "sel": self.sel,
        }
        v.update(changes)
        out: list[tuple[str, str]] = []
        if v["filter"]:
            out.append(("filter", v["filter"]))
        if v["sort"]:
            out.append(("sort", v["sort"]))
        if v["cols"] is not None:
            out += [("col", c) for c in v["cols"]] + [("col", "")]
        if v["size"] != 50:
            out.append(("size", str(v["size"])))
        if v["page"] != 1:
            out.append(("page", str(v["page"])))
        out += [("sel", s) for s in v["sel"]]
        return out

    def url(self, base: str, **changes: Any) -> str:
        q = urlencode(self.pairs(**changes))
        return f"{base}?{q}" if q else base

    def sort_url(self, base: str, column: str) -> str:
        """Click a header: sort by it descending for metrics (best first is usually highest or
        lowest; descending first matches MLflow), ascending otherwise; click again to flip."""
        if self.sort.lstrip("-") == column:
            new = column if self.sort.startswith("-") else f"-{column}"
        else:
            new = (
                f"-{column}" if column.startswith("metrics.") or column == "start_time" else column
            )
        return self.url(base, sort=new, page=1)

    def sort_state(self, column: str) -> str:
        if self.sort.lstrip("-") != column:
            return "none"
        return "descending" if self.sort.startswith("-") else "ascending"


@dataclass
class Columns:
    params: list[str]
    metrics: list[str]
    tags: list[str]
    chosen: list[str]


HIDDEN_TAG_PREFIXES = ("shipyard.", "mlflow.")
DEFAULT_PER_KIND = 6


def columns_for(runs: list[RunPublic], view: RunsView) -> Columns:
    """Columns a user can choose from: the keys of the runs on this page, plus any chosen.

    Keys come from the page, not the whole experiment, so the page stays one cheap query at
    any number of runs (the same choice MLflow's UI makes); a chosen column stays on offer.
    """
    params = sorted({k for r in runs for k in r.params})
    mets = sorted({k for r in runs for k in r.metrics})
    tags = sorted({k for r in runs for k in r.tags if not k.startswith(HIDDEN_TAG_PREFIXES)})
    for c in view.cols or []:
        kind, _, key = c.partition(".")
        target = {"params": params, "metrics": mets, "tags": tags}.get(kind)
        if target is not None and key and key not in target:
            target.append(key)
    if view.cols is not None:
        chosen = list(view.cols)
    else:
        user_metrics = [m for m in mets if not m.startswith(SYSTEM_PREFIX)]
        chosen = [f"metrics.{k}" for k in user_metrics[:DEFAULT_PER_KIND]] + [
            f"params.{k}" for k in params[:DEFAULT_PER_KIND]
        ]
    return Columns(params, mets, tags, chosen)


def cell(run: RunPublic, column: str) -> str:
    kind, _, key = column.partition(".")
    if kind == "params":
        return run.params.get(key, "")
    if kind == "tags":
        return run.tags.get(key, "")
    if kind == "metrics":
        m = run.metrics.get(key)
        return fmt_num(m.value) if m is not None else ""
    return ""


# -- charts ------------------------------------------------------------------------------------


def thin(h: MetricHistory, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """A history as chart data, thinned evenly to ``max_points`` (first and last kept)."""
    n = len(h.steps)
    if n <= max_points:
        idx: Iterable[int] = range(n)
    else:
        stride = (n - 1) / (max_points - 1)
        idx = sorted({round(i * stride) for i in range(max_points)})
    idx = list(idx)
    return {
        "run_id": h.run_id,
        "key": h.key,
        "steps": [h.steps[i] for i in idx],
        "timestamps": [h.timestamps[i] for i in idx],
        "values": [h.values[i] for i in idx],
        "total": n,
    }


def is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def chart_state(q: Any) -> dict[str, Any]:
    """The chart controls as the URL sets them: x axis, log scale, smoothing (0 to 0.99)."""
    x = q.get("x")
    try:
        smooth = float(q.get("smooth") or 0.0)
    except ValueError:
        smooth = 0.0
    if not math.isfinite(smooth):
        smooth = 0.0
    return {
        "x": x if x in ("step", "time", "relative") else "step",
        "log": q.get("log") == "1",
        "smooth": min(0.99, max(0.0, smooth)),
    }


def parcoords(runs: list[RunPublic], param_keys: list[str], metric: str) -> dict[str, Any]:
    """Axes for a parallel-coordinates plot: each param (numeric, or categories as ticks), then
    the chosen metric; one line per run, in the run's colour."""
    dims: list[dict[str, Any]] = []
    for k in param_keys:
        vals = [r.params.get(k) for r in runs]
        present = [v for v in vals if v is not None]
        if not present:
            continue
        if all(is_number(v) for v in present):
            nums = [float(v) if v is not None else None for v in vals]
            dims.append({"label": k, "values": nums})
        else:
            cats = sorted(set(present))
            dims.append(
                {
                    "label": k,
                    "values": [cats.index(v) if v is not None else None for v in vals],
                    "tickvals": list(range(len(cats))),
                    "ticktext": cats,
                }
            )
    if metric:
        dims.append(
            {
                "label": metric,
                "values": [r.metrics[metric].value if metric in r.metrics else None for r in runs],
                "metric": True,
            }
        )
    return {"dimensions": dims, "metric": metric}
