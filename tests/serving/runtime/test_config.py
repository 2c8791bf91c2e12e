"""The config file's checks, and how the server starts (or refuses to)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shipyard.core.errors import InvalidArgument
from shipyard.serving.runtime.config import parse_config
from tests.serving.runtime.conftest import ModelDirs, StartRuntime, variant


def _base(**kw: Any) -> dict[str, Any]:
    return {"endpoint": "e", "variants": [variant("blue", Path("/m"))], **kw}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"variants": [variant("blue", Path("/m"))]}, "endpoint"),
        (_base(variants=[]), "variants"),
        (_base(variants=[{"name": "blue", "model_path": "rel"}]), "variants[0].model_path"),
        (_base(variants=[{**variant("a", Path("/m")), "weight": -1}]), "variants[0].weight"),
        (_base(variants=[{**variant("a", Path("/m")), "weight": 0}]), "variants"),
        (_base(variants=[variant("a", Path("/m")), variant("a", Path("/n"))]), "variants[1].name"),
        (_base(shadow=variant("blue", Path("/s"))), "shadow.name"),
        (_base(capture={"sample_rate": 1.5, "dir": "/c"}), "capture.sample_rate"),
        (_base(capture={"sample_rate": 0.5}), "capture.dir"),
        (_base(batching={"max_batch_size": 0}), "batching.max_batch_size"),
        (_base(scaling={"min_workers": 3, "max_workers": 2}), "scaling.min_workers"),
        (_base(scaling={"worker_mode": "fibers"}), "scaling.worker_mode"),
        (_base(scaling={"worker_mode": "thread", "max_workers": 2}), "scaling.worker_mode"),
        (_base(scaling={"idle_to_zero_s": "soon"}), "scaling.idle_to_zero_s"),
        (_base(port=70000), "port"),
        (_base(trust_code="yes"), "trust_code"),
        (_base(host="0.0.0.0"), "host"),
    ],
)
def test_bad_config_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_config(raw)
    assert e.value.details["field"] == field, e.value.message


def test_defaults_and_worker_mode() -> None:
    cfg = parse_config(_base())
    assert cfg.host == "127.0.0.1" and cfg.batching.max_batch_size == 64
    assert cfg.worker_mode == "thread"  # one worker: predict in a thread of the server
    assert parse_config(_base(scaling={"max_workers": 4})).worker_mode == "process"
    assert parse_config(_base(host="0.0.0.0", auth_token="s3cret")).host == "0.0.0.0"
    mm = parse_config({"endpoint": "e", "multi_model": {"models_dir": "/mm"}})
    assert mm.variants == () and mm.multi_model is not None


def _run(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "shipyard.serving.runtime", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_config_file_exits_2_with_one_line(tmp_path: Path) -> None:
    p = _run({"endpoint": "e", "variants": [{"name": "blue", "model_path": "x"}]}, tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == "error: variants[0].model_path: expected an absolute path, got 'x'"


def test_a_model_that_fails_its_hash_check_stops_the_start(
    tmp_path: Path, model_dirs: ModelDirs
) -> None:
    from tests.conftest import free_port

    tampered = tmp_path / "lr"
    shutil.copytree(model_dirs.lr, tampered)
    with open(tampered / "model.npz", "ab") as f:
        f.write(b"planted")
    p = _run(
        {"endpoint": "e", "port": free_port(), "variants": [variant("blue", tampered)]}, tmp_path
    )
    assert p.returncode == 1
    assert "the sha256 of model.npz does not match its manifest" in p.stderr.splitlines()[-1]


def test_auth_token_is_required_when_set(
    start_runtime: StartRuntime, model_dirs: ModelDirs
) -> None:
    rt = start_runtime(
        {"variants": [variant("blue", model_dirs.lr)], "auth_token": "s3cret"}, ready=False
    )
    import time

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            r = rt.http.get("/v2/health/ready", headers={"authorization": "Bearer s3cret"})
            if r.status_code == 200:
                break
        except Exception:
            pass
        time.sleep(0.1)
    # Probes answer without a token (and say nothing but ready); the model's routes do not.
    assert rt.http.get("/v2/health/ready").status_code == 200
    assert rt.http.get("/ping").status_code == 200
    for path in ("/v2/models/fraud", "/shipyard/stats", "/v2"):
        r = rt.http.get(path)
        assert r.status_code == 401 and "bearer token" in r.json()["error"], path
    r = rt.invoke(model_dirs.split(1))
    assert r.status_code == 401
    r = rt.invoke(model_dirs.split(1), headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = rt.invoke(model_dirs.split(1), headers={"authorization": "Bearer s3cret"})
    assert r.status_code == 200


def _plant(folder: Path, model: Any) -> None:
    """Write ``model`` with skops into a model folder and re-sign its manifest (as someone with
    write access to the store could)."""
    import skops.io as sio

    from shipyard.core.artifacts import sha256_file

    (folder / "model.skops").write_bytes(sio.dumps(model))
    manifest = json.loads((folder / "shipyard-model.json").read_text())
    del manifest["files"][manifest["model_file"]]
    manifest["model_file"] = "model.skops"
    manifest["files"]["model.skops"] = sha256_file(folder / "model.skops")[0]
    (folder / "shipyard-model.json").write_text(json.dumps(manifest))


def test_the_server_loads_through_the_allow_list(
    tmp_path: Path, model_dirs: ModelDirs, start_runtime: StartRuntime
) -> None:
    """The server imports skops without its own list of every estimator (a faster start): the
    allow-list still decides. A function planted in a pipeline is refused; a pipeline of
    scikit-learn classes from several modules loads and answers as in this process."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from tests.conftest import free_port

    planted = tmp_path / "planted"
    shutil.copytree(model_dirs.lr, planted)
    _plant(planted, make_pipeline(FunctionTransformer(func=json.dumps), model_dirs.lr_model))
    p = _run(
        {"endpoint": "e", "port": free_port(), "variants": [variant("blue", planted)]}, tmp_path
    )
    assert p.returncode == 1
    assert "untrusted types json.dumps" in p.stderr.splitlines()[-1]

    pipe = make_pipeline(StandardScaler(), model_dirs.rf_model.__class__(n_estimators=5))
    pipe.fit(model_dirs.X, (model_dirs.X.f0 > 0).astype(int))
    good = tmp_path / "pipeline"
    shutil.copytree(model_dirs.lr, good)
    _plant(good, pipe)
    rt = start_runtime({"variants": [variant("blue", good)]})
    r = rt.invoke(model_dirs.split(20))
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == pipe.predict(model_dirs.X.head(20)).tolist()


