"""Request bodies in, model inputs out; predictions in, response bodies out (in the worker).

Two wire formats:
- SageMaker's ``POST /invocations``: JSON ``dataframe_split`` / ``dataframe_records`` /
  ``instances`` / ``inputs``, or CSV (with a header line, or headerless rows in signature order).
- Open Inference Protocol v2 ``/infer``: tensors in columnar form (one input per signature
  column, shape ``[rows]`` or ``[rows, 1]``) or row form (one input of shape ``[rows, columns]``),
  as JSON ``data`` or as Triton's binary tensor extension (``binary_data_size``), which the
  ``tritonclient`` library uses by default.

Speed: a body whose columns are all ``double``/``float`` takes a fast path straight into one
numpy matrix. Anything the fast path does not accept as it is (a string, a boolean, a missing
column, CSV quoting) goes through ``shipyard.models.signature`` (``parse_records`` +
``Signature.validate``), so the error a caller sees names the column exactly as batch inference
and ``LoadedModel.predict`` would.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from shipyard.core.errors import InvalidArgument
from shipyard.serving.runtime.meta import COLUMN_TO_OIP
from shipyard.serving.runtime.wire import BINARY_CT, CSV_CT, JSON_CT

OIP_TO_NUMPY: dict[str, str | None] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": None,
}
_INTS = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_FLOATS = {"FP16", "FP32", "FP64"}
# Which OIP datatypes may feed a column of each signature type (values are then checked, and
# coerced where nothing is lost, by Signature.validate).
ACCEPTED_DATATYPES = {
    "double": _FLOATS | _INTS,
    "float": _FLOATS | _INTS,
    "long": _INTS | _FLOATS,
    "integer": _INTS | _FLOATS,
    "boolean": {"BOOL"},
    "string": {"BYTES"},
    "datetime": {"BYTES"},
}
METHODS = ("predict", "predict_proba")


class BadRequest(Exception):
    """A request the model cannot take: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def numpy_to_oip(dtype: Any) -> str:
    d = np.dtype(dtype)
    if d.kind == "f":
        return {2: "FP16", 4: "FP32"}.get(d.itemsize, "FP64")
    if d.kind == "i":
        return f"INT{d.itemsize * 8}"
    if d.kind == "u":
        return f"UINT{d.itemsize * 8}"
    if d.kind == "b":
        return "BOOL"
    return "BYTES"


@dataclass
class InputPlan:
    """How requests map onto a model's inputs, worked out once when the model loads."""

    kind: str  # "columns" | "tensor" | "any"
    names: list[str]
    types: list[str]
    fast: bool  # every column is double/float: requests become one float matrix
    fast_dtype: str
    tensor_dtype: str | None = None
    tensor_shape: tuple[int, ...] = ()

    @classmethod
    def of(cls, signature: Any) -> InputPlan:
        inputs = signature.inputs
        if inputs is None:
            return cls("any", [], [], False, "float64")
        if isinstance(inputs, list):
            names = [c.name for c in inputs]
            types = [c.type for c in inputs]
            fast = bool(types) and all(t in ("double", "float") for t in types)
            dtype = "float32" if fast and all(t == "float" for t in types) else "float64"
            return cls("columns", names, types, fast, dtype)
        shape = tuple(inputs.shape)
        # A numeric matrix (rows of a fixed width) takes the fast path too, by position.
        fast = len(shape) == 2 and np.dtype(inputs.dtype).kind in "fiu"
        return cls("tensor", [], [], fast, inputs.dtype, inputs.dtype, shape)

    def metadata_inputs(self) -> list[dict[str, Any]]:
        if self.kind == "columns":
            return [
                {"name": n, "datatype": COLUMN_TO_OIP[t], "shape": [-1]}
                for n, t in zip(self.names, self.types, strict=True)
            ]
        if self.kind == "tensor":
            return [
                {
                    "name": "input-0",
                    "datatype": numpy_to_oip(self.tensor_dtype),
                    "shape": list(self.tensor_shape),
                }
            ]
        return []


@dataclass
class Decoded:
    """One request, ready for the model: ``X`` is a float matrix (fast path), an array
    (tensor signature) or a validated DataFrame."""

    X: Any
    n: int
    method: str = "predict"
    oip: dict[str, Any] | None = None  # id, outputs asked for, binary flags


# -- /invocations ----------------------------------------------------------------------------


