"""A model's signature (the columns or tensor it takes, what it returns) and request parsing.

A signature is either a list of named, typed columns or one tensor (a dtype and a shape whose
first dimension is the batch). ``Signature.validate`` is what stands between a request and a
model: it names the missing column, the value of the wrong type or the wrong shape, and coerces
only where no information is lost (integers to doubles, integral floats to integers, numbers to
strings). ``parse_records`` turns the request shapes that serving and batch accept into a frame.

pandas and numpy are imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.core.errors import InvalidArgument

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Column types, MLflow's words, so a signature reads the same in both tools.
COLUMN_TYPES = ("double", "float", "long", "integer", "boolean", "string", "datetime")
_NUMERIC = {"double", "float", "long", "integer"}
_NUMPY_OF = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
}
_TENSOR_DTYPES = (
    "float64",
    "float32",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
    "bool",
)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type}


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"tensor": {"dtype": self.dtype, "shape": list(self.shape)}}


@dataclass
class Signature:
    """What a model takes and returns. ``inputs`` is None for a model that accepts anything."""

    inputs: list[ColumnSpec] | TensorSpec | None = None
    outputs: list[ColumnSpec] = field(default_factory=list)

    # -- serialization -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        inputs: Any
        if self.inputs is None:
            inputs = None
        elif isinstance(self.inputs, TensorSpec):
            inputs = self.inputs.to_dict()
        else:
            inputs = [c.to_dict() for c in self.inputs]
        return {"inputs": inputs, "outputs": [c.to_dict() for c in self.outputs]}

    @classmethod
    def from_dict(cls, d: Any) -> Signature:
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise InvalidArgument.for_field("signature", "expected an object")
        raw_in = d.get("inputs")
        inputs: list[ColumnSpec] | TensorSpec | None
        if raw_in is None:
            inputs = None
        elif isinstance(raw_in, dict):
            t = raw_in.get("tensor")
            if not isinstance(t, dict):
                raise InvalidArgument.for_field(
                    "signature.inputs", "expected a list of columns or {'tensor': {...}}"
                )
            dtype = str(t.get("dtype", ""))
            if dtype not in _TENSOR_DTYPES:
                raise InvalidArgument.for_field(
                    "signature.inputs.tensor.dtype",
                    f"unknown dtype {dtype!r}; expected one of {', '.join(_TENSOR_DTYPES)}",
                )
            shape = t.get("shape")
            if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in shape
            ):
                raise InvalidArgument.for_field(
                    "signature.inputs.tensor.shape", "expected a list of integers (-1 = any)"
                )
            inputs = TensorSpec(dtype, tuple(shape))
        else:
            inputs = _columns_from(raw_in, "signature.inputs")
        outputs = _columns_from(d.get("outputs") or [], "signature.outputs")
        return cls(inputs=inputs, outputs=outputs)

    # -- validation ----------------------------------------------------------------------------

    @property
    def column_names(self) -> list[str] | None:
        if isinstance(self.inputs, list):
            return [c.name for c in self.inputs]
        return None

    def validate(self, df: Any) -> pd.DataFrame:
        """Check ``df`` against the inputs and return it with columns in signature order.

        Raises ``InvalidArgument`` naming the missing column, the column with a value of the
        wrong type, or the wrong number of columns. Positional data (a numpy array, or a frame
        whose columns are 0..n-1) is matched to the signature's columns by position.
        """
        import pandas as pd

        df = _as_frame(df)
        if self.inputs is None:
            return df
        if isinstance(self.inputs, TensorSpec):
            return _validate_tensor(self.inputs, df)
        names = [c.name for c in self.inputs]
        if _positional(df) and len(df.columns) == len(names):
            df = df.set_axis(names, axis=1)
        elif _positional(df):
            raise InvalidArgument.for_field(
                "inputs",
                f"expected {len(names)} columns ({', '.join(names)}), got {len(df.columns)}",
                expected=len(names),
                got=len(df.columns),
            )
        missing = [n for n in names if n not in df.columns]
        if missing:
            raise InvalidArgument.for_field(
                missing[0],
                f"missing column (expected columns: {', '.join(names)})",
                missing=missing,
            )
        out = {c.name: _coerce_column(df[c.name], c) for c in self.inputs}
        return pd.DataFrame(out, index=df.index)


def _columns_from(raw: Any, where: str) -> list[ColumnSpec]:
    if not isinstance(raw, list):
        raise InvalidArgument.for_field(where, "expected a list of {'name', 'type'}")
    cols: list[ColumnSpec] = []
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise InvalidArgument.for_field(f"{where}[{i}]", "expected {'name': str, 'type': str}")
        if c.get("type") not in COLUMN_TYPES:
            raise InvalidArgument.for_field(
                f"{where}[{i}].type",
                f"unknown type {c.get('type')!r}; expected one of {', '.join(COLUMN_TYPES)}",
            )
        cols.append(ColumnSpec(c["name"], c["type"]))
    return cols


def _positional(df: pd.DataFrame) -> bool:
    return all(isinstance(c, int) for c in df.columns) and list(df.columns) == list(
        range(len(df.columns))
    )


def _as_frame(data: Any) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_frame()
    if isinstance(data, np.ndarray):
        if data.ndim == 1:
            data = data.reshape(-1, 1)
        if data.ndim != 2:
            raise InvalidArgument.for_field(
                "inputs", f"expected rows of values (2 dimensions), got {data.ndim} dimensions"
            )
        return pd.DataFrame(data)
    if isinstance(data, dict):
        return parse_records(data)
    if isinstance(data, list):
        return _frame_from_rows(data, "inputs")
    raise InvalidArgument.for_field(
        "inputs", f"expected a DataFrame, an array or records, got {type(data).__name__}"
    )


def _validate_tensor(spec: TensorSpec, df: pd.DataFrame) -> pd.DataFrame:
    import numpy as np

    want = spec.shape[1] if len(spec.shape) > 1 else 1
    if want != -1 and len(df.columns) != want:
        raise InvalidArgument.for_field(
            "inputs",
            f"wrong shape: expected {want} columns per row (shape {list(spec.shape)}), "
            f"got {len(df.columns)}",
            expected=want,
            got=len(df.columns),
        )
    target = np.dtype(spec.dtype)
    for col in df.columns:
        s = df[col]
        kind = s.dtype.kind
        if kind in "biuf" and target.kind in "fiub":
            if target.kind in "iu" and kind == "f":
                vals = s.to_numpy()
                if not np.all(np.isfinite(vals)) or not np.all(vals == np.round(vals)):
                    raise InvalidArgument.for_field(
                        str(col), f"expected {spec.dtype} values, got non-integral numbers"
                    )
            continue
        if kind == "O":
            try:
                s.to_numpy(dtype=target)
                continue
            except (TypeError, ValueError):
                pass
        raise InvalidArgument.for_field(
            str(col), f"expected {spec.dtype} values, got {_describe(s)}", expected=spec.dtype
        )
    return df


def _describe(s: pd.Series) -> str:
    for v in s:
        if v is not None:
            return f"{type(v).__name__} {v!r}"[:80]
    return str(s.dtype)


def _coerce_column(s: pd.Series, spec: ColumnSpec) -> pd.Series:
    import numpy as np
    import pandas as pd

    kind = s.dtype.kind
    name, typ = spec.name, spec.type

    def bad(got: str) -> InvalidArgument:
        return InvalidArgument.for_field(name, f"expected {typ}, got {got}", expected=typ)

    if typ in ("double", "float"):
        if kind == "f":
            return s.astype(_NUMPY_OF[typ])
        if kind in "iu":
            return s.astype(_NUMPY_OF[typ])
        if kind == "O":
            # JSON numbers mixed with nulls arrive as objects; anything else is refused.
            if all(
                v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in s
            ):
                return s.astype(_NUMPY_OF[typ])
            raise bad(_describe_bad(s, lambda v: isinstance(v, int | float)))
        raise bad(str(s.dtype))
    if typ in ("long", "integer"):
        if kind in "iu":
            return s.astype(_NUMPY_OF[typ])
        if kind == "f" or kind == "O":
            try:
                vals = s.to_numpy(dtype="float64")
            except (TypeError, ValueError):
                raise bad(_describe_bad(s, lambda v: isinstance(v, int | float))) from None
            if kind == "O" and any(isinstance(v, bool) for v in s):
                raise bad("boolean")
            if np.isnan(vals).any():
                raise InvalidArgument.for_field(name, f"expected {typ}, got a null value")
            if not np.all(vals == np.round(vals)):
                raise bad("a non-integral number")
            return pd.Series(vals.astype(_NUMPY_OF[typ]), index=s.index, name=name)
        raise bad(str(s.dtype))
    if typ == "boolean":
        if kind == "b":
            return s
        if kind == "O" and all(isinstance(v, bool | np.bool_) for v in s):
            return s.astype(bool)
        raise bad(_describe_bad(s, lambda v: isinstance(v, bool | np.bool_)))
    if typ == "string":
        if (kind in "OSU" or str(s.dtype) in ("string", "str")) and all(
            v is None or isinstance(v, str) for v in s
        ):
            return s
        if kind in "OSUiub" or str(s.dtype) in ("string", "str"):
            # A number where a string is expected (a zip code read from CSV) loses nothing.
            return s.map(lambda v: v if v is None or isinstance(v, str) else str(v))
        raise bad(str(s.dtype))
    if typ == "datetime":
        if kind == "M":
            return s
        try:
            return pd.to_datetime(s, utc=True)
        except (TypeError, ValueError):
            raise bad(_describe(s)) from None
    raise bad(str(s.dtype))  # pragma: no cover - COLUMN_TYPES is closed


def _describe_bad(s: pd.Series, ok: Any) -> str:
    for v in s:
        if v is not None and not ok(v):
            return f"{type(v).__name__} {v!r}"[:80]
    return str(s.dtype)


# -- inference -------------------------------------------------------------------------------


def column_type(dtype: Any) -> str:
    """The signature type of a numpy or pandas dtype."""
    import numpy as np

    try:
        d = np.dtype(dtype)
    except TypeError:
        return "string"
    if d.kind == "f":
        return "float" if d.itemsize <= 4 else "double"
    if d.kind in "iu":
        return "long" if d.itemsize >= 8 or (d.kind == "u" and d.itemsize >= 4) else "integer"
    if d.kind == "b":
        return "boolean"
    if d.kind == "M":
        return "datetime"
    return "string"


def infer_signature(example: Any, outputs: Any = None) -> Signature:
    """A signature from an input example (DataFrame, array, records) and optional outputs."""
    import numpy as np
    import pandas as pd

    inputs: list[ColumnSpec] | TensorSpec | None
    if isinstance(example, np.ndarray):
        arr = example if example.ndim > 1 else example.reshape(-1, 1)
        inputs = TensorSpec(str(arr.dtype), (-1, *arr.shape[1:]))
        if arr.dtype.kind not in "biuf":
            raise InvalidArgument.for_field(
                "input_example", f"a numeric array is expected, got dtype {arr.dtype}"
            )
    else:
        df = example if isinstance(example, pd.DataFrame) else _as_frame(example)
        inputs = [ColumnSpec(str(c), _series_type(df[c])) for c in df.columns]
    return Signature(inputs=inputs, outputs=infer_outputs(outputs) if outputs is not None else [])


def _series_type(s: pd.Series) -> str:
    if s.dtype.kind == "O":
        vals = [v for v in s if v is not None]
        if vals and all(isinstance(v, bool) for v in vals):
            return "boolean"
        if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            return "long"
        if vals and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            return "double"
        return "string"
    return column_type(s.dtype)


def infer_outputs(pred: Any) -> list[ColumnSpec]:
    import numpy as np
    import pandas as pd

    if isinstance(pred, pd.DataFrame):
        return [ColumnSpec(str(c), _series_type(pred[c])) for c in pred.columns]
    arr = np.asarray(pred)
    if arr.ndim <= 1:
        return [ColumnSpec("prediction", column_type(arr.dtype))]
    if arr.ndim == 2 and arr.shape[1] == 1:
        return [ColumnSpec("prediction", column_type(arr.dtype))]
    return [ColumnSpec(f"prediction_{i}", column_type(arr.dtype)) for i in range(arr.shape[1])]


# -- request payloads ------------------------------------------------------------------------

_SHAPES = "dataframe_split, dataframe_records, instances, inputs, or CSV text"


def parse_records(payload: Any) -> pd.DataFrame:
    """Turn a request body into a DataFrame.

    Accepts ``{"dataframe_split": {"columns", "data"}}``, ``{"dataframe_records": [{...}]}``,
    ``{"instances": [...]}`` (rows as objects or lists), ``{"inputs": {...} | [...]}``
    (columns as lists, or rows), CSV text (``str`` or ``bytes`` with a header line) or the JSON
    text of one of those objects. Raises ``InvalidArgument`` naming the offending field.
    """
    import pandas as pd

    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument.for_field("body", "expected UTF-8 text") from None
    if isinstance(payload, str):
        text = payload.lstrip()
        if text.startswith(("{", "[")):
            try:
                payload = json.loads(text)
            except json.JSONDecodeError as e:
                raise InvalidArgument.for_field("body", f"invalid JSON: {e}") from None
        else:
            return _parse_csv(payload)
    if isinstance(payload, list):
        return _frame_from_rows(payload, "body")
    if not isinstance(payload, dict):
        raise InvalidArgument.for_field("body", f"expected one of {_SHAPES}")
    keys = [
        k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload
    ]
    if len(keys) != 1:
        raise InvalidArgument.for_field(
            "body",
            f"expected exactly one of {_SHAPES}; got keys {sorted(payload)[:10]}",
        )
    key = keys[0]
    body = payload[key]
    if key == "dataframe_split":
        if not isinstance(body, dict):
            raise InvalidArgument.for_field("dataframe_split", "expected {'columns', 'data'}")
        data = body.get("data")
        cols = body.get("columns")
        if not isinstance(data, list):
            raise InvalidArgument.for_field("dataframe_split.data", "expected a list of rows")
        if cols is not None and not isinstance(cols, list):
            raise InvalidArgument.for_field("dataframe_split.columns", "expected a list of names")
        for i, row in enumerate(data):
            if not isinstance(row, list):
                raise InvalidArgument.for_field(f"dataframe_split.data[{i}]", "expected a list")
            if cols is not None and len(row) != len(cols):
                raise InvalidArgument.for_field(
                    f"dataframe_split.data[{i}]",
                    f"expected {len(cols)} values (one per column), got {len(row)}",
                )
        try:
            return pd.DataFrame(data, columns=cols, index=body.get("index"))
        except (ValueError, TypeError) as e:
            raise InvalidArgument.for_field("dataframe_split", str(e)) from None
    if key == "dataframe_records":
        if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
            raise InvalidArgument.for_field("dataframe_records", "expected a list of objects")
        return pd.DataFrame.from_records(body) if body else pd.DataFrame()
    if key == "inputs" and isinstance(body, dict):
        lengths = {k: len(v) if isinstance(v, list) else 1 for k, v in body.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidArgument.for_field(
                "inputs", f"columns have different lengths: {lengths}", lengths=lengths
            )
        return pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in body.items()})
    if not isinstance(body, list):
        raise InvalidArgument.for_field(key, "expected a list of rows")
    return _frame_from_rows(body, key)


def _frame_from_rows(rows: list[Any], where: str) -> pd.DataFrame:
    import pandas as pd

    if not rows:
        return pd.DataFrame()
    if all(isinstance(r, dict) for r in rows):
        return pd.DataFrame.from_records(rows)
    if all(isinstance(r, list) for r in rows):
        n = len(rows[0])
        for i, r in enumerate(rows):
            if len(r) != n:
                raise InvalidArgument.for_field(
                    f"{where}[{i}]", f"expected {n} values like the first row, got {len(r)}"
                )
        return pd.DataFrame(rows)
    if all(not isinstance(r, dict | list) for r in rows):
        # A flat list is one row per value of a single column.
        return pd.DataFrame({0: rows})
    raise InvalidArgument.for_field(where, "expected rows as all objects or all lists")


def _parse_csv(text: str) -> pd.DataFrame:
    """CSV with a header line, or without one (as SageMaker's clients send it): a first line of
    numbers only is data, and its columns are matched to the signature by position."""
    import pandas as pd

    first = text.lstrip().split("\n", 1)[0]
    fields = [f.strip() for f in first.split(",")]
    header: int | None = 0
    if fields and all(_is_number(f) for f in fields):
        header = None
    try:
        return pd.read_csv(io.StringIO(text), header=header)
    except (ValueError, pd.errors.ParserError) as e:
        raise InvalidArgument.for_field("body", f"invalid CSV: {str(e).strip()}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_jsonable_frame(df: pd.DataFrame, limit: int = 100) -> dict[str, Any]:
    """A ``dataframe_split`` payload for the first ``limit`` rows of ``df``."""
    head = df.head(limit)
    return {
        "dataframe_split": {
            "columns": [c if isinstance(c, int) else str(c) for c in head.columns],
            "data": json.loads(head.to_json(orient="values", date_format="iso")),
        }
    }


def as_array(df: pd.DataFrame, dtype: str | None = None) -> np.ndarray:
    return df.to_numpy(dtype=dtype) if dtype else df.to_numpy()
