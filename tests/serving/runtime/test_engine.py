"""The engine a model worker runs, in this process: how it loads and holds models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shipyard.models.format import ModelRefused
from shipyard.serving.runtime.engine import Engine
from tests.serving.runtime.conftest import ModelDirs


def test_keys_on_one_model_folder_share_one_copy(tmp_path: Path, model_dirs: ModelDirs) -> None:
    """Two variants (or a variant and its shadow) on the same model version hold it once; a
    folder whose files changed since is verified again and refused, never shared."""
    folder = tmp_path / "rf"
    shutil.copytree(model_dirs.rf, folder)
    engine = Engine()
    first = engine.load("blue#1", str(folder), "fraud", "1", False)
    second = engine.load("green#2", str(folder), "fraud", "1", False)
    # One object serves both keys (the memory a load reports is an RSS delta, which a process
    # that already freed as much reuses without growing: no assertion on it).
    assert engine.models["blue#1"].loaded is engine.models["green#2"].loaded
    assert first["disk_bytes"] == second["disk_bytes"] and first["flavor"] == second["flavor"]
    other = engine.load("lr#3", str(model_dirs.lr), "fraud", "2", False)
    assert engine.models["lr#3"].loaded is not engine.models["blue#1"].loaded
    assert other["flavor"] == "sklearn"

    engine.unload("blue#1")  # the other key keeps serving
    assert "blue#1" not in engine.models
    with open(folder / "model.npz", "ab") as f:
        f.write(b"planted")
    with pytest.raises(ModelRefused, match="sha256 of model.npz does not match"):
        engine.load("red#4", str(folder), "fraud", "1", False)


_TRUST_LISTS = """
import json, sys
from shipyard.models import flavors
if sys.argv[1] == "lean":
    flavors.skops_io(lean=True)
else:
    import skops.io
import skops.io._trusted_types as t
names = {k: getattr(t, k) for k in dir(t) if k.endswith("_TYPE_NAMES")}
if sys.argv[1] == "full":
    refused = flavors._untrusted_sklearn_types(names["SKLEARN_ESTIMATOR_TYPE_NAMES"])[1]
    names["refused"] = refused
print(json.dumps(names))
"""


def test_the_lean_skops_import_trusts_what_the_full_one_does() -> None:
    """The model server imports skops without its list of every estimator, and with a faster
    search for SciPy's ufuncs: every other trust list is the same, and every estimator in the
    skipped list is trusted by Shipyard's own allow-list, so the same files load and fail."""
    import json
    import subprocess
    import sys

    def lists(mode: str) -> dict[str, list[str]]:
        out = subprocess.run(
            [sys.executable, "-c", _TRUST_LISTS, mode],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        return dict(json.loads(out))

    lean, full = lists("lean"), lists("full")
    assert lean.pop("SKLEARN_ESTIMATOR_TYPE_NAMES") == []
    assert len(full.pop("SKLEARN_ESTIMATOR_TYPE_NAMES")) > 100
    assert full.pop("refused") == []
    assert len(lean["SCIPY_UFUNC_TYPE_NAMES"]) > 100
    assert lean == full