def test_a_server_without_trusted_code_answers_string_columns_without_pyarrow(
    tmp_path: Path, start_runtime: StartRuntime
) -> None:
    """With ``trust_code`` off the server's pandas does not load PyArrow (about 50 MB less);
    a model over string columns answers exactly as it does in a process with PyArrow."""
    import numpy as np
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from shipyard.models.format import save_model

    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        {"city": rng.choice(["paris", "lyon", "nice"], 300), "amount": rng.normal(size=300)}
    )
    y = ((X.city == "lyon") ^ (X.amount > 0)).astype(int)
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["city"]), remainder="passthrough"),
        LogisticRegression(),
    ).fit(X, y)
    save_model(model, tmp_path / "m", input_example=X.head(3))
    rt = start_runtime({"variants": [variant("blue", tmp_path / "m")]})
    rows = X.head(40)
    r = rt.invoke(
        {"dataframe_split": {"columns": ["city", "amount"], "data": rows.values.tolist()}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == model.predict(rows).tolist()
    maps = Path(f"/proc/{rt.proc.pid}/maps").read_text()
    assert "libarrow" not in maps and "pandas" in maps
    rt.stop()
    trusting = start_runtime({"variants": [variant("blue", tmp_path / "m")], "trust_code": True})
    assert (
        trusting.invoke(
            {"dataframe_split": {"columns": ["city", "amount"], "data": rows.values.tolist()}}
        ).json()["predictions"]
        == model.predict(rows).tolist()
    )
    assert "libarrow" in Path(f"/proc/{trusting.proc.pid}/maps").read_text()
