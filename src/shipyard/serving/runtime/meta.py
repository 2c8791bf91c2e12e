"""What the server says about a model without loading it: read from its manifest alone.

Kept free of numpy and pandas, like the rest of the server process in worker-process mode, so
the server itself stays small (the models live in the workers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument, NotFound

MANIFEST_NAME = "shipyard-model.json"
# shipyard.models.flavors.SKLEARN_STATE_FILE (not imported: the front process stays light).
SKLEARN_STATE_FILE = "model.npz"
COLUMN_TO_OIP = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "datetime": "BYTES",
}
_DTYPE_TO_OIP = {
    "float64": "FP64",
    "float32": "FP32",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint64": "UINT64",
    "uint32": "UINT32",
    "uint16": "UINT16",
    "uint8": "UINT8",
    "bool": "BOOL",
}
PLATFORMS = {
    "sklearn": "sklearn_skops",
    "lightgbm": "lightgbm_text",
    "xgboost": "xgboost_json",
    "onnx": "onnx_onnxv1",
    "python_function": "python_pickle",
}


@dataclass(frozen=True)
class ModelMeta:
    flavor: str
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    # Served from a float matrix, with no pandas in the process (see imports.py).
    array_input: bool = False
    model_file: str = ""

    @property
    def needs_skops(self) -> bool:
        """A scikit-learn model stored with skops (model.npz is read without it)."""
        return self.flavor == "sklearn" and self.model_file != SKLEARN_STATE_FILE

    @classmethod
    def read(cls, folder: str | Path) -> ModelMeta:
        """Raises ``NotFound`` (no manifest) or ``InvalidArgument`` (an unreadable one)."""
        path = Path(folder) / MANIFEST_NAME
        try:
            raw = json.loads(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no model at {folder}: {MANIFEST_NAME} is missing") from None
        except (OSError, ValueError) as e:
            raise InvalidArgument.for_field(MANIFEST_NAME, f"cannot read {path}: {e}") from None
        if not isinstance(raw, dict):
            raise InvalidArgument.for_field(MANIFEST_NAME, "expected a JSON object")
        flavor = str(raw.get("flavor", ""))
        sig = raw.get("signature") or {}
        inputs: list[dict[str, Any]] = []
        raw_in = sig.get("inputs")
        if isinstance(raw_in, list):
            inputs = [
                {
                    "name": c["name"],
                    "datatype": COLUMN_TO_OIP.get(str(c.get("type")), "BYTES"),
                    "shape": [-1],
                }
                for c in raw_in
                if isinstance(c, dict) and "name" in c
            ]
        elif isinstance(raw_in, dict) and isinstance(raw_in.get("tensor"), dict):
            t = raw_in["tensor"]
            inputs = [
                {
                    "name": "input-0",
                    "datatype": _DTYPE_TO_OIP.get(str(t.get("dtype")), "FP64"),
                    "shape": list(t.get("shape") or [-1]),
                }
            ]
        outs = [
            {
                "name": c["name"],
                "datatype": COLUMN_TO_OIP.get(str(c.get("type")), "BYTES"),
                "shape": [-1],
            }
            for c in sig.get("outputs") or []
            if isinstance(c, dict) and "name" in c
        ]
        if not outs:
            outs = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        tensor = isinstance(raw_in, dict) and isinstance(raw_in.get("tensor"), dict)
        array_input = flavor in ("sklearn", "lightgbm", "xgboost", "onnx") and (
            tensor or isinstance(raw.get("array_input"), dict)
        )
        model_file = str(raw.get("model_file") or "")
        return cls(flavor, PLATFORMS.get(flavor, flavor), inputs, outs, array_input, model_file)

    def metadata(self, name: str, versions: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "versions": versions,
            "platform": self.platform,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }
