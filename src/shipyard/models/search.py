"""Searching model versions: a filter in the run search's shape, applied to versions.

    name = 'churn' AND tags.team = 'risk' AND alias = 'champion'
    approval_status IN ('approved', 'pending') AND version >= 3 AND flavor != 'onnx'

Attributes: ``name``, ``version`` (a number), ``run_id``, ``source_path``, ``flavor``,
``approval_status`` (or ``status``), ``alias`` (true when any of the version's aliases matches),
``digest``, ``description``; and ``tags.<key>``. Operators: ``= != < <= > >= LIKE ILIKE IN
NOT IN``. A project holds few enough versions that the match runs in Python; the parser is
MLflow's grammar (``tracking.mlflow_search``), which its registry search also speaks.
Order by: ``name``, ``version``, ``created_at`` or ``updated_at``, each ASC or DESC; the default
is name ASC then version DESC.
"""

from __future__ import annotations

import re
from typing import Any

from shipyard.core.errors import InvalidArgument
from shipyard.models.schemas import ModelVersionPublic
from shipyard.tracking.mlflow_search import Clause, parse_mlflow_filter

ATTRIBUTES = {
    "name",
    "version",
    "run_id",
    "source_path",
    "flavor",
    "approval_status",
    "status",
    "alias",
    "digest",
    "description",
    # MLflow's spellings of the same attributes.
    "version_number",
    "source",
}
_CANONICAL = {"status": "approval_status", "version_number": "version", "source": "source_uri"}
_ORDER_KEYS = {
    "name": "name",
    "version": "version",
    "version_number": "version",
    "created_at": "created_at",
    "creation_timestamp": "created_at",
    "updated_at": "updated_at",
    "last_updated_timestamp": "updated_at",
}


def parse_version_filter(text: str | None) -> list[Clause]:
    clauses = parse_mlflow_filter(text, ATTRIBUTES)
    out = []
    for c in clauses:
        if c.kind not in ("attribute", "tag"):
            raise InvalidArgument.for_field(
                "filter", f"model versions are searched by attributes and tags, not {c.kind}s"
            )
        key = _CANONICAL.get(c.key, c.key) if c.kind == "attribute" else c.key
        value = c.value
        if c.kind == "attribute" and key == "version":
            try:
                value = (
                    tuple(int(v) for v in value) if isinstance(value, tuple) else int(str(value))
                )
            except ValueError:
                raise InvalidArgument.for_field(
                    "filter", f"version compares with a whole number, got {c.value!r}"
                ) from None
        out.append(Clause(c.kind, key, c.op, value, c.numeric))
    return out


def name_equals(clauses: list[Clause]) -> str | None:
    """The model name when the filter pins one (so the query can narrow to it)."""
    for c in clauses:
        if c.kind == "attribute" and c.key == "name" and c.op == "=":
            return str(c.value)
    return None


def _like(pattern: str, value: str, ignore_case: bool) -> bool:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, re.S | (re.I if ignore_case else 0)) is not None


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "IS NULL":
        return actual is None
    if op == "IS NOT NULL":
        return actual is not None
    if actual is None:
        return False
    if op in ("LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"):
        hit = _like(str(expected), str(actual), "ILIKE" in op)
        return not hit if op.startswith("NOT") else hit
    if op == "IN":
        return bool(actual in expected)
    if op == "NOT IN":
        return bool(actual not in expected)
    if isinstance(actual, int) != isinstance(expected, int):
        actual, expected = str(actual), str(expected)
    ops = {
        "=": actual == expected,
        "!=": actual != expected,
        "<": actual < expected,
        "<=": actual <= expected,
        ">": actual > expected,
        ">=": actual >= expected,
    }
    if op not in ops:
        raise InvalidArgument.for_field("filter", f"unsupported operator {op}")
    return bool(ops[op])


def matches(v: ModelVersionPublic, clauses: list[Clause]) -> bool:
    for c in clauses:
        if c.kind == "tag":
            if not _compare(v.tags.get(c.key), c.op, c.value):
                return False
        elif c.key == "alias":
            if c.op in ("!=", "NOT IN", "NOT LIKE", "NOT ILIKE"):
                positive = {"!=": "=", "NOT IN": "IN", "NOT LIKE": "LIKE", "NOT ILIKE": "ILIKE"}
                if any(_compare(a, positive[c.op], c.value) for a in v.aliases):
                    return False
            elif not any(_compare(a, c.op, c.value) for a in v.aliases):
                return False
        else:
            actual = getattr(v, "run_id" if c.key == "run_id" else c.key)
            if hasattr(actual, "value"):  # an enum
                actual = actual.value
            if not _compare(actual, c.op, c.value):
                return False
    return True


def sort_versions(
    versions: list[ModelVersionPublic], order_by: list[str] | None
) -> list[ModelVersionPublic]:
    keys: list[tuple[str, bool]] = []
    for index, item in enumerate(order_by or []):
        parts = item.strip().split()
        if not parts or len(parts) > 2:
            raise InvalidArgument.for_field(
                f"order_by[{index}]", f"expected '<key> [ASC|DESC]', got {item!r}"
            )
        key = _ORDER_KEYS.get(parts[0].removeprefix("attributes.").removeprefix("attribute."))
        if key is None:
            raise InvalidArgument.for_field(
                f"order_by[{index}]",
                f"unknown key {parts[0]!r}: expected name, version, created_at or updated_at",
            )
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if direction not in ("ASC", "DESC"):
            raise InvalidArgument.for_field(
                f"order_by[{index}]", f"expected ASC or DESC, got {parts[1]!r}"
            )
        keys.append((key, direction == "ASC"))
    keys += [("name", True), ("version", False)]
    out = list(versions)
    for key, ascending in reversed(keys):  # stable sorts, least significant key first
        out.sort(key=lambda v, k=key: getattr(v, k), reverse=not ascending)  # type: ignore[misc]
    return out
