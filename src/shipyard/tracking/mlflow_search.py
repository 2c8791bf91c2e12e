"""MLflow's search filters and order_by, parsed and re-written in Shipyard's search language
(``tracking.search``); experiment filters are applied here. Pure functions: no HTTP, no queries.
What Shipyard's language cannot say is refused with ``InvalidArgument`` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NoReturn

from shipyard.core.errors import InvalidArgument
from shipyard.tracking.mlflow_translate import RUN_NAME_TAG

# -- search filters ---------------------------------------------------------------------------

_METRIC = {"metric", "metrics"}
_PARAM = {"param", "params", "parameter", "parameters"}
_TAG = {"tag", "tags"}
_ATTRIBUTE = {"attribute", "attributes", "attr", "run"}
_DATASET = {"dataset", "datasets"}
_ATTRIBUTE_ALIASES = {
    "created": "start_time",
    "Created": "start_time",
    "run name": "run_name",
    "Run name": "run_name",
    "Run Name": "run_name",
}
_RUN_ATTRIBUTES = {"run_id", "run_name", "status", "start_time", "end_time"}
_NUMERIC_RUN_ATTRIBUTES = {"start_time", "end_time"}
_UNSUPPORTED_RUN_ATTRIBUTES = {"user_id", "artifact_uri"}
_RUN_SEARCHABLE = _RUN_ATTRIBUTES | _UNSUPPORTED_RUN_ATTRIBUTES
_EXPERIMENT_ATTRIBUTES = {"name", "creation_time", "last_update_time", "experiment_id"}
_KEYWORDS = {"AND", "OR", "LIKE", "ILIKE", "IN", "NOT", "IS", "NULL", "ASC", "DESC"}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_CHARS = re.compile(r"[\w/.\-:]+")


@dataclass(frozen=True)
class _Tok:
    kind: str  # ident, str, num, op, kw, punct
    text: str  # the value (unquoted), operator, keyword (upper) or punctuation
    prefix: str | None = None  # for ident: the entity prefix as written, or None
    pos: int = 0


@dataclass(frozen=True)
class Clause:
    """One MLflow comparison: kind is metric, param, tag, attribute or dataset."""

    kind: str
    key: str
    op: str  # = != < <= > >= LIKE ILIKE IN NOT IN, IS NULL, IS NOT NULL
    value: Any  # str, int, float, a tuple of those, or None for IS [NOT] NULL
    numeric: bool = False  # value was written as a number


def _fail(field: str, text: str, message: str, pos: int | None = None) -> NoReturn:
    where = f" (at position {pos} of {text!r})" if pos is not None else f" in {text!r}"
    raise InvalidArgument.for_field(field, message + where)


def _quoted(text: str, i: int, field: str) -> tuple[str, int]:
    quote, out, j = text[i], [], i + 1
    while j < len(text):
        c = text[j]
        if c == "\\" and j + 1 < len(text) and text[j + 1] == quote:
            out.append(quote)
            j += 2
            continue
        if c == quote:
            if j + 1 < len(text) and text[j + 1] == quote:
                out.append(quote)
                j += 2
                continue
            return "".join(out), j + 1
        out.append(c)
        j += 1
    _fail(field, text, f"unterminated quote {quote}", i)


def _tokens(text: str, field: str) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "'\"":
            value, i2 = _quoted(text, i, field)
            out.append(_Tok("str", value, pos=i))
            i = i2
        elif c == "`":
            value, i2 = _quoted(text, i, field)
            out.append(_Tok("ident", value, None, i))
            i = i2
        elif c in "(),":
            out.append(_Tok("punct", c, pos=i))
            i += 1
        elif c in "=!<>":
            two = text[i : i + 2]
            if two in ("!=", "<>", "<=", ">=", "=="):
                out.append(_Tok("op", {"<>": "!=", "==": "="}.get(two, two), pos=i))
                i += 2
            elif c == "!":
                _fail(field, text, "expected '!='", i)
            else:
                out.append(_Tok("op", c, pos=i))
                i += 1
        elif (m := _NUMBER.match(text, i)) and not (
            m.end() < len(text) and (text[m.end()].isalpha() or text[m.end()] == "_")
        ):
            out.append(_Tok("num", m.group(), pos=i))
            i = m.end()
        elif m := _WORD.match(text, i):
            word, i = m.group(), m.end()
            if i < len(text) and text[i] == ".":
                i += 1
                if i < len(text) and text[i] in "`\"'":
                    key, i = _quoted(text, i, field)
                else:
                    km = _KEY_CHARS.match(text, i)
                    if not km:
                        _fail(field, text, f"expected a key after '{word}.'", i)
                    key, i = km.group(), km.end()
                out.append(_Tok("ident", key, word, m.start()))
            elif word.upper() in _KEYWORDS:
                out.append(_Tok("kw", word.upper(), pos=m.start()))
            else:
                out.append(_Tok("ident", word, None, m.start()))
        else:
            _fail(field, text, f"unexpected character {c!r}", i)
    return out


def _entity(tok: _Tok, field: str, text: str, attributes: set[str]) -> tuple[str, str]:
    prefix = tok.prefix
    key = tok.text
    if prefix is None:
        kind = "attribute"
    elif prefix.strip("`") in _METRIC:
        kind = "metric"
    elif prefix in _PARAM:
        kind = "param"
    elif prefix in _TAG:
        kind = "tag"
    elif prefix in _ATTRIBUTE:
        kind = "attribute"
    elif prefix in _DATASET:
        kind = "dataset"
    else:
        _fail(
            field,
            text,
            f"invalid entity type {prefix!r}: expected metrics, params, tags, attributes "
            "or datasets",
            tok.pos,
        )
    if kind == "attribute":
        key = _ATTRIBUTE_ALIASES.get(key, key)
        if key not in attributes:
            _fail(
                field,
                text,
                f"invalid attribute key {key!r}: expected one of {', '.join(sorted(attributes))}",
                tok.pos,
            )
    return kind, key


def parse_mlflow_filter(text: str | None, attributes: set[str] | None = None) -> list[Clause]:
    """MLflow's filter (``<entity>.<key> <op> <value>`` joined by AND) as clauses.

    Raises ``InvalidArgument`` (field "filter") on anything MLflow's grammar does not allow.
    """
    if text is None or not text.strip():
        return []
    attributes = attributes if attributes is not None else _RUN_SEARCHABLE
    toks = _tokens(text, "filter")
    out: list[Clause] = []
    i = 0

    def at(j: int) -> _Tok | None:
        return toks[j] if j < len(toks) else None

    while True:
        tok = at(i)
        if tok is None or tok.kind != "ident":
            _fail(
                "filter",
                text,
                "expected an identifier such as metrics.acc",
                tok.pos if tok else None,
            )
        kind, key = _entity(tok, "filter", text, attributes)
        i += 1
        op_tok = at(i)
        if op_tok is None:
            _fail("filter", text, "expected a comparison operator after the identifier")
        negate = False
        if op_tok.kind == "kw" and op_tok.text == "IS":
            nxt = at(i + 1)
            if nxt is not None and nxt.kind == "kw" and nxt.text == "NOT":
                negate, i = True, i + 1
            null = at(i + 1)
            if null is None or null.kind != "kw" or null.text != "NULL":
                _fail("filter", text, "expected NULL after IS", op_tok.pos)
            out.append(Clause(kind, key, "IS NOT NULL" if negate else "IS NULL", None))
            i += 2
        else:
            if op_tok.kind == "kw" and op_tok.text == "NOT":
                negate, i = True, i + 1
                op_tok = at(i)
                if op_tok is None:
                    _fail("filter", text, "expected IN, LIKE or ILIKE after NOT")
            if op_tok.kind == "op" and not negate:
                op = op_tok.text
            elif op_tok.kind == "kw" and op_tok.text in ("LIKE", "ILIKE", "IN"):
                op = ("NOT " if negate else "") + op_tok.text
            else:
                _fail("filter", text, "expected a comparison operator", op_tok.pos)
            i += 1
            if op in ("IN", "NOT IN"):
                values, i = _list(toks, i, text)
                out.append(Clause(kind, key, op, tuple(v.text for v in values)))
            else:
                v = at(i)
                if (
                    v is None
                    or v.kind not in ("str", "num", "ident")
                    or (v.kind == "ident" and v.prefix is not None)
                ):
                    _fail(
                        "filter", text, "expected a quoted string or a number", v.pos if v else None
                    )
                value = v.text
                out.append(Clause(kind, key, op, value, numeric=v.kind == "num"))
                i += 1
        nxt = at(i)
        if nxt is None:
            return out
        if nxt.kind == "kw" and nxt.text == "AND":
            i += 1
            continue
        if nxt.kind == "kw" and nxt.text == "OR":
            _fail("filter", text, "OR is not supported by MLflow's search syntax: use AND", nxt.pos)
        _fail("filter", text, "expected AND or the end of the filter", nxt.pos)


def _list(toks: list[_Tok], i: int, text: str) -> tuple[list[_Tok], int]:
    if i >= len(toks) or toks[i].text != "(" or toks[i].kind != "punct":
        _fail("filter", text, "expected '(' and a list of quoted values")
    i += 1
    values = []
    while True:
        if i >= len(toks) or toks[i].kind not in ("str", "num"):
            _fail("filter", text, "expected a quoted value in the list")
        values.append(toks[i])
        i += 1
        if i < len(toks) and toks[i].kind == "punct" and toks[i].text == ",":
            i += 1
            continue
        if i < len(toks) and toks[i].kind == "punct" and toks[i].text == ")":
            return values, i + 1
        _fail("filter", text, "expected ',' or ')' in the list")


def _quote_key(key: str) -> str:
    return "`" + key.replace("`", "``") + "`"


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _number(field: str, clause: Clause, text: str) -> str:
    if not clause.numeric:
        _fail(field, text, f"expected a number for {clause.kind} {clause.key!r}")
    return str(clause.value)


def _run_operand(kind: str, key: str, field: str, text: str) -> str:
    if kind == "dataset":
        _fail(field, text, f"datasets.{key} is not supported by this server")
    if kind == "attribute":
        if key in _UNSUPPORTED_RUN_ATTRIBUTES:
            _fail(field, text, f"the attribute {key!r} is not supported by this server")
        return f"attributes.{key}"
    if kind == "tag" and key == RUN_NAME_TAG:
        return "attributes.run_name"
    return f"{kind}s.{_quote_key(key)}"


def translate_run_filter(text: str | None) -> str | None:
    """An MLflow ``search_runs`` filter in Shipyard's search language (``tracking.search``).

    ``tags.mlflow.runName`` reads as the run's name; ``IS NOT NULL`` on a param or tag is
    ``LIKE '%'`` (a run without the key matches no comparison). Raises ``InvalidArgument``
    (field "filter") for what MLflow allows and Shipyard cannot say: ``IS NULL``, datasets.*,
    attributes.user_id and attributes.artifact_uri.
    """
    clauses = parse_mlflow_filter(text)
    if not clauses:
        return None
    assert text is not None
    parts = []
    for c in clauses:
        operand = _run_operand(c.kind, c.key, "filter", text)
        if c.op == "IS NULL":
            _fail("filter", text, f"IS NULL is not supported by this server ({c.kind}s.{c.key})")
        if c.op == "IS NOT NULL":
            if c.kind not in ("param", "tag"):
                _fail("filter", text, "IS NOT NULL works on params and tags only")
            parts.append(f"{operand} LIKE '%'")
            continue
        numeric = c.kind == "metric" or (c.kind == "attribute" and c.key in _NUMERIC_RUN_ATTRIBUTES)
        if c.op in ("IN", "NOT IN"):
            values = ", ".join(_quote_str(str(v)) for v in c.value)
            parts.append(f"{operand} {c.op} ({values})")
        elif numeric:
            if c.op in ("LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"):
                _fail("filter", text, f"{c.op} works on strings; {c.kind} {c.key!r} is a number")
            parts.append(f"{operand} {c.op} {_number('filter', c, text)}")
        else:
            if c.op.startswith("NOT "):
                _fail("filter", text, f"{c.op} is not supported: use != or NOT IN")
            parts.append(f"{operand} {c.op} {_quote_str(str(c.value))}")
    return " AND ".join(parts)


def _parse_order_item(item: str, index: int, attributes: set[str]) -> tuple[str, str, bool]:
    field = f"order_by[{index}]"
    toks = _tokens(item, field)
    if not toks or toks[0].kind != "ident":
        _fail(field, item, "expected an identifier such as metrics.acc, then ASC or DESC")
    kind, key = _entity(toks[0], field, item, attributes)
    ascending = True
    if len(toks) > 1:
        if toks[1].kind != "kw" or toks[1].text not in ("ASC", "DESC") or len(toks) > 2:
            _fail(field, item, "expected ASC or DESC after the identifier", toks[1].pos)
        ascending = toks[1].text == "ASC"
    return kind, key, ascending


def translate_run_order_by(items: Iterable[str]) -> list[str]:
    """MLflow's ``order_by`` (``"metrics.acc DESC"``, ``"attributes.start_time"``) in Shipyard's."""
    out = []
    for index, item in enumerate(items):
        kind, key, ascending = _parse_order_item(item, index, _RUN_SEARCHABLE)
        operand = _run_operand(kind, key, f"order_by[{index}]", item)
        out.append(f"{operand} {'ASC' if ascending else 'DESC'}")
    return out


# -- experiment search (done in Python: a project holds few experiments) -----------------------


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
    if op == "=":
        return bool(actual == expected)
    if op == "!=":
        return bool(actual != expected)
    if op == "<":
        return bool(actual < expected)
    if op == "<=":
        return bool(actual <= expected)
    if op == ">":
        return bool(actual > expected)
    if op == ">=":
        return bool(actual >= expected)
    if op in ("LIKE", "ILIKE"):
        return _like(str(expected), str(actual), op == "ILIKE")
    if op in ("NOT LIKE", "NOT ILIKE"):
        return not _like(str(expected), str(actual), op == "NOT ILIKE")
    if op == "IN":
        return actual in expected
    if op == "NOT IN":
        return actual not in expected
    raise InvalidArgument.for_field("filter", f"unsupported operator {op}")


def experiment_filter(text: str | None) -> list[Clause]:
    """MLflow's ``search_experiments`` filter: name, creation_time, last_update_time, tags."""
    clauses = parse_mlflow_filter(text, _EXPERIMENT_ATTRIBUTES)
    for c in clauses:
        if c.kind not in ("attribute", "tag"):
            raise InvalidArgument.for_field(
                "filter", f"experiments are searched by attributes and tags, not {c.kind}s"
            )
        timed = c.kind == "attribute" and c.key in ("creation_time", "last_update_time")
        if timed and (c.op not in ("=", "!=", "<", "<=", ">", ">=") or not c.numeric):
            raise InvalidArgument.for_field(
                "filter", f"{c.key} compares with =, !=, <, <=, > or >= and a number"
            )
    return clauses


