"""SageMaker's container contract: ``GET /ping`` and ``POST /invocations``, over raw HTTP.

Every payload shape a SageMaker or MLflow client sends must give the model's own answer, and a
request the model cannot take must be a 400 whose message names the column.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from tests.serving.runtime.conftest import FEATURES, ModelDirs, Runtime, StartRuntime, variant


@pytest.fixture(scope="module")
def rt(start_module_runtime: StartRuntime, model_dirs: ModelDirs) -> Runtime:
    return start_module_runtime({"variants": [variant("blue", model_dirs.lr)]})


def _want(model_dirs: ModelDirs, n: int) -> list[int]:
    return model_dirs.lr_model.predict(model_dirs.X.head(n)).tolist()


def test_ping(rt: Runtime) -> None:
    assert rt.http.get("/ping").status_code == 200


def test_every_json_shape_gives_the_models_answer(rt: Runtime, model_dirs: ModelDirs) -> None:
    X = model_dirs.X.head(4)
    want = _want(model_dirs, 4)
    reordered = X[list(reversed(FEATURES))]
    payloads: list[Any] = [
        model_dirs.split(4),
        {
            "dataframe_split": {
                "columns": list(reordered.columns),
                "data": reordered.to_numpy().tolist(),
            }
        },
        {"dataframe_split": {"data": X.to_numpy().tolist()}},  # positional
        {"dataframe_records": X.to_dict(orient="records")},
        {"instances": X.to_dict(orient="records")},
        {"instances": X.to_numpy().tolist()},
        {"inputs": {c: X[c].tolist() for c in FEATURES}},
        # an extra column is ignored, integers are taken as doubles
        {"dataframe_records": [{**r, "extra": "x"} for r in X.to_dict(orient="records")]},
    ]
    for p in payloads:
        r = rt.invoke(p)
        assert r.status_code == 200, (p, r.text)
        assert r.json() == {"predictions": want}, p
        assert r.headers["x-shipyard-variant"] == "blue"
        assert r.headers["x-request-id"]
    ints = [[int(v * 100) for v in row] for row in model_dirs.rows(3)]
    r = rt.invoke({"instances": ints})
    assert r.status_code == 200
    local = model_dirs.lr_model.predict(pd.DataFrame(ints, columns=FEATURES).astype(float))
    assert r.json()["predictions"] == local.tolist()


def test_csv_with_and_without_header(rt: Runtime, model_dirs: ModelDirs) -> None:
    X = model_dirs.X.head(5)
    want = _want(model_dirs, 5)
    with_header = X.to_csv(index=False)
    headerless = X.to_csv(index=False, header=False)
    shuffled = X[list(reversed(FEATURES))].to_csv(index=False)
    for text in (with_header, headerless, shuffled):
        r = rt.http.post("/invocations", content=text, headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": want}
    r = rt.http.post(
        "/invocations",
        content=with_header,
        headers={"content-type": "text/csv", "accept": "text/csv"},
    )
    assert r.headers["content-type"] == "text/csv"
    assert r.text.split() == [str(v) for v in want]


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        (
            {"dataframe_records": [{f: 0.1 for f in FEATURES if f != "f7"}]},
            400,
            "f7: missing column",
        ),
        (
            {"dataframe_split": {"columns": FEATURES, "data": [[0.1] * 3 + ["abc"] + [0.1] * 16]}},
            400,
            "f3: expected double, got str 'abc'",
        ),
        (
            {"dataframe_split": {"columns": FEATURES, "data": [[0.1] * 19 + [True]]}},
            400,
            "f19: expected double",
        ),
        (
            {"dataframe_split": {"columns": FEATURES, "data": [[0.1] * 19]}},
            400,
            "dataframe_split.data[0]: expected 20 values",
        ),
        ({"instances": [[0.1] * 21]}, 400, "expected 20 columns"),
        ({"rows": [[0.1] * 20]}, 400, "body: expected exactly one of dataframe_split"),
    ],
)
def test_bad_payloads_are_400_naming_the_column(
    rt: Runtime, payload: Any, status: int, needle: str
) -> None:
    r = rt.invoke(payload)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"], r.json()


def test_bad_bodies(rt: Runtime) -> None:
    r = rt.http.post("/invocations", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("body: invalid JSON")
    r = rt.http.post("/invocations", content=b"")
    assert r.status_code == 400 and r.json()["error"].startswith("body: empty")
    text = "f0,f1\n1,2\n"
    r = rt.http.post("/invocations", content=text, headers={"content-type": "text/csv"})
    assert r.status_code == 400 and "f2: missing column" in r.json()["error"]
    r = rt.http.get("/invocations")
    assert r.status_code == 405


def test_a_bad_request_in_a_batch_fails_alone(rt: Runtime, model_dirs: ModelDirs) -> None:
    """Concurrent requests are batched; one that cannot be decoded must not spoil the others."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    good = model_dirs.split(1)
    bad = {"dataframe_records": [{"f0": 1.0}]}

    def call(i: int) -> tuple[int, Any]:
        with httpx.Client(base_url=rt.url) as c:
            r = c.post("/invocations", json=bad if i % 4 == 0 else good)
            return r.status_code, r.json()

    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(call, range(64)))
    for i, (status, body) in enumerate(results):
        if i % 4 == 0:
            assert status == 400 and "f1: missing column" in body["error"]
        else:
            assert status == 200 and body == {"predictions": _want(model_dirs, 1)}


def _wait_live(rt: Runtime) -> None:
    import time

    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if rt.http.get("/v2/health/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise AssertionError(rt.log())


def test_a_prediction_sent_while_the_models_load_waits_for_them(
    start_runtime: StartRuntime, model_dirs: ModelDirs
) -> None:
    """The port opens before the models are loaded; a prediction that arrives then is answered
    once they are (not a 503 to retry), while the probes still say not ready."""
    rt = start_runtime({"variants": [variant("blue", model_dirs.rf)]}, ready=False)
    _wait_live(rt)
    assert rt.http.get("/ping").status_code == 503  # still importing scikit-learn
    r = rt.invoke(model_dirs.split(3))
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == model_dirs.rf_model.predict(model_dirs.X.iloc[:3]).tolist()
    assert rt.http.get("/ping").status_code == 200


def test_a_prediction_waiting_on_a_start_that_fails_gets_the_reason(
    start_runtime: StartRuntime, model_dirs: ModelDirs, tmp_path: Any
) -> None:
    """Answered with the reason, or (when it came after the server had stopped) refused: never
    left hanging."""
    import shutil
    import time

    import httpx

    tampered = tmp_path / "rf"
    shutil.copytree(model_dirs.rf, tampered)
    with open(tampered / "model.npz", "ab") as f:
        f.write(b"planted")
    rt = start_runtime({"variants": [variant("blue", tampered)]}, ready=False)
    deadline = time.monotonic() + 60
    while rt.proc.poll() is None and time.monotonic() < deadline:
        try:
            r = rt.invoke(model_dirs.split(1))
        except httpx.TransportError:
            time.sleep(0.01)
            continue
        assert r.status_code == 503
        assert "failed to start" in r.json()["error"]
        assert "sha256 of model.npz" in r.json()["error"]
        break
    assert rt.proc.wait(30) == 1
    assert "sha256 of model.npz does not match" in rt.log()
