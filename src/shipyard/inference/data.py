"""Batch data: plan an input file into shards, read one shard, write one output file.

A shard is a row range. Parquet shards are read from the row groups that overlap the range, so
planning needs only the file's footer. CSV shards are also byte ranges, each starting at a row
boundary, so a shard reads only its own bytes (plus the header line) however large the file:
the planner walks the file once, tracking quotes so that a newline inside a quoted field is
never taken for the end of a row, and the column types inferred from the first block are pinned
for every shard (a shard must not read "007" as 7 because its own rows look numeric).

pyarrow and pandas are imported inside functions: this module is imported by the API server.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument

MANIFEST = "_manifest.json"
_CHUNK = 4 << 20
_QUOTE_OR_NL = re.compile(rb'["\n]')


def _parse_options() -> Any:
    import pyarrow.csv as pcsv

    return pcsv.ParseOptions(newlines_in_values=True)


@dataclass
class ShardRange:
    start_row: int
    stop_row: int
    start_byte: int | None = None
    stop_byte: int | None = None


@dataclass
class InputPlan:
    format: str
    columns: list[str]
    rows: int
    shards: list[ShardRange]
    # CSV: where the data starts (after the header line) and the pinned column types (an
    # Arrow schema, serialized and base64-encoded).
    header_end: int | None = None
    csv_schema: str | None = None


def detect_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt"):
        return "csv"
    raise InvalidArgument.for_field(
        "input_format",
        f"cannot tell the format of {Path(path).name!r} from its extension; "
        "give input_format: csv or parquet",
    )


def plan_input(path: Path, fmt: str, shards: int) -> InputPlan:
    """Count the rows of ``path`` and split them into at most ``shards`` non-empty ranges.

    Raises ``InvalidArgument`` (field ``input``) for a file that is not valid CSV or Parquet.
    """
    if fmt == "parquet":
        return _plan_parquet(path, shards)
    return _plan_csv(path, shards)


def _even(rows: int, shards: int) -> list[tuple[int, int]]:
    n = max(1, min(shards, rows))
    bounds = [rows * k // n for k in range(n + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _plan_parquet(path: Path, shards: int) -> InputPlan:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgument.for_field("input", f"not a readable Parquet file: {exc}") from None
    rows = pf.metadata.num_rows
    ranges = [ShardRange(a, b) for a, b in _even(rows, shards)]
    return InputPlan("parquet", list(pf.schema_arrow.names), rows, ranges)


def _csv_types(path: Path) -> tuple[list[str], str]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        reader = pcsv.open_csv(path, parse_options=_parse_options())
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgument.for_field("input", f"not a readable CSV file: {exc}") from None
    with reader:
        schema = reader.schema
    # A column that is empty in the first block could be anything later: read it as text.
    pinned = pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    )
    # The schema travels to the shards serialized (some types have no text alias).
    return list(schema.names), base64.b64encode(pinned.serialize().to_pybytes()).decode()


def _plan_csv(path: Path, shards: int) -> InputPlan:
    columns, types = _csv_types(path)
    size = path.stat().st_size
    header_end, rows, bounds = _scan_csv(path, size, shards)
    starts = [(header_end, 0), *bounds]
    ranges: list[ShardRange] = []
    for i, (byte, row) in enumerate(starts):
        stop_byte, stop_row = starts[i + 1] if i + 1 < len(starts) else (size, rows)
        if stop_byte > byte and stop_row > row:
            ranges.append(ShardRange(row, stop_row, byte, stop_byte))
    return InputPlan("csv", columns, rows, ranges, header_end=header_end, csv_schema=types)


def _scan_csv(path: Path, size: int, shards: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Walk the file once: the end of the header line, the number of data rows, and for each
    of ``shards - 1`` evenly spaced byte targets the (byte, row) of the first row starting at
    or after it. A newline inside double quotes does not end a row."""
    in_quotes = False
    lines = 0
    header_end: int | None = None
    targets: list[int] = []
    bounds: list[tuple[int, int]] = []
    pos = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            end_of_chunk = pos + len(chunk)
            fast = (
                not in_quotes
                and header_end is not None
                and b'"' not in chunk
                and (not targets or targets[0] > end_of_chunk)
            )
            if fast:
                lines += chunk.count(b"\n")
            else:
                for m in _QUOTE_OR_NL.finditer(chunk):
                    if m.group() == b'"':
                        in_quotes = not in_quotes
                        continue
                    if in_quotes:
                        continue
                    lines += 1
                    row_start = pos + m.end()
                    if header_end is None:
                        header_end = row_start
                        span = size - header_end
                        targets = [header_end + span * k // shards for k in range(1, shards)]
                        continue
                    while targets and row_start >= targets[0]:
                        targets.pop(0)
                        if row_start < size and (not bounds or bounds[-1][0] < row_start):
                            bounds.append((row_start, lines - 1))
            last = chunk[-1:]
            pos = end_of_chunk
    if header_end is None:
        raise InvalidArgument.for_field("input", "the CSV file has a header line but no rows")
    rows = lines - 1 + (1 if last not in (b"\n", b"") else 0)
    if in_quotes:
        raise InvalidArgument.for_field("input", "the CSV file ends inside a quoted field")
    return header_end, rows, bounds


# -- in a shard's worker -----------------------------------------------------------------------


def read_shard(
    path: str,
    fmt: str,
    start_row: int,
    stop_row: int,
    start_byte: int | None,
    stop_byte: int | None,
    header_end: int | None,
    csv_schema: str | None,
) -> Any:
    """The shard's rows as a ``pyarrow.Table``."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        groups, first, offset = [], None, 0
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if offset < stop_row and offset + n > start_row:
                groups.append(i)
                first = offset if first is None else first
            offset += n
        if not groups:
            return pf.schema_arrow.empty_table()
        table = pf.read_row_groups(groups)
        return table.slice(start_row - (first or 0), stop_row - start_row)
    assert start_byte is not None and stop_byte is not None and header_end is not None
    with open(path, "rb") as f:
        header = f.read(header_end)
        f.seek(start_byte)
        body = f.read(stop_byte - start_byte)
    assert csv_schema is not None
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(csv_schema)))
    try:
        return pcsv.read_csv(
            io.BytesIO(header + body),
            parse_options=_parse_options(),
            convert_options=pcsv.ConvertOptions(column_types=schema),
        )
    except pa.ArrowInvalid as exc:
        raise _csv_error(str(exc), schema.names, start_row) from None


def _csv_error(message: str, names: list[str], start_row: int) -> InvalidArgument:
    """Arrow says "In CSV column #3: ..."; the user wants the column's name."""
    m = re.match(r"In CSV column #(\d+): (.*)", message, re.S)
    if m and int(m.group(1)) < len(names):
        column = names[int(m.group(1))]
        return InvalidArgument.for_field(
            column,
            f"{m.group(2).strip()} (in the rows from {start_row:,}; the type was inferred "
            "from the first rows of the file)",
            column=column,
        )
    return InvalidArgument.for_field("input", message.strip())


def write_atomic(table: Any, out_dir: Path, name: str, fmt: str) -> tuple[int, str]:
    """Write ``table`` as ``out_dir/name``: a temporary name, fsync, then rename. Returns
    (bytes, sha256). A reader never sees a half-written file under the final name."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            pcsv.write_csv(table, tmp)
        h = hashlib.sha256()
        with open(tmp, "rb+") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
            os.fsync(f.fileno())
        size = tmp.stat().st_size
        os.replace(tmp, out_dir / name)
    finally:
        tmp.unlink(missing_ok=True)
    return size, h.hexdigest()


def write_json_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def shard_file(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{fmt}"