def decode_invocations(plan: InputPlan, signature: Any, body: bytes, ctype: str) -> Decoded:
    if not body:
        raise BadRequest(
            "body: empty; expected JSON (dataframe_split, dataframe_records, "
            "instances or inputs) or CSV"
        )
    is_csv = "csv" in ctype
    if plan.fast and b"true" not in body and b"false" not in body:
        try:
            X = _fast_csv(plan, body) if is_csv else _fast_json(plan, body)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            X = None
        if X is not None:
            return Decoded(X, X.shape[0])
    return _slow(plan, signature, body, is_csv)


def _fast_json(plan: InputPlan, body: bytes) -> Any:
    obj = orjson.loads(body)
    if not isinstance(obj, dict) or len(obj) != 1:
        return None
    ((key, val),) = obj.items()
    if plan.kind == "tensor":
        rows = val.get("data") if key == "dataframe_split" and isinstance(val, dict) else val
        if key not in ("dataframe_split", "instances", "inputs") or not isinstance(rows, list):
            return None
        X = _matrix(plan, rows)
        width = plan.tensor_shape[1]
        return X if X is not None and (width == -1 or X.shape[1] == width) else None
    names = plan.names
    if key == "dataframe_split":
        cols = val.get("columns")
        X = _matrix(plan, val["data"])
        if X is None:
            return None
        if cols is None:
            return X if X.shape[1] == len(names) else None
        if X.shape[1] != len(cols):
            return None
        if cols == names:
            return X
        pos = {c: i for i, c in enumerate(cols)}
        return X[:, [pos[n] for n in names]]
    if key in ("dataframe_records", "instances"):
        if val and isinstance(val[0], dict):
            X = _matrix(plan, [[r[n] for n in names] for r in val])
            return X
        if key == "instances" and val and isinstance(val[0], list):
            X = _matrix(plan, val)
            return X if X is not None and X.shape[1] == len(names) else None
        return None
    if key == "inputs" and isinstance(val, dict):
        X = _matrix(plan, [val[n] for n in names])
        return X.T.copy() if X is not None else None
    return None


def _matrix(plan: InputPlan, data: Any) -> Any:
    """Numbers only: numpy would quietly turn "1.5" or True into a float, the slow path won't."""
    X = np.array(data)
    if X.ndim != 2 or X.dtype.kind not in "fiu":
        return None
    if plan.fast_dtype[0] in "iu" and X.dtype.kind == "f":
        return None  # floats for an integer tensor: the slow path says which value
    return X.astype(plan.fast_dtype, copy=False)


def _fast_csv(plan: InputPlan, body: bytes) -> Any:
    if b'"' in body:
        return None
    lines = [ln for ln in body.decode("utf-8").splitlines() if ln.strip()]
    first = lines[0].split(",")
    try:
        [float(v) for v in first]
        header = None
    except ValueError:
        header = [h.strip() for h in first]
        lines = lines[1:]
    X = np.array([ln.split(",") for ln in lines], dtype=plan.fast_dtype)
    if X.ndim != 2:
        return None
    if plan.kind == "tensor":
        width = plan.tensor_shape[1]
        return X if width == -1 or X.shape[1] == width else None
    if header is None:
        return X if X.shape[1] == len(plan.names) else None
    if X.shape[1] != len(header):
        return None
    if header == plan.names:
        return X
    pos = {c: i for i, c in enumerate(header)}
    return X[:, [pos[n] for n in plan.names]]


def _slow(plan: InputPlan, signature: Any, body: bytes, is_csv: bool) -> Decoded:
    from shipyard.models.signature import parse_records
    from shipyard.serving.runtime.imports import allow_pandas

    allow_pandas()  # the full parser reads frames (a server without pandas lets it in now)

    try:
        if is_csv:
            text = body.decode("utf-8")
            df = parse_records(_with_header(plan, text))
        else:
            df = parse_records(orjson.loads(body))
        df = signature.validate(df)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body: invalid JSON: {e}") from None
    except UnicodeDecodeError:
        raise BadRequest("body: expected UTF-8 text") from None
    except InvalidArgument as e:
        raise BadRequest(e.message) from None
    if plan.kind == "tensor":
        return Decoded(df.to_numpy(dtype=plan.tensor_dtype), len(df))
    return Decoded(df, len(df))


