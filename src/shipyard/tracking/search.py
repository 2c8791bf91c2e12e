"""Run search: the filter and order-by language, and the query that finds the matching run ids.

One language for the SDK, REST, CLI and Studio, close to MLflow's::

    metrics.acc > 0.5 AND params.model = 'lr' AND tags.`data set` ILIKE '%mnist%'
    status IN ('FINISHED', 'KILLED') AND start_time >= '2026-01-01T00:00:00Z'

Filter grammar (keywords and prefixes are case-insensitive, keys are not)::

    filter     := comparison (AND comparison)*
    comparison := operand op value | operand (IN | NOT IN) '(' value (',' value)* ')'
    operand    := (metrics|metric). key | (params|param). key | (tags|tag). key
                | (attributes|attribute|attr). name | name
    name       := status | name | run_name | start_time | end_time | run_id | id
                | experiment_id | parent_run_id
    key        := unquoted | `back-quoted` | "double-quoted"   (a doubled quote escapes itself)
    op         := = | == | != | <> | < | <= | > | >= | LIKE | ILIKE
    value      := 'string' | "string" | number              (a doubled quote escapes itself)

An unquoted key is letters, digits and ``_ / - .`` up to whitespace or an operator; quote any
other key (``metrics.`val loss```, ``params."lr.init"``). OR is refused with a message saying so:
run two searches instead. Every parse error is an ``InvalidArgument`` whose details carry
``field`` ("filter" or "order_by"), ``position`` (0-based character offset into the text, or the
item for order_by, which also carries ``index``) and ``token`` (the offending text, "" at the end),
so Studio can mark the offending part in place.

Semantics, decided here once for every surface:

- A comparison on a key the run does not have is false, whatever the operator: ``!=`` and
  ``NOT IN`` match only runs that have the key. The same holds for a NULL attribute (the
  ``end_time`` of a running run, the ``parent_run_id`` of a top-level run) and for a NaN metric
  (stored as NULL): NaN matches no comparison.
- metrics compare numerically with the latest value (``latest_metrics``) and take numbers only;
  LIKE and ILIKE are refused for them.
- params, tags and the string attributes compare as strings. ``=``, ``!=``, IN and NOT IN accept
  an unquoted number and compare with its text as written (``params.epochs = 10`` matches the
  param ``'10'``, not ``'10.0'``). ``<``, ``<=``, ``>``, ``>=`` refuse an unquoted number with an
  error that suggests quoting: strings compare character by character (``'10' < '9'``), and a
  bare number there would promise a numeric comparison that does not happen.
- String comparisons and string orderings are by code point on both backends (PostgreSQL gets
  ``COLLATE "C"``), so SQLite and PostgreSQL return the same runs in the same order.
- LIKE is case-sensitive on both backends (SQLite's own LIKE is not, so there it runs as an
  equivalent GLOB); ILIKE is case-insensitive (SQLite folds ASCII letters only). ``%`` matches
  any run of characters, ``_`` one character, and a backslash makes the next character literal.
- ``start_time`` and ``end_time`` compare as integer milliseconds since the epoch, UTC; an ISO
  8601 string is accepted too (a time without an offset is UTC).

Order by: a list of ``"<operand> [ASC|DESC]"`` (ASC when omitted), e.g. ``"metrics.acc DESC"``.
Runs that lack the metric, param or tag (or whose metric is NaN, or whose attribute is NULL)
sort last in either direction. Ties, and an empty list, fall back to ``start_time DESC`` then
run id DESC, so paging with limit and offset is stable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import (
    Boolean,
    ColumnElement,
    FromClause,
    Select,
    String,
    Table,
    and_,
    false,
    literal,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from shipyard.core.errors import InvalidArgument
from shipyard.tracking.tables import latest_metrics, run_params, run_tags, runs

__all__ = [
    "Comparison",
    "OrderKey",
    "build_search_query",
    "parse_filter",
    "parse_order_by",
]

# SQLite refuses a join of more than 64 tables; each distinct metric, param or tag key costs one.
MAX_KEYS = 32

_PREFIXES = {
    "metrics": "metric",
    "metric": "metric",
    "params": "param",
    "param": "param",
    "tags": "tag",
    "tag": "tag",
    "attributes": "attribute",
    "attribute": "attribute",
    "attr": "attribute",
}
_ATTRIBUTE_COLUMNS = {
    "status": runs.c.status,
    "name": runs.c.name,
    "start_time": runs.c.start_time,
    "end_time": runs.c.end_time,
    "run_id": runs.c.id,
    "experiment_id": runs.c.experiment_id,
    "parent_run_id": runs.c.parent_run_id,
}
_ATTRIBUTE_ALIASES = {"run_name": "name", "id": "run_id"}
_TIME_ATTRIBUTES = {"start_time", "end_time"}
_NULLABLE_ATTRIBUTES = {"end_time", "parent_run_id"}
_KEY_TABLES: dict[str, Table] = {"metric": latest_metrics, "param": run_params, "tag": run_tags}
_LIFECYCLES = ("active", "deleted", "all")

_ALLOWED_ATTRIBUTES = ", ".join([*_ATTRIBUTE_COLUMNS, *_ATTRIBUTE_ALIASES])
_OPERAND_HELP = (
    f"metrics.<key>, params.<key>, tags.<key> or a run attribute ({_ALLOWED_ATTRIBUTES})"
)
_OPERATORS_HELP = "=, !=, <, <=, >, >=, LIKE, ILIKE, IN or NOT IN"
# Two-character operators first: "<=" must not read as "<" then "=".
_SYMBOL_OPERATORS = {
    "==": "=",
    "!=": "!=",
    "<>": "!=",
    "<=": "<=",
    ">=": ">=",
    "=": "=",
    "<": "<",
    ">": ">",
}
_ORDERING_OPERATORS = {"<", "<=", ">", ">="}
_LIST_OPERATORS = {"IN", "NOT IN"}
_PATTERN_OPERATORS = {"LIKE", "ILIKE"}

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNQUOTED_KEY = re.compile(r"[\w/.\-]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATOR_CHARS = "=!<>"
_VALUE_END = " \t\r\n,)"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Comparison:
    """One ``operand op value`` of a filter.

    ``kind`` is "metric", "param", "tag" or "attribute"; an attribute's ``key`` is its canonical
    name (``run_name`` reads as "name", ``id`` as "run_id"). ``op`` is upper case ("NOT IN").
    ``value`` is a float or int for metrics and times (an ISO time already in milliseconds), a
    str otherwise, and a tuple of those for IN and NOT IN.
    """

    kind: str
    key: str
    op: str
    value: object


@dataclass(frozen=True)
class OrderKey:
    """One ``order_by`` item: what to sort by and in which direction."""

    kind: str
    key: str
    ascending: bool


@dataclass(frozen=True)
class _Literal:
    value: str | int | float
    text: str  # as written, with its quotes: the token an error marks
    is_string: bool
    pos: int


# -- parsing ----------------------------------------------------------------------------------


class _Scanner:
    """A cursor over one filter (or one order_by item) that knows how to fail helpfully."""

    def __init__(self, text: str, field: str, *, index: int | None = None) -> None:
        self.text = text
        self.pos = 0
        self.field = field
        self.index = index

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def word(self) -> str | None:
        m = _WORD.match(self.text, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return m.group()

    def chunk(self, pos: int) -> str:
        """The text that starts at ``pos``, up to the next whitespace (what a UI would mark)."""
        end = pos
        while end < len(self.text) and not self.text[end].isspace() and end - pos < 40:
            end += 1
        return self.text[pos:end]

    def fail(self, message: str, pos: int | None = None, token: str | None = None) -> NoReturn:
        pos = self.pos if pos is None else pos
        token = self.chunk(pos) if token is None else token
        where = f"at position {pos}"
        found = "found the end" if pos >= len(self.text) else f"found {token!r}"
        details: dict[str, Any] = {"position": pos, "token": token}
        if self.index is not None:
            details["index"] = self.index
            message = f"item {self.index} ({self.text!r}): {message}"
        raise InvalidArgument.for_field(self.field, f"{message} {where}, {found}", **details)

    def quoted(self, what: str) -> tuple[str, int]:
        """A quoted text starting at the cursor; a doubled quote stands for itself."""
        start, quote = self.pos, self.text[self.pos]
        out: list[str] = []
        i = start + 1
        while i < len(self.text):
            c = self.text[i]
            if c == quote:
                if i + 1 < len(self.text) and self.text[i + 1] == quote:
                    out.append(quote)
                    i += 2
                    continue
                self.pos = i + 1
                return "".join(out), start
            out.append(c)
            i += 1
        self.fail(f"unterminated {what}: expected a closing {quote}", start)


def _parse_operand(s: _Scanner) -> tuple[str, str]:
    """``metrics.<key>`` and friends, or a bare attribute name: (kind, key)."""
    start = s.pos
    if s.at_end():
        s.fail(f"expected {_OPERAND_HELP}")
    word = s.word()
    if word is None:
        s.fail(f"expected {_OPERAND_HELP}")
    if s.peek() == ".":
        kind = _PREFIXES.get(word.lower())
        if kind is None:
            s.fail(
                f"unknown prefix {word!r}: expected metrics., params., tags. or attributes.",
                start,
                word,
            )
        s.pos += 1
        key, key_pos = _parse_key(s, word)
        if kind == "attribute":
            return kind, _attribute_name(s, key, key_pos)
        return kind, key
    if word.lower() in _PREFIXES:
        s.fail(f"expected '.' and a key after {word!r}", start, word)
    return "attribute", _attribute_name(s, word, start)


def _parse_key(s: _Scanner, prefix: str) -> tuple[str, int]:
    start = s.pos
    if s.peek() in ("`", '"'):
        key, _ = s.quoted("quoted key")
        if not key:
            s.fail("expected a non-empty key", start)
        return key, start
    m = _UNQUOTED_KEY.match(s.text, s.pos)
    if not m:
        s.fail(f"expected a key after '{prefix}.' (quote it with backticks if it has spaces)")
    s.pos = m.end()
    nxt = s.peek()
    if nxt and not nxt.isspace() and nxt not in _OPERATOR_CHARS:
        s.fail(
            f"unexpected character {nxt!r} in a key: quote a key that contains it with "
            f"backticks, e.g. {prefix}.`{s.chunk(start)}`",
            s.pos,
            nxt,
        )
    return m.group(), start


def _attribute_name(s: _Scanner, name: str, pos: int) -> str:
    canonical = _ATTRIBUTE_ALIASES.get(name.lower(), name.lower())
    if canonical not in _ATTRIBUTE_COLUMNS:
        s.fail(
            f"unknown attribute {name!r}: expected one of {_ALLOWED_ATTRIBUTES}, "
            "or metrics.<key>, params.<key>, tags.<key>",
            pos,
            name,
        )
    return canonical


def _parse_operator(s: _Scanner) -> str:
    s.skip_ws()
    start = s.pos
    two = s.text[s.pos : s.pos + 2]
    if len(two) == 2 and two in _SYMBOL_OPERATORS:
        s.pos += 2
        return _SYMBOL_OPERATORS[two]
    if s.peek() in _SYMBOL_OPERATORS:
        s.pos += 1
        return _SYMBOL_OPERATORS[s.text[start]]
    word = s.word()
    upper = word.upper() if word else ""
    if upper in ("LIKE", "ILIKE", "IN"):
        return upper
    if upper == "NOT":
        s.skip_ws()
        after = s.pos
        if (s.word() or "").upper() == "IN":
            return "NOT IN"
        s.fail("expected IN after NOT (NOT IN is the only negated operator)", after)
    s.fail(f"expected an operator ({_OPERATORS_HELP})", start)


def _parse_literal(s: _Scanner) -> _Literal:
    s.skip_ws()
    start = s.pos
    if s.peek() in ("'", '"'):
        text, _ = s.quoted("string")
        return _Literal(text, s.text[start : s.pos], True, start)
    m = _NUMBER.match(s.text, s.pos)
    if m and (m.end() == len(s.text) or s.text[m.end()] in _VALUE_END):
        text = m.group()
        number: int | float
        if re.fullmatch(r"[+-]?\d+", text):
            number = int(text)
        else:
            number = float(text)
            if not math.isfinite(number):
                s.fail("expected a finite number", start, text)
        s.pos = m.end()
        return _Literal(number, text, False, start)
    s.fail("expected a quoted string or a number (quote text values, e.g. 'lr')", start)


def _parse_list(s: _Scanner) -> list[_Literal]:
    s.skip_ws()
    if s.peek() != "(":
        s.fail("expected '(' and a comma-separated list of values")
    s.pos += 1
    items: list[_Literal] = []
    while True:
        s.skip_ws()
        if s.peek() == ")" and not items:
            s.fail("expected at least one value in the list")
        items.append(_parse_literal(s))
        s.skip_ws()
        if s.peek() == ",":
            s.pos += 1
            continue
        if s.peek() == ")":
            s.pos += 1
            return items
        s.fail("expected ',' or ')' in the list of values")


def _typed(s: _Scanner, kind: str, key: str, op: str, lit: _Literal) -> str | int | float:
    """The literal as the operand compares it, or an error that says what to write instead."""
    label = f"{kind}s.{key}" if kind != "attribute" else key
    if kind == "metric":
        if op in _PATTERN_OPERATORS:
            s.fail(f"{op} works on strings; {label} is a number", lit.pos, lit.text)
        if lit.is_string:
            s.fail(f"expected a number: {label} is a metric", lit.pos, lit.text)
        return lit.value
    if kind == "attribute" and key in _TIME_ATTRIBUTES:
        if op in _PATTERN_OPERATORS:
            s.fail(f"{op} works on strings; {label} is a time", lit.pos, lit.text)
        if not lit.is_string:
            return lit.value
        try:
            return _iso_to_ms(str(lit.value))
        except ValueError:
            s.fail(
                f"expected milliseconds since the epoch or an ISO 8601 time for {label}",
                lit.pos,
                lit.text,
            )
    # params, tags and the string attributes
    if lit.is_string:
        if op in _PATTERN_OPERATORS and re.search(r"(?<!\\)(?:\\\\)*\\$", str(lit.value)):
            s.fail("a LIKE pattern cannot end with a lone backslash", lit.pos, lit.text)
        return lit.value
    if op in _ORDERING_OPERATORS:
        s.fail(
            f"{label} is a string and compares character by character ('10' < '9'): "
            f"quote the value to compare as text, e.g. '{lit.text}'",
            lit.pos,
            lit.text,
        )
    if op in _PATTERN_OPERATORS:
        s.fail(f"{op} needs a quoted pattern, e.g. '%{lit.text}%'", lit.pos, lit.text)
    return lit.text


def _iso_to_ms(text: str) -> int:
    """An ISO 8601 time as integer milliseconds, UTC when it names no offset. Exact: going
    through a float timestamp would turn .001 s into 0 ms."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _parse_comparison(s: _Scanner) -> Comparison:
    s.skip_ws()
    kind, key = _parse_operand(s)
    op = _parse_operator(s)
    if op in _LIST_OPERATORS:
        values = tuple(_typed(s, kind, key, op, lit) for lit in _parse_list(s))
        return Comparison(kind, key, op, values)
    return Comparison(kind, key, op, _typed(s, kind, key, op, _parse_literal(s)))


