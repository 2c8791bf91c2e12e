"""A model server whose models all take their float matrix runs without pandas (about 30 MB less
per process), and still takes a model that needs its frames when reloaded with one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.serving.runtime.conftest import FEATURES, ModelDirs, Runtime, StartRuntime, variant


def _has_pandas(pid: int) -> bool:
    """Whether the process has pandas' compiled modules mapped (imported, that is)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "/pandas/_libs/" in maps


def _predicts_like(rt: Runtime, model: Any, dirs: ModelDirs, start: int = 0) -> None:
    rows = dirs.rows(7, start)
    want = model.predict(dirs.X.iloc[start : start + 7]).tolist()
    r = rt.invoke({"dataframe_split": {"columns": FEATURES, "data": rows}})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == want
    records = [dict(zip(FEATURES, row, strict=True)) for row in rows]
    assert rt.invoke({"dataframe_records": records}).json()["predictions"] == want
    csv = ",".join(FEATURES) + "\n" + "\n".join(",".join(map(repr, row)) for row in rows)
    r = rt.http.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == want
    oip = {"inputs": [{"name": "x", "shape": [7, 20], "datatype": "FP64", "data": rows}]}
    r = rt.http.post("/v2/models/fraud/infer", json=oip)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == want


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_an_array_model_is_served_without_pandas(
    mode: str, start_runtime: StartRuntime, model_dirs: ModelDirs
) -> None:
    scaling = {"min_workers": 1, "max_workers": 1, "worker_mode": mode}
    rt = start_runtime({"variants": [variant("blue", model_dirs.rf)], "scaling": scaling})
    _predicts_like(rt, model_dirs.rf_model, model_dirs)
    pids = {rt.proc.pid, *rt.stats()["workers"]["pids"]}
    assert not any(_has_pandas(p) for p in pids), rt.log()[-2000:]
    # Checks name the field as they do with pandas.
    bad = {"dataframe_split": {"columns": FEATURES[:-1], "data": [[0.0] * 19]}}
    r = rt.invoke(bad)
    assert r.status_code == 400 and "f19" in r.json()["error"]
    r = rt.invoke({"dataframe_split": {"columns": FEATURES, "data": [["x"] + [0.0] * 19]}})
    assert r.status_code == 400 and "f0" in r.json()["error"], r.text
    # Probabilities through the matrix too (OIP's parameters.method).
    rows = model_dirs.rows(3)
    oip = {
        "inputs": [{"name": "x", "shape": [3, 20], "datatype": "FP64", "data": rows}],
        "parameters": {"method": "predict_proba"},
    }
    r = rt.http.post("/v2/models/fraud/infer", json=oip)
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["outputs"][0]["data"]).reshape(3, -1)
    assert np.allclose(got, model_dirs.rf_model.predict_proba(model_dirs.X.iloc[:3]))


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_model_that_needs_frames_brings_pandas_in(
    mode: str, start_runtime: StartRuntime, model_dirs: ModelDirs, tmp_path: Path
) -> None:
    """Reloaded from an array model to a pipeline that picks columns by name: pandas is let in
    where the model runs (the server's thread, or the workers forked from a fork server that
    kept it out), and both models answer right."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shipyard.models.format import save_model

    X = model_dirs.X
    y = (X.f0 - X.f3 > 0).astype(int)
    pipe = make_pipeline(
        ColumnTransformer([("s", StandardScaler(), ["f0", "f3", "f7"])]), LogisticRegression()
    ).fit(X, y)
    save_model(pipe, tmp_path / "pipe", input_example=X.head(5))

    scaling = {"min_workers": 1, "max_workers": 1, "worker_mode": mode}
    rt = start_runtime({"variants": [variant("blue", model_dirs.lr)], "scaling": scaling})

    def model_pids() -> list[int]:
        return [rt.proc.pid] if mode == "thread" else rt.stats()["workers"]["pids"]

    _predicts_like(rt, model_dirs.lr_model, model_dirs)
    assert not any(_has_pandas(p) for p in model_pids())
    green = {"variants": [variant("green", tmp_path / "pipe", version="2")], "scaling": scaling}
    r = rt.reload(green)
    assert r.status_code == 200, r.text
    _predicts_like(rt, pipe, model_dirs, start=20)
    assert all(_has_pandas(p) for p in model_pids())


def test_a_server_with_a_frame_model_keeps_pandas(
    start_runtime: StartRuntime, model_dirs: ModelDirs
) -> None:
    rt = start_runtime({"variants": [variant("blue", model_dirs.ints)]})
    r = rt.invoke({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[70, 1, 2]]}})
    assert r.status_code == 200, r.text
    assert _has_pandas(rt.proc.pid)


_ENGINE_IMPORTS = """
import json, sys
from shipyard.serving.runtime.endpoint import EndpointRuntime
from shipyard.serving.runtime.config import load_config
from shipyard.serving.runtime.workers import _new_engine

rt = EndpointRuntime(load_config(sys.argv[1]))
engine = _new_engine(rt.pool.s.preload)  # what a model thread does first
engine.load("blue#1", sys.argv[2], "fraud", "1", False)
tops = {m.partition(".")[0] for m in sys.modules}
print(json.dumps({"preload": rt.pool.s.preload, "tops": sorted(tops)}))
"""


@pytest.mark.parametrize("trust_code", [False, True])
def test_a_model_server_keeps_out_what_only_training_uses(
    trust_code: bool, model_dirs: ModelDirs, tmp_path: Path
) -> None:
    """scikit-learn imports Rich (its training progress bars) and NumPy's f2py imports
    charset_normalizer whenever they are installed; a server that runs no model code keeps them
    out, and a forest written as model.npz loads without skops."""
    import json
    import subprocess
    import sys

    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "endpoint": "e",
                "trust_code": trust_code,
                "variants": [variant("blue", model_dirs.rf)],
            }
        )
    )
    p = subprocess.run(
        [sys.executable, "-c", _ENGINE_IMPORTS, str(cfg), str(model_dirs.rf)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert "sklearn" in out["tops"] and "skops" not in out["tops"]
    assert "shipyard.serving.runtime.lean_skops" not in out["preload"]  # nor does a fork server
    guarded = "shipyard.serving.runtime.no_extras" in out["preload"]
    assert guarded is not trust_code
    if not trust_code:
        assert not {"rich", "charset_normalizer"} & set(out["tops"])


def test_the_front_process_names_model_npz_as_the_model_format_does() -> None:
    from shipyard.models.flavors import SKLEARN_STATE_FILE
    from shipyard.serving.runtime import meta

    assert meta.SKLEARN_STATE_FILE == SKLEARN_STATE_FILE