def _with_header(plan: InputPlan, text: str) -> str:
    """SageMaker sends CSV without a header: give it the signature's column names."""
    if plan.kind != "columns":
        return text
    first = text.lstrip().split("\n", 1)[0]
    cells = [c.strip().strip('"') for c in first.split(",")]
    if cells and any(c in plan.names for c in cells):
        return text
    if len(cells) == len(plan.names):
        return ",".join(plan.names) + "\n" + text
    return text


# -- Open Inference Protocol -----------------------------------------------------------------


def decode_oip(plan: InputPlan, signature: Any, body: bytes, header_len: int) -> Decoded:
    raw = memoryview(body)
    binary = None
    if header_len >= 0:
        if header_len > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length: {header_len} exceeds the body ({len(body)} bytes)"
            )
        binary, raw = raw[header_len:], raw[:header_len]
    try:
        req = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body: invalid JSON: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest("body: expected an inference request object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs: required: a list of input tensors")
    params = _params(req.get("parameters"), "parameters")
    method = params.get("method", "predict")
    if method not in METHODS:
        raise BadRequest(f"parameters.method: expected one of {', '.join(METHODS)}, got {method!r}")
    binary_default = params.get("binary_data_output", False) is True
    req_id = req.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise BadRequest("id: expected a string")
    outputs = req.get("outputs")
    wanted: list[tuple[str, bool]] | None = None
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest("outputs: expected a list of {name}")
        wanted = []
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest(f"outputs[{i}].name: required")
            op = _params(o.get("parameters"), f"outputs[{i}].parameters")
            wanted.append((o["name"], op.get("binary_data", binary_default) is True))
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    offset = 0
    for i, inp in enumerate(inputs):
        name, dt, arr, offset = _tensor(inp, i, binary, offset)
        if name in tensors:
            raise BadRequest(f"{name}: given twice in inputs")
        tensors[name] = (dt, arr)
    X, n = _model_input(plan, signature, tensors)
    meta = {"id": req_id, "outputs": wanted, "binary": binary_default}
    return Decoded(X, n, method, meta)


def _params(p: Any, where: str) -> dict[str, Any]:
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise BadRequest(f"{where}: expected an object of name: value")
    for k, v in p.items():
        if not isinstance(v, str | int | float | bool):
            raise BadRequest(f"{where}.{k}: expected a string, number or boolean")
    return p