def experiment_matches(exp: dict[str, Any], clauses: list[Clause]) -> bool:
    """Whether an ``experiment_out`` dict matches every clause."""
    tags = {t["key"]: t["value"] for t in exp["tags"]}
    for c in clauses:
        if c.kind == "tag":
            actual: Any = tags.get(c.key)
            expected: Any = c.value
        elif c.key in ("creation_time", "last_update_time"):
            actual, expected = exp[c.key], float(c.value)
        else:
            actual, expected = exp[c.key], c.value
        if not _compare(actual, c.op, expected):
            return False
    return True


def sort_experiments(exps: list[dict[str, Any]], order_by: list[str]) -> list[dict[str, Any]]:
    """MLflow's experiment order: the given keys, then creation_time DESC, experiment_id DESC."""
    keys = []
    for index, item in enumerate(order_by):
        kind, key, ascending = _parse_order_item(item, index, _EXPERIMENT_ATTRIBUTES)
        if kind != "attribute":
            _fail(f"order_by[{index}]", item, "experiments are ordered by attributes only")
        keys.append((key, ascending))
    keys += [("creation_time", False), ("experiment_id", False)]
    out = list(exps)
    for key, ascending in reversed(keys):  # stable sorts, least significant key first
        out.sort(key=itemgetter(key), reverse=not ascending)
    return out