def parse_filter(text: str | None) -> list[Comparison]:
    """The comparisons of a filter, in order; an empty or missing filter has none.

    Raises ``InvalidArgument`` (field "filter", with position and token) on any error.
    """
    if text is None or not text.strip():
        return []
    s = _Scanner(text, "filter")
    out = [_parse_comparison(s)]
    while True:
        s.skip_ws()
        if s.at_end():
            return out
        start = s.pos
        word = (s.word() or "").upper()
        if word == "OR":
            s.fail("OR is not supported: join comparisons with AND, or run two searches", start)
        if word != "AND":
            s.fail("expected AND or the end of the filter", start)
        s.skip_ws()
        if s.at_end():
            s.fail("expected a comparison after AND")
        out.append(_parse_comparison(s))


def parse_order_by(items: list[str] | None) -> list[OrderKey]:
    """``["metrics.acc DESC", "name"]`` as order keys; ASC when no direction is given.

    Raises ``InvalidArgument`` (field "order_by", with index, position and token) on any error.
    """
    out = []
    for index, item in enumerate(items or []):
        s = _Scanner(item, "order_by", index=index)
        s.skip_ws()
        kind, key = _parse_operand(s)
        s.skip_ws()
        ascending = True
        if not s.at_end():
            start = s.pos
            word = (s.word() or "").upper()
            if word not in ("ASC", "DESC"):
                s.fail("expected ASC, DESC or the end of the item", start)
            ascending = word == "ASC"
            s.skip_ws()
            if not s.at_end():
                s.fail("expected the end of the item after the direction")
        out.append(OrderKey(kind, key, ascending))
    return out


