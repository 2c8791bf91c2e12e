"""The Open Inference Protocol v2, spoken to by the real ``tritonclient[http]`` client.

One server for the module: variant ``blue`` (the LogisticRegression, version 3) of endpoint
``fraud``, plus every other test model behind the same server as a multi-model directory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.serving.runtime.conftest import FEATURES, ModelDirs, Runtime, StartRuntime, variant


@pytest.fixture(scope="module")
def rt(start_module_runtime: StartRuntime, model_dirs: ModelDirs) -> Runtime:
    return start_module_runtime(
        {
            "variants": [variant("blue", model_dirs.lr, version="3")],
            "multi_model": {"models_dir": str(model_dirs.root), "memory_budget_mb": 4096},
        }
    )


@pytest.fixture(scope="module")
def client(rt: Runtime) -> Any:
    c = triton.InferenceServerClient(rt.url.removeprefix("http://"))
    yield c
    c.close()


def _local(model: Any, X: np.ndarray, proba: bool = False) -> Any:
    import pandas as pd

    df = pd.DataFrame(X, columns=FEATURES)
    return model.predict_proba(df) if proba else model.predict(df)


def _row_input(X: np.ndarray, dtype: str = "FP64", binary: bool = True) -> Any:
    inp = triton.InferInput("input-0", list(X.shape), dtype)
    inp.set_data_from_numpy(X, binary_data=binary)
    return inp


def _column_inputs(X: np.ndarray, dtype: str, names: list[str] = FEATURES) -> list[Any]:
    np_dtype = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64}[dtype]
    out = []
    for j, name in enumerate(names):
        inp = triton.InferInput(name, [X.shape[0]], dtype)
        inp.set_data_from_numpy(X[:, j].astype(np_dtype), binary_data=False)
        out.append(inp)
    return out


def test_health_and_server_metadata(client: Any, rt: Runtime) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("fraud")
    assert client.is_model_ready("fraud", "3")
    assert not client.is_model_ready("fraud", "999")
    meta = client.get_server_metadata()
    assert meta["name"] == "shipyard"
    assert "binary_tensor_data" in meta["extensions"]
    assert rt.http.get("/v2/").json() == meta  # the YAML's spelling of the path
    assert rt.http.get("/v2/health/live").json() == {"live": True}
    assert rt.http.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_comes_from_the_signature(client: Any) -> None:
    meta = client.get_model_metadata("fraud")
    assert meta["name"] == "fraud"
    assert meta["versions"] == ["3"]
    assert meta["platform"] == "sklearn_skops"
    assert meta["inputs"] == [{"name": f, "datatype": "FP64", "shape": [-1]} for f in FEATURES]
    assert meta["outputs"] == [{"name": "prediction", "datatype": "INT64", "shape": [-1]}]
    assert client.get_model_metadata("fraud", "3")["versions"] == ["3"]
    ints = client.get_model_metadata("ints")
    assert [i["datatype"] for i in ints["inputs"]] == ["INT64"] * 3
    tensor = client.get_model_metadata("lr_array")
    assert tensor["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}]


def test_infer_fp64_rows_in_binary(client: Any, model_dirs: ModelDirs) -> None:
    X = model_dirs.X.to_numpy()[:7]
    res = client.infer("fraud", [_row_input(X)])
    assert res.as_numpy("prediction").tolist() == _local(model_dirs.lr_model, X).tolist()
    assert res.get_response()["model_version"] == "3"


def test_infer_fp32_columns_in_json_with_id_and_outputs(client: Any, model_dirs: ModelDirs) -> None:
    X = model_dirs.X.to_numpy()[:5]
    res = client.infer(
        "fraud",
        _column_inputs(X, "FP32"),
        outputs=[triton.InferRequestedOutput("prediction", binary_data=False)],
        request_id="req-42",
    )
    body = res.get_response()
    assert body["id"] == "req-42"
    assert body["model_name"] == "fraud"
    want = _local(model_dirs.lr_model, X.astype(np.float32).astype(np.float64)).tolist()
    assert body["outputs"] == [
        {"name": "prediction", "datatype": "INT64", "shape": [5], "data": want}
    ]


def test_infer_int64_tensors(client: Any, model_dirs: ModelDirs) -> None:
    import pandas as pd

    from shipyard.models.format import load_model

    Xi = np.array([[10, 60, 3], [90, 2, 7], [51, 51, 51]], dtype=np.int64)
    res = client.infer("ints", _column_inputs(Xi, "INT64", ["a", "b", "c"]))
    local = load_model(model_dirs.ints).predict(pd.DataFrame(Xi, columns=["a", "b", "c"]))
    assert res.as_numpy("prediction").tolist() == local.tolist()
    # Integers into double columns are widened (nothing is lost).
    X = np.rint(model_dirs.X.to_numpy()[:4] * 10).astype(np.int64)
    res = client.infer("fraud", [_row_input(X, "INT64")])
    assert (
        res.as_numpy("prediction").tolist() == _local(model_dirs.lr_model, X.astype(float)).tolist()
    )


def test_versioned_path_and_other_flavors(client: Any, model_dirs: ModelDirs) -> None:
    import lightgbm as lgb

    X = model_dirs.X.to_numpy()[:6]
    res = client.infer("fraud", [_row_input(X)], model_version="3")
    assert res.as_numpy("prediction").tolist() == _local(model_dirs.lr_model, X).tolist()
    res = client.infer("rf", [_row_input(X)])
    assert res.as_numpy("prediction").tolist() == _local(model_dirs.rf_model, X).tolist()
    res = client.infer("lgbm", _column_inputs(X, "FP64"))
    booster = lgb.Booster(model_file=str(model_dirs.lgbm / "model.txt"))
    assert res.as_numpy("prediction").tolist() == (booster.predict(X) > 0.5).astype(int).tolist()
    res = client.infer("lr_array", [_row_input(X)])
    assert res.as_numpy("prediction").shape == (6,)


def test_parameters_choose_predict_proba(client: Any, model_dirs: ModelDirs) -> None:
    X = model_dirs.X.to_numpy()[:3]
    res = client.infer("fraud", [_row_input(X)], parameters={"method": "predict_proba"})
    probs = res.as_numpy("probabilities")
    assert probs.shape == (3, 2)
    assert np.allclose(probs, _local(model_dirs.lr_model, X, proba=True))
    with pytest.raises(InferenceServerException) as e:
        client.infer("fraud", [_row_input(X)], parameters={"method": "transform"})
    assert e.value.status() == "400"
    assert "parameters.method" in e.value.message()


@pytest.mark.parametrize(
    ("request_body", "needle"),
    [
        # a column left out of the columnar form
        (
            {
                "inputs": [
                    {"name": f, "shape": [1], "datatype": "FP64", "data": [0.5]}
                    for f in FEATURES
                    if f != "f5"
                ]
            },
            "f5: missing input",
        ),
        # strings for a double column
        (
            {
                "inputs": [
                    {
                        "name": f,
                        "shape": [1],
                        "datatype": "BYTES" if f == "f3" else "FP64",
                        "data": ["x"] if f == "f3" else [0.5],
                    }
                    for f in FEATURES
                ]
            },
            "f3: datatype BYTES does not fit the signature's double column",
        ),
        # one row of the wrong width
        (
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 19], "datatype": "FP64", "data": [0.0] * 19}
                ]
            },
            "input-0: wrong shape [1, 19]: expected [-1, 20]",
        ),
        # a shape that does not hold the data
        (
            {
                "inputs": [
                    {"name": "input-0", "shape": [2, 20], "datatype": "FP64", "data": [0.0] * 20}
                ]
            },
            "input-0: shape [2, 20] holds 40 values but data has 20",
        ),
        # values that are not of the declared type
        (
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": ["a", "b"]}
                ]
            },
            "input-0: data holds values that are not FP64",
        ),
        (
            {"inputs": [{"name": "input-0", "shape": [1], "datatype": "FP65", "data": [1]}]},
            "unknown datatype 'FP65'",
        ),
        ({"inputs": []}, "inputs: required"),
        (
            {"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]},
            "id: expected a string",
        ),
        (
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 20], "datatype": "FP64", "data": [0.0] * 20}
                ],
                "outputs": [{"name": "nope"}],
            },
            "outputs[0].name: unknown output 'nope'",
        ),
        (
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 20], "datatype": "FP64", "data": [0.0] * 20}
                ],
                "parameters": {"method": ["x"]},
            },
            "parameters.method: expected a string, number or boolean",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    rt: Runtime, request_body: dict[str, Any], needle: str
) -> None:
    r = rt.http.post("/v2/models/fraud/infer", json=request_body)
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert needle in body["error"], body["error"]


def test_tensor_signature_checks_the_shape(rt: Runtime) -> None:
    r = rt.http.post(
        "/v2/models/lr_array/infer",
        json={"inputs": [{"name": "t", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
    )
    assert r.status_code == 400
    assert r.json()["error"] == "t: wrong shape [1, 3]: expected [-1, 20]"
    r = rt.http.post(
        "/v2/models/lr_array/infer",
        json={"inputs": [{"name": "t", "shape": [1, 20], "datatype": "BOOL", "data": [True] * 20}]},
    )
    assert r.status_code == 400 and "datatype BOOL does not fit" in r.json()["error"]


def test_protocol_errors(client: Any, rt: Runtime) -> None:
    for path, status in [
        ("/v2/models/nope", 404),
        ("/v2/models/fraud/versions/9", 404),
        ("/v2/models/fraud/explain", 404),
        ("/v2/models/a..b", 400),
        ("/nowhere", 404),
    ]:
        r = rt.http.get(path)
        assert r.status_code == status, (path, r.text)
        assert isinstance(r.json()["error"], str)
    r = rt.http.get("/v2/models/fraud/infer")
    assert r.status_code == 405 and "takes POST" in r.json()["error"]
    r = rt.http.post("/v2/models/fraud/infer", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"].startswith("body: invalid JSON")
    with pytest.raises(InferenceServerException) as e:
        client.infer("nope", [_row_input(np.zeros((1, 20)))])
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException) as e:
        client.infer("fraud", [_row_input(np.zeros((1, 20)))], model_version="9")
    assert e.value.status() == "404" and "no version '9'" in e.value.message()


def test_responses_match_the_published_schemas(rt: Runtime, model_dirs: ModelDirs) -> None:
    """Every body checked against the component schemas of the OIP's own OpenAPI file."""
    from pathlib import Path

    import jsonschema
    import yaml

    spec = yaml.safe_load(
        (Path(__file__).parent / "oip_spec" / "open_inference_rest.yaml").read_text()
    )

    def check(body: Any, schema: str) -> None:
        root = {"components": spec["components"], "$ref": f"#/components/schemas/{schema}"}
        jsonschema.validate(body, root)

    check(rt.http.get("/v2").json(), "metadata_server_response")
    check(rt.http.get("/v2/models/fraud").json(), "metadata_model_response")
    check(rt.http.get("/v2/models/lr_array").json(), "metadata_model_response")
    for m in (rt.http.get("/v2/models/nope"), rt.http.get("/v2/models/fraud/versions/8")):
        check(m.json(), "metadata_model_error_response")
    good = {
        "id": "1",
        "parameters": {"method": "predict_proba"},
        "inputs": [{"name": "x", "shape": [2, 20], "datatype": "FP64", "data": model_dirs.rows(2)}],
        "outputs": [{"name": "probabilities"}],
    }
    check(good, "inference_request")
    r = rt.http.post("/v2/models/fraud/infer", json=good)
    assert r.status_code == 200
    check(r.json(), "inference_response")
    assert r.json()["outputs"][0]["shape"] == [2, 2]
    r = rt.http.post("/v2/models/fraud/infer", json={"inputs": [{"name": "x"}]})
    assert r.status_code == 400
    check(r.json(), "inference_error_response")
