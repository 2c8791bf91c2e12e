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
    assert engine.models["blue#1"].loaded is engine.models["green#2"].loaded
    assert first["rss_bytes"] > 0 and second["rss_bytes"] < first["rss_bytes"] // 2, (first, second)
    other = engine.load("lr#3", str(model_dirs.lr), "fraud", "2", False)
    assert engine.models["lr#3"].loaded is not engine.models["blue#1"].loaded
    assert other["flavor"] == "sklearn"

    engine.unload("blue#1")  # the other key keeps serving
    assert "blue#1" not in engine.models
    with open(folder / "model.skops", "ab") as f:
        f.write(b"planted")
    with pytest.raises(ModelRefused, match="sha256 of model.skops does not match"):
        engine.load("red#4", str(folder), "fraud", "1", False)