# -- SQL --------------------------------------------------------------------------------------


class _bytewise(FunctionElement[str]):
    """A string compared and sorted by code point: ``COLLATE "C"`` on PostgreSQL, whose default
    collation follows the locale ("a" < "B"); SQLite's default collation already is bytewise."""

    name = "bytewise"
    type = String()
    inherit_cache = True


@compiles(_bytewise)
def _bytewise_default(element: _bytewise, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses.clauses[0], **kw))


@compiles(_bytewise, "postgresql")
def _bytewise_postgresql(element: _bytewise, compiler: Any, **kw: Any) -> str:
    return f'{compiler.process(element.clauses.clauses[0], **kw)} COLLATE "C"'


class _case_sensitive_like(FunctionElement[bool]):
    """``column LIKE pattern``, case-sensitive on every backend. SQLite's LIKE ignores ASCII
    case, so there it is the same match written as a GLOB (arguments: column, LIKE pattern,
    GLOB pattern)."""

    name = "case_sensitive_like"
    type = Boolean()
    inherit_cache = True


@compiles(_case_sensitive_like)
def _like_default(element: _case_sensitive_like, compiler: Any, **kw: Any) -> str:
    column, pattern, _glob = element.clauses.clauses
    return str(compiler.process(column.like(pattern, escape="\\"), **kw))