def _tensor(
    inp: Any, i: int, binary: memoryview | None, offset: int
) -> tuple[str, str, np.ndarray, int]:
    if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
        raise BadRequest(f"inputs[{i}].name: required")
    name = inp["name"]
    dt = inp.get("datatype")
    if not isinstance(dt, str) or dt not in OIP_TO_NUMPY:
        raise BadRequest(
            f"{name}: unknown datatype {dt!r}; expected one of {', '.join(OIP_TO_NUMPY)}"
        )
    shape = inp.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise BadRequest(f"{name}: shape must be a list of non-negative integers, got {shape!r}")
    count = 1
    for s in shape:
        count *= s
    params = _params(inp.get("parameters"), f"{name}.parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if binary is None or not isinstance(size, int) or offset + size > len(binary):
            raise BadRequest(f"{name}: binary_data_size {size!r} does not fit the binary body")
        chunk = binary[offset : offset + size]
        offset += size
        arr = _from_binary(name, dt, chunk, count)
    else:
        if "data" not in inp:
            raise BadRequest(f"{name}: data is required")
        arr = _from_json(name, dt, inp["data"])
    if arr.size != count:
        raise BadRequest(f"{name}: shape {shape} holds {count} values but data has {arr.size}")
    return name, dt, arr.reshape(shape), offset


def _from_json(name: str, dt: str, data: Any) -> np.ndarray:
    npdt = OIP_TO_NUMPY[dt]
    if not isinstance(data, list):
        data = [data]
    try:
        if npdt is None:
            arr = np.array(data, dtype=object)
            ok = all(isinstance(v, str) for v in arr.reshape(-1))
        else:
            arr = np.array(data)
            kind = arr.dtype.kind
            target = np.dtype(npdt).kind
            if arr.size == 0:
                ok = True
            elif target == "b":
                ok = kind == "b"
            elif target in "iu":
                ok = kind in "iu" or (kind == "f" and bool(np.all(arr == np.round(arr))))
            else:
                ok = kind in "iuf"
            if ok:
                arr = arr.astype(npdt)
    except (ValueError, TypeError, OverflowError):
        ok = False
    if not ok:
        raise BadRequest(f"{name}: data holds values that are not {dt}")
    return arr


def _from_binary(name: str, dt: str, chunk: memoryview, count: int) -> np.ndarray:
    npdt = OIP_TO_NUMPY[dt]
    if npdt is not None:
        d = np.dtype(npdt).newbyteorder("<")
        if len(chunk) != count * d.itemsize:
            raise BadRequest(f"{name}: binary_data_size {len(chunk)} is not {count} values of {dt}")
        return np.frombuffer(chunk, dtype=d)
    out: list[str] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if pos + 4 > end:
            raise BadRequest(f"{name}: truncated BYTES element")
        (ln,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        out.append(bytes(chunk[pos : pos + ln]).decode("utf-8", errors="replace"))
        pos += ln
    return np.array(out, dtype=object)


def _check_datatype(name: str, dt: str, col_type: str) -> None:
    if dt not in ACCEPTED_DATATYPES[col_type]:
        want = COLUMN_TO_OIP[col_type]
        raise BadRequest(
            f"{name}: datatype {dt} does not fit the signature's {col_type} column (send {want})"
        )


def _model_input(
    plan: InputPlan, signature: Any, tensors: dict[str, tuple[str, np.ndarray]]
) -> tuple[Any, int]:
    if plan.kind == "tensor":
        if len(tensors) != 1:
            raise BadRequest(f"inputs: this model takes one tensor, got {len(tensors)}")
        ((name, (dt, arr)),) = tensors.items()
        return _as_tensor(plan, name, dt, arr), arr.shape[0] if arr.ndim else 1
    names = plan.names
    if plan.kind == "columns" and all(n in tensors for n in names):
        cols: list[np.ndarray] = []
        n_rows = -1
        for col, typ in zip(names, plan.types, strict=True):
            dt, arr = tensors[col]
            _check_datatype(col, dt, typ)
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 1:
                raise BadRequest(
                    f"{col}: wrong shape {list(arr.shape)}: a column input is [rows] or [rows, 1]"
                )
            if n_rows >= 0 and arr.shape[0] != n_rows:
                raise BadRequest(f"{col}: {arr.shape[0]} rows, but {names[0]} has {n_rows}")
            n_rows = arr.shape[0]
            cols.append(arr)
        if plan.fast:
            return np.column_stack(cols).astype(plan.fast_dtype, copy=False), n_rows
        return _validated(signature, {c: a for c, a in zip(names, cols, strict=True)}), n_rows
    if plan.kind == "columns" and len(tensors) == 1:
        ((name, (dt, arr)),) = tensors.items()
        if name in names or (arr.ndim == 1 and len(names) > 1):
            missing = next(n for n in names if n not in tensors)
            raise BadRequest(f"{missing}: missing input (expected inputs: {', '.join(names)})")
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise BadRequest(
                f"{name}: wrong shape {list(arr.shape)}: expected [-1, {len(names)}], "
                f"one value per column ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
            )
        for col, typ in zip(names, plan.types, strict=True):
            if dt not in ACCEPTED_DATATYPES[typ]:
                _check_datatype(f"{name} (column {col})", dt, typ)
        if plan.fast:
            return arr.astype(plan.fast_dtype, copy=False), arr.shape[0]
        return _validated(signature, {c: arr[:, j] for j, c in enumerate(names)}), arr.shape[0]
    if plan.kind == "columns":
        missing = next(n for n in names if n not in tensors)
        raise BadRequest(f"{missing}: missing input (expected inputs: {', '.join(names)})")
    # A model without an input signature: one tensor goes in as it is, several as columns.
    if len(tensors) == 1:
        ((_, (_, arr)),) = tensors.items()
        return arr, arr.shape[0] if arr.ndim else 1
    import pandas as pd

    df = pd.DataFrame({k: a.reshape(-1) for k, (_, a) in tensors.items()})
    return df, len(df)


def _validated(signature: Any, columns: dict[str, np.ndarray]) -> Any:
    import pandas as pd

    try:
        df = pd.DataFrame({k: (v if v.dtype != object else list(v)) for k, v in columns.items()})
        return signature.validate(df)
    except InvalidArgument as e:
        raise BadRequest(e.message) from None
    except ValueError as e:
        raise BadRequest(f"inputs: {e}") from None


def _as_tensor(plan: InputPlan, name: str, dt: str, arr: np.ndarray) -> np.ndarray:
    want = plan.tensor_shape
    assert plan.tensor_dtype is not None
    target = np.dtype(plan.tensor_dtype)
    if arr.ndim == 1 and len(want) == 2 and want[1] in (1, -1):
        arr = arr.reshape(-1, 1)
    if arr.ndim != len(want) or any(
        w != -1 and g != w for w, g in zip(want[1:], arr.shape[1:], strict=True)
    ):
        raise BadRequest(f"{name}: wrong shape {list(arr.shape)}: expected {list(want)}")
    src = arr.dtype
    ok = (
        src == target
        or (target.kind == "f" and src.kind in "fiu")
        or (target.kind in "iu" and src.kind in "iu")
        or (target.kind == "b" and src.kind == "b")
    )
    if not ok:
        raise BadRequest(
            f"{name}: datatype {dt} does not fit the model's {plan.tensor_dtype} tensor "
            f"(send {numpy_to_oip(target)})"
        )
    return arr.astype(target, copy=False)


# -- responses -------------------------------------------------------------------------------


def _json_array(arr: np.ndarray) -> Any:
    if arr.dtype.kind in "fiub" and arr.dtype.byteorder in "=|<":
        return np.ascontiguousarray(arr)
    return (
        [
            v if isinstance(v, str | int | float | bool) or v is None else str(v)
            for v in arr.tolist()
        ]
        if arr.ndim == 1
        else arr.tolist()
    )


def encode_invocations(preds: np.ndarray, accept: str) -> tuple[bytes, bytes]:
    if "csv" in accept:
        rows = preds.tolist()
        if preds.ndim == 1:
            text = "\n".join(str(v) for v in rows)
        else:
            text = "\n".join(",".join(str(v) for v in r) for r in rows)
        return (text + "\n").encode(), CSV_CT
    return (
        orjson.dumps({"predictions": _json_array(preds)}, option=orjson.OPT_SERIALIZE_NUMPY),
        JSON_CT,
    )


def output_tensors(preds: np.ndarray, out_names: list[str], method: str) -> list[tuple[str, Any]]:
    """Name the model's answer: one tensor, or one per column when the signature has several."""
    if method == "predict_proba":
        return [("probabilities", preds)]
    if preds.ndim == 2 and len(out_names) == preds.shape[1] > 1:
        return [(n, preds[:, j]) for j, n in enumerate(out_names)]
    return [(out_names[0] if out_names else "prediction", preds)]


def encode_oip(
    preds: np.ndarray,
    out_names: list[str],
    method: str,
    meta: dict[str, Any],
    model_name: str,
    model_version: str,
) -> tuple[bytes, bytes, int]:
    """The response body, its content type and the JSON header's length (-1 when all JSON)."""
    tensors = output_tensors(preds, out_names, method)
    wanted = meta.get("outputs")
    binary_default = bool(meta.get("binary"))
    if wanted is not None:
        have = {n: t for n, t in tensors}
        chosen = []
        for i, (n, b) in enumerate(wanted):
            if n not in have:
                raise BadRequest(
                    f"outputs[{i}].name: unknown output {n!r} (this model answers "
                    f"{', '.join(have)})"
                )
            chosen.append((n, have[n], b))
    else:
        chosen = [(n, t, binary_default) for n, t in tensors]
    outs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for n, t, binary in chosen:
        arr = np.asarray(t)
        if arr.dtype.kind not in "fiub":
            arr = arr.astype(object)
        dt = numpy_to_oip(arr.dtype)
        o: dict[str, Any] = {"name": n, "datatype": dt, "shape": list(arr.shape)}
        if binary:
            blob = _to_binary(arr)
            o["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            o["data"] = _json_array(arr.reshape(-1))
        outs.append(o)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if meta.get("id") is not None:
        resp["id"] = meta["id"]
    resp["outputs"] = outs
    head = orjson.dumps(resp, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, JSON_CT, -1
    return head + b"".join(blobs), BINARY_CT, len(head)


def _to_binary(arr: np.ndarray) -> bytes:
    if arr.dtype.kind in "fiub":
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    parts = []
    for v in arr.reshape(-1).tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)
