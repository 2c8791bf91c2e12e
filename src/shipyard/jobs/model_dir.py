"""What a job leaves in ``model/``: its size, and a manifest for a model file of a known
format written without one, so that it can be registered.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def folder_stats(folder: Path) -> tuple[int, int]:
    n = size = 0
    for p in folder.rglob("*"):
        if p.is_file():
            n += 1
            size += p.stat().st_size
    return n, size


def ensure_manifest(model_dir: Path) -> str | None:
    """Make ``model_dir`` a Shipyard model folder when it holds one model file in a format that
    holds data, not code, but no manifest: ``model.txt`` (LightGBM), ``model.json`` or
    ``model.ubj`` (XGBoost), ``model.onnx``, ``model.skops`` (scikit-learn). Returns the flavor
    of the folder's model (None when it is not one Shipyard can register)."""
    from shipyard.models import flavors as fl
    from shipyard.models.format import MANIFEST_NAME, Manifest, Signature, read_manifest

    if (model_dir / MANIFEST_NAME).exists():
        try:
            return read_manifest(model_dir).flavor
        except Exception:
            return None
    candidates = {
        "lightgbm": "model.txt",
        "xgboost": "model.json",
        "onnx": "model.onnx",
        "sklearn": "model.skops",
    }
    found = [(f, n) for f, n in candidates.items() if (model_dir / n).is_file()]
    if len(found) != 1:
        return None
    flavor, name = found[0]
    from shipyard.core.artifacts import sha256_file

    path = model_dir / name
    if not _looks_like(flavor, path):  # a file of the same name that is no such model
        return None
    try:
        options: dict[str, Any] = {"model_type": "Booster"} if flavor == "xgboost" else {}
        model = fl.load(flavor, path, options)
        if flavor == "xgboost":
            # Saved from XGBClassifier/XGBRegressor: load it as one, so it predicts classes.
            kind = json.loads(model.attr("scikit_learn") or "{}").get("_estimator_type")
            if kind in ("classifier", "regressor"):
                options = {"model_type": f"XGB{kind.capitalize()}"}
                model = fl.load(flavor, path, options)
        if flavor == "onnx":
            inputs = fl.onnx_signature_inputs(path)
        else:
            inputs = fl.native_signature_inputs(flavor, model)
        manifest = Manifest(
            flavor=flavor,
            model_file=name,
            signature=Signature.from_dict({"inputs": inputs}),
            libraries=fl.library_versions(flavor),
            files={name: sha256_file(path)[0]},
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            flavor_options=options,
        )
    except Exception:  # not a model this flavor can read: leave the folder as it is
        return None
    tmp = model_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")
    os.replace(tmp, model_dir / MANIFEST_NAME)
    return flavor


def _looks_like(flavor: str, path: Path) -> bool:
    """A cheap look at the file before importing a library to read it."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if flavor == "lightgbm":
        return head.startswith(b"tree\n")  # LightGBM's text model starts so
    if flavor == "xgboost":
        return head.lstrip().startswith(b"{") and b'"learner"' in head
    if flavor == "sklearn":
        return head.startswith(b"PK")  # skops files are zip archives
    return True