@compiles(_case_sensitive_like, "sqlite")
def _like_sqlite(element: _case_sensitive_like, compiler: Any, **kw: Any) -> str:
    column, _pattern, glob = element.clauses.clauses
    return str(compiler.process(column.op("GLOB", is_comparison=True)(glob), **kw))


def _like_to_glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``, backslash escapes) as the GLOB pattern that matches alike."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            c, i = pattern[i + 1], i + 2
            out.append(f"[{c}]" if c in "*?[" else c)
            continue
        out.append("*" if c == "%" else "?" if c == "_" else f"[{c}]" if c in "*?[" else c)
        i += 1
    return "".join(out)


def _condition(column: ColumnElement[Any], c: Comparison, is_string: bool) -> ColumnElement[bool]:
    if c.op == "LIKE":
        pattern = str(c.value)
        return _case_sensitive_like(column, literal(pattern), literal(_like_to_glob(pattern)))
    if c.op == "ILIKE":
        return column.ilike(str(c.value), escape="\\")
    if c.op == "IN":
        return column.in_(list(c.value))  # type: ignore[call-overload]
    if c.op == "NOT IN":
        return column.not_in(list(c.value))  # type: ignore[call-overload]
    lhs: ColumnElement[Any] = _bytewise(column) if is_string and c.op != "=" else column
    if c.op == "=":
        return lhs == c.value
    if c.op == "!=":
        return lhs != c.value
    if c.op == "<":
        return lhs < c.value
    if c.op == "<=":
        return lhs <= c.value
    if c.op == ">":
        return lhs > c.value
    return lhs >= c.value


