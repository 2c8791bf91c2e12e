"""One batch shard, run by an executor's task: read the rows, predict, write the file.

``run_shard`` is called in a fresh process (``LocalExecutor``) or on a cluster node (a later
``RayExecutor``) with JSON arguments only; it touches no database, so a worker needs nothing but
the files. It returns what the coordinator records: rows written, the file's size and sha256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument

# What a shard imports, loaded once by the executor's fork server so that a shard starts in
# milliseconds instead of seconds (missing optional libraries are skipped).
PRELOAD = (
    "pandas",
    "pyarrow.parquet",
    "pyarrow.csv",
    "shipyard.models.format",
    "shipyard.inference.data",
    "skops.io",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.pipeline",
    "sklearn.preprocessing",
)  # not lightgbm or xgboost: seconds more for every fork server, for some models only


def output_names(pred: Any, outputs: list[str]) -> list[str]:
    """Column names for a prediction array: the signature's when they fit, else
    ``prediction`` (one column) or ``prediction_<i>``."""
    width = 1 if pred.ndim == 1 else pred.shape[1]
    if len(outputs) == width:
        return outputs
    return ["prediction"] if width == 1 else [f"prediction_{i}" for i in range(width)]


def predictions_table(pred: Any, outputs: list[str]) -> Any:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if isinstance(pred, pd.DataFrame):
        return pa.Table.from_pandas(pred, preserve_index=False)
    pred = np.asarray(pred)
    if pred.ndim > 2:
        raise InvalidArgument.for_field(
            "predictions", f"expected one value or one row per input row, got shape {pred.shape}"
        )
    names = output_names(pred, outputs)
    cols = [pred] if pred.ndim == 1 else [pred[:, i] for i in range(pred.shape[1])]
    return pa.table({n: pa.array(c) for n, c in zip(names, cols, strict=True)})


def run_shard(
    *,
    model_path: str,
    trust_code: bool,
    model_digest: str | None,
    input_path: str,
    input_format: str,
    start_row: int,
    stop_row: int,
    start_byte: int | None,
    stop_byte: int | None,
    header_end: int | None,
    csv_schema: str | None,
    join_columns: list[str],
    outputs: list[str],
    output_dir: str,
    output_file: str,
    output_format: str,
) -> dict[str, Any]:
    from shipyard.inference import data
    from shipyard.models.format import load_model

    model = load_model(model_path, trust_code=trust_code, expected_digest=model_digest)
    table = data.read_shard(
        input_path,
        input_format,
        start_row,
        stop_row,
        start_byte,
        stop_byte,
        header_end,
        csv_schema,
    )
    frame = table.to_pandas()
    pred = model.predict(frame)
    out = predictions_table(pred, outputs)
    if out.num_rows != table.num_rows:
        raise InvalidArgument.for_field(
            "predictions",
            f"the model returned {out.num_rows} predictions for {table.num_rows} rows",
        )
    for i, name in enumerate(join_columns):
        out = out.add_column(i, name, table.column(name))
    size, digest = data.write_atomic(out, Path(output_dir), output_file, output_format)
    return {
        "rows": table.num_rows,
        "bytes": size,
        "sha256": digest,
        "file": output_file,
        "columns": out.column_names,
    }