def _is_string_attribute(key: str) -> bool:
    return key not in _TIME_ATTRIBUTES


def build_search_query(
    *,
    project_id: str,
    experiment_ids: list[str] | None,
    filter: str | None,
    order_by: list[str] | None,
    lifecycle: str = "active",
    limit: int,
    offset: int,
) -> Select[tuple[str]]:
    """The ids of the project's runs that match, in order, one page of them.

    ``experiment_ids`` None means every experiment of the project (an empty list matches
    nothing); ``lifecycle`` is "active", "deleted" or "all". A negative ``limit`` means no limit.
    Each metric, param or tag key the filter names is one inner join on its table (its primary
    key (run_id, key) finds the row); a key only ordered by is an outer join, so runs without
    it stay and sort last.

    Raises ``InvalidArgument`` for a bad filter, order_by, lifecycle, limit or offset.
    """
    comparisons = parse_filter(filter)
    order_keys = parse_order_by(order_by)
    if lifecycle not in _LIFECYCLES:
        raise InvalidArgument.for_field(
            "lifecycle", f"expected one of {', '.join(_LIFECYCLES)}, got {lifecycle!r}"
        )
    if offset < 0:
        raise InvalidArgument.for_field("offset", f"expected 0 or more, got {offset}")

    keyed = {(c.kind, c.key) for c in comparisons if c.kind != "attribute"}
    ordered = {(o.kind, o.key) for o in order_keys if o.kind != "attribute"}
    if len(keyed | ordered) > MAX_KEYS:
        raise InvalidArgument.for_field(
            "filter",
            f"a search can name at most {MAX_KEYS} distinct metric, param and tag keys "
            f"(filter and order_by together), got {len(keyed | ordered)}",
        )

    source: FromClause = runs
    aliases: dict[tuple[str, str], Any] = {}
    for kind, key in [*dict.fromkeys((c.kind, c.key) for c in comparisons)]:
        if kind == "attribute":
            continue
        alias = _KEY_TABLES[kind].alias(f"{kind}_{len(aliases)}")
        aliases[(kind, key)] = alias
        source = source.join(alias, and_(alias.c.run_id == runs.c.id, alias.c.key == key))
    outer: set[tuple[str, str]] = set()
    for kind, key in [*dict.fromkeys((o.kind, o.key) for o in order_keys)]:
        if kind == "attribute" or (kind, key) in aliases:
            continue
        alias = _KEY_TABLES[kind].alias(f"{kind}_{len(aliases)}")
        aliases[(kind, key)] = alias
        outer.add((kind, key))
        source = source.outerjoin(alias, and_(alias.c.run_id == runs.c.id, alias.c.key == key))

    where: list[ColumnElement[bool]] = [runs.c.project_id == project_id]
    if experiment_ids is not None:
        where.append(runs.c.experiment_id.in_(experiment_ids) if experiment_ids else false())
    if lifecycle != "all":
        where.append(runs.c.lifecycle == lifecycle)
    for c in comparisons:
        if c.kind == "attribute":
            column = _ATTRIBUTE_COLUMNS[c.key]
            where.append(_condition(column, c, _is_string_attribute(c.key)))
        else:
            column = aliases[(c.kind, c.key)].c.value
            where.append(_condition(column, c, c.kind != "metric"))

    ordering: list[Any] = []
    seen: set[str] = set()
    for o in order_keys:
        if o.kind == "attribute":
            column = _ATTRIBUTE_COLUMNS[o.key]
            string, nullable = _is_string_attribute(o.key), o.key in _NULLABLE_ATTRIBUTES
            seen.add(o.key)
        else:
            column = aliases[(o.kind, o.key)].c.value
            # An inner-joined key is never NULL (every comparison rejects NULL), and a bare
            # "value DESC" lets PostgreSQL walk the (key, value) index backwards and stop early.
            string, nullable = o.kind != "metric", (o.kind, o.key) in outer
        sort: ColumnElement[Any] = _bytewise(column) if string else column
        directed = sort.asc() if o.ascending else sort.desc()
        ordering.append(directed.nulls_last() if nullable else directed)
    if "start_time" not in seen:
        ordering.append(runs.c.start_time.desc())
    if "run_id" not in seen:
        ordering.append(runs.c.id.desc())

    query = select(runs.c.id).select_from(source).where(*where).order_by(*ordering)
    if limit >= 0:
        query = query.limit(limit)
    return query.offset(offset) if offset else query
