"""The model format: every flavor round-trips, signatures guard inputs, tampering is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from shipyard.models.format import (
    MANIFEST_NAME,
    ModelRefused,
    Signature,
    load_model,
    model_digest,
    parse_records,
    read_manifest,
    save_model,
)

RNG = np.random.default_rng(7)
X = RNG.normal(size=(120, 4))
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
DF = pd.DataFrame(X, columns=["age", "income", "tenure", "score"])


class Doubler:
    """A python_function model: anything with predict()."""

    def predict(self, df: Any) -> Any:
        return np.asarray(df["age"]) * 2


def _sklearn_df() -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(DF, Y), DF


def _sklearn_forest_np() -> tuple[Any, Any]:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y), X


def _sklearn_pipeline() -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression()).fit(DF, Y), DF


def _lightgbm_classifier() -> tuple[Any, Any]:
    import lightgbm as lgb

    return lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(DF, Y), DF


def _lightgbm_booster() -> tuple[Any, Any]:
    import lightgbm as lgb

    params = {"objective": "regression", "verbose": -1}
    return lgb.train(params, lgb.Dataset(X, Y.astype(float)), 10), X


def _xgboost_classifier() -> tuple[Any, Any]:
    import xgboost as xgb

    return xgb.XGBClassifier(n_estimators=10, n_jobs=1).fit(DF, Y), DF


def _xgboost_booster() -> tuple[Any, Any]:
    import xgboost as xgb

    return xgb.train({"nthread": 1}, xgb.DMatrix(X, label=Y), 10), X


def _onnx() -> tuple[Any, Any]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X32 = X.astype(np.float32)
    lr = LogisticRegression().fit(X32, Y)
    return to_onnx(lr, X32[:1], options={"zipmap": False}), X32


def _predict_original(name: str, model: Any, data: Any) -> np.ndarray:
    if name == "lightgbm_booster":
        return model.predict(data)
    if name == "xgboost_booster":
        import xgboost as xgb

        return model.predict(xgb.DMatrix(data))
    if name == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: data})[0]
    return model.predict(data)


CASES = {
    "sklearn_df": ("sklearn", _sklearn_df),
    "sklearn_forest_np": ("sklearn", _sklearn_forest_np),
    "sklearn_pipeline": ("sklearn", _sklearn_pipeline),
    "lightgbm_classifier": ("lightgbm", _lightgbm_classifier),
    "lightgbm_booster": ("lightgbm", _lightgbm_booster),
    "xgboost_classifier": ("xgboost", _xgboost_classifier),
    "xgboost_booster": ("xgboost", _xgboost_booster),
    "onnx": ("onnx", _onnx),
}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_predicts_like_the_original(name: str, tmp_path: Path) -> None:
    flavor, build = CASES[name]
    model, data = build()
    manifest = save_model(model, tmp_path / "m", input_example=data[:5])
    assert manifest.flavor == flavor
    loaded = load_model(tmp_path / "m")
    assert loaded.flavor == flavor
    expected = _predict_original(name, model, data)
    got = loaded.predict(data)
    np.testing.assert_allclose(got.astype(float), np.asarray(expected).astype(float), rtol=1e-6)
    # The manifest on disk is the contract's shape, with a sha256 for every file.
    on_disk = json.loads((tmp_path / "m" / MANIFEST_NAME).read_text())
    assert on_disk["format_version"] == 1
    assert on_disk["flavor"] == flavor
    assert set(on_disk["files"]) == {on_disk["model_file"], "input_example.json"}
    assert on_disk["input_example"] == "input_example.json"
    assert all(len(h) == 64 for h in on_disk["files"].values())
    assert on_disk["created_at"].endswith("Z")
    assert "python" in on_disk["libraries"]
    example = loaded.input_example()
    assert example is not None and len(example) == 5


def test_classifier_probabilities_survive(tmp_path: Path) -> None:
    for name in ("sklearn_df", "lightgbm_classifier", "xgboost_classifier"):
        model, data = CASES[name][1]()
        save_model(model, tmp_path / name, input_example=data[:3])
        loaded = load_model(tmp_path / name)
        assert loaded.has_predict_proba
        np.testing.assert_allclose(
            loaded.predict_proba(data), model.predict_proba(data), rtol=1e-6, atol=1e-7
        )


def test_python_function_round_trip_needs_trust(tmp_path: Path) -> None:
    manifest = save_model(Doubler(), tmp_path / "py", input_example=DF[:3])
    assert manifest.flavor == "python_function"
    assert manifest.model_file == "model.pkl"
    with pytest.raises(ModelRefused, match="trust_code=True"):
        load_model(tmp_path / "py")
    loaded = load_model(tmp_path / "py", trust_code=True)
    np.testing.assert_allclose(loaded.predict(DF), DF["age"].to_numpy() * 2)


def test_signature_inferred_from_a_dataframe(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    df = pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0],
            "n": np.array([1, 2, 3], dtype="int64"),
            "k": np.array([1, 2, 3], dtype="int32"),
            "f": np.array([0.5, 1, 2], dtype="float32"),
            "b": [True, False, True],
        }
    )
    model = LinearRegression().fit(df, [1.0, 2.0, 3.0])
    manifest = save_model(model, tmp_path / "m", input_example=df)
    assert manifest.signature.to_dict() == {
        "inputs": [
            {"name": "x", "type": "double"},
            {"name": "n", "type": "long"},
            {"name": "k", "type": "integer"},
            {"name": "f", "type": "float"},
            {"name": "b", "type": "boolean"},
        ],
        "outputs": [{"name": "prediction", "type": "double"}],
    }
    # Read back from disk, the signature is the same.
    assert read_manifest(tmp_path / "m").signature.to_dict() == manifest.signature.to_dict()


def test_signature_inferred_from_a_numpy_example(tmp_path: Path) -> None:
    model, data = _sklearn_forest_np()
    manifest = save_model(model, tmp_path / "m", input_example=data[:2].astype(np.float32))
    assert manifest.signature.to_dict()["inputs"] == {
        "tensor": {"dtype": "float32", "shape": [-1, 4]}
    }
    loaded = load_model(tmp_path / "m")
    with pytest.raises(InvalidArgument, match="expected 4 columns per row"):
        loaded.predict(X[:, :3])
    with pytest.raises(InvalidArgument, match="expected float32"):
        loaded.predict(pd.DataFrame({0: ["a"], 1: [1.0], 2: [1.0], 3: [1.0]}))


def test_signature_without_example_comes_from_the_model(tmp_path: Path) -> None:
    model, _ = _sklearn_df()
    manifest = save_model(model, tmp_path / "named")
    assert manifest.signature.column_names == ["age", "income", "tenure", "score"]
    onnx_model, _ = _onnx()
    manifest = save_model(onnx_model, tmp_path / "onnx")
    assert manifest.signature.to_dict()["inputs"] == {
        "tensor": {"dtype": "float32", "shape": [-1, 4]}
    }


def test_validation_errors_name_the_column(tmp_path: Path) -> None:
    model, data = _sklearn_df()
    save_model(model, tmp_path / "m", input_example=data[:3])
    loaded = load_model(tmp_path / "m")
    with pytest.raises(InvalidArgument, match="tenure: missing column") as e:
        loaded.predict(DF.drop(columns=["tenure"]))
    assert e.value.details["field"] == "tenure"
    bad = DF.head(2).astype({"income": object})
    bad.loc[bad.index[1], "income"] = "lots"
    with pytest.raises(InvalidArgument, match="income: expected double, got str 'lots'"):
        loaded.predict(bad)
    # Integers where doubles are expected are safe, and columns come back in signature order.
    ints = pd.DataFrame({"score": [1, 2], "tenure": [3, 4], "income": [5, 6], "age": [7, 8]})
    checked = loaded.signature.validate(ints)
    assert list(checked.columns) == ["age", "income", "tenure", "score"]
    assert checked["age"].dtype == np.float64
    assert loaded.predict(ints).shape == (2,)
    # Positional rows are matched by position, or refused with the expected count.
    assert loaded.predict(X[:3]).shape == (3,)
    with pytest.raises(InvalidArgument, match="expected 4 columns"):
        loaded.predict(X[:3, :2])


def test_validate_types() -> None:
    sig = Signature.from_dict(
        {
            "inputs": [
                {"name": "n", "type": "long"},
                {"name": "s", "type": "string"},
                {"name": "b", "type": "boolean"},
            ]
        }
    )
    ok = sig.validate(pd.DataFrame({"n": [1.0, 2.0], "s": ["a", "b"], "b": [True, False]}))
    assert ok["n"].dtype == np.int64
    with pytest.raises(InvalidArgument, match="n: expected long, got a non-integral number"):
        sig.validate(pd.DataFrame({"n": [1.5], "s": ["a"], "b": [True]}))
    with pytest.raises(InvalidArgument, match="n: expected long, got a null value"):
        sig.validate(pd.DataFrame({"n": [1.0, None], "s": ["a", "b"], "b": [True, True]}))
    with pytest.raises(InvalidArgument, match="b: expected boolean"):
        sig.validate(pd.DataFrame({"n": [1], "s": ["a"], "b": ["yes"]}))
    # A number where a string is expected is kept as its text.
    assert sig.validate(pd.DataFrame({"n": [1], "s": [12345], "b": [True]}))["s"][0] == "12345"
    with pytest.raises(InvalidArgument, match=r"signature.inputs\[0\].type"):
        Signature.from_dict({"inputs": [{"name": "x", "type": "complex"}]})


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["sklearn_df", "lightgbm_booster", "onnx"])
def test_a_tampered_file_is_refused(name: str, tmp_path: Path) -> None:
    model, data = CASES[name][1]()
    manifest = save_model(model, tmp_path / "m", input_example=data[:2])
    _flip_byte(tmp_path / "m" / manifest.model_file)
    with pytest.raises(ModelRefused, match="sha256 of model") as e:
        load_model(tmp_path / "m")
    assert isinstance(e.value, PermissionDenied)
    assert e.value.details["file"] == manifest.model_file


def test_a_tampered_pickle_is_refused_even_when_trusted(tmp_path: Path) -> None:
    save_model(Doubler(), tmp_path / "py")
    _flip_byte(tmp_path / "py" / "model.pkl")
    with pytest.raises(ModelRefused, match="does not match"):
        load_model(tmp_path / "py", trust_code=True)


def test_a_rewritten_manifest_is_caught_by_the_registered_digest(tmp_path: Path) -> None:
    model, data = _sklearn_df()
    save_model(model, tmp_path / "m", input_example=data[:2])
    digest = model_digest(tmp_path / "m")
    mpath = tmp_path / "m" / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    manifest["created_at"] = "2000-01-01T00:00:00Z"
    mpath.write_text(json.dumps(manifest))
    load_model(tmp_path / "m")  # consistent on its own
    with pytest.raises(ModelRefused, match="registered digest"):
        load_model(tmp_path / "m", expected_digest=digest)


def test_a_manifest_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    model, data = _sklearn_df()
    save_model(model, tmp_path / "m", input_example=data[:2])
    mpath = tmp_path / "m" / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    manifest["files"]["../secret"] = "0" * 64
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(InvalidArgument, match="invalid file name '../secret'"):
        load_model(tmp_path / "m")
    manifest["files"].pop("../secret")
    manifest["model_file"] = "model.pkl"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(InvalidArgument, match="model_file"):
        load_model(tmp_path / "m")


def test_skops_refuses_types_outside_the_allow_list(tmp_path: Path) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    # A function is code: refused at save time, with the remedy.
    pipe = make_pipeline(FunctionTransformer(func=json.dumps))
    with pytest.raises(InvalidArgument, match="json.dumps.*python_function"):
        save_model(pipe, tmp_path / "f", flavor="sklearn")
    # And a file written by someone else with such a type is refused on load.
    import skops.io as sio

    folder = tmp_path / "planted"
    model, data = _sklearn_df()
    manifest = save_model(model, folder, input_example=data[:2])
    (folder / "model.skops").write_bytes(sio.dumps(pipe))
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    from shipyard.core.artifacts import sha256_file

    del raw["files"][raw["model_file"]]  # written as model.npz; planted as model.skops
    raw["model_file"] = "model.skops"
    raw["files"]["model.skops"] = sha256_file(folder / "model.skops")[0]
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ModelRefused, match="untrusted types json.dumps"):
        load_model(folder)
    assert manifest.flavor == "sklearn"


def test_save_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="model: cannot save a builtins.int"):
        save_model(3, tmp_path / "x")
    model, _ = _sklearn_df()
    with pytest.raises(InvalidArgument, match="input_example: the model could not predict"):
        save_model(model, tmp_path / "y", input_example=pd.DataFrame({"z": [1.0]}))
    assert not (tmp_path / "y").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no half-written folder left behind
    save_model(model, tmp_path / "z")
    with pytest.raises(AlreadyExists):
        save_model(model, tmp_path / "z")
    with pytest.raises(NotFound):
        load_model(tmp_path / "nothing")
    with pytest.raises(InvalidArgument, match="flavor"):
        save_model(model, tmp_path / "w", flavor="tensorflow")


# -- parse_records ---------------------------------------------------------------------------

EXPECTED = pd.DataFrame({"a": [1.0, 3.0], "b": ["x", "y"]})


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, "x"], [3.0, "y"]]}},
        {"dataframe_records": [{"a": 1.0, "b": "x"}, {"a": 3.0, "b": "y"}]},
        {"instances": [{"a": 1.0, "b": "x"}, {"a": 3.0, "b": "y"}]},
        {"inputs": {"a": [1.0, 3.0], "b": ["x", "y"]}},
        {"inputs": [{"a": 1.0, "b": "x"}, {"a": 3.0, "b": "y"}]},
        "a,b\n1.0,x\n3.0,y\n",
        b"a,b\n1.0,x\n3.0,y\n",
        '{"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, "x"], [3.0, "y"]]}}',
    ],
    ids=[
        "split",
        "records",
        "instances",
        "inputs-columns",
        "inputs-rows",
        "csv",
        "csv-bytes",
        "json-text",
    ],
)
def test_parse_records_shapes(payload: Any) -> None:
    df = parse_records(payload)
    assert list(df.columns) == ["a", "b"]
    assert df["a"].tolist() == [1.0, 3.0]
    assert df["b"].tolist() == ["x", "y"]


def test_parse_records_positional_rows_fit_a_signature() -> None:
    sig = Signature.from_dict(
        {"inputs": [{"name": "a", "type": "double"}, {"name": "b", "type": "double"}]}
    )
    for payload in ({"instances": [[1.0, 2.0], [3.0, 4.0]]}, "1.0,2.0\n3.0,4.0\n"):
        df = parse_records(payload)  # CSV without a header, as SageMaker's clients send it
        assert len(df) == 2
        assert sig.validate(df)["b"].tolist() == [2.0, 4.0]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"rows": []}, "body: expected exactly one of"),
        ({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, r"dataframe_split.data\[0\]"),
        ({"dataframe_split": {"columns": ["a"], "data": 3}}, "dataframe_split.data"),
        ({"dataframe_records": [1, 2]}, "dataframe_records: expected a list of objects"),
        ({"instances": [[1, 2], [1]]}, r"instances\[1\]: expected 2 values"),
        ({"inputs": {"a": [1, 2], "b": [1]}}, "inputs: columns have different lengths"),
        ("{not json", "body: invalid JSON"),
        (b"\xff\xfe", "body: expected UTF-8"),
    ],
)
def test_parse_records_errors_name_the_field(payload: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_records(payload)


def test_array_input_is_recorded_when_the_matrix_answers_as_the_frame(tmp_path: Path) -> None:
    """A model server needs no pandas for a model that answers its float matrix exactly as it
    answers the frame; the manifest says so, and in which column order the model wants it."""
    import lightgbm as lgb
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = LogisticRegression().fit(DF, Y)
    assert save_model(lr, tmp_path / "lr", input_example=DF[:5]).array_input == {"order": None}
    assert read_manifest(tmp_path / "lr").array_input == {"order": None}
    # Fitted on a bare array: the matrix is what it was fitted on.
    arr = LogisticRegression().fit(X, Y)
    assert save_model(arr, tmp_path / "arr", input_example=DF[:5]).array_input == {"order": None}
    booster = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(DF, Y)
    assert save_model(booster, tmp_path / "lgbm", input_example=DF[:5]).array_input is not None
    # A pipeline picks its columns by name; integer columns and no example: the frame stays.
    picks = make_pipeline(
        ColumnTransformer([("s", StandardScaler(), ["age", "income"])]), LogisticRegression()
    ).fit(DF, Y)
    assert save_model(picks, tmp_path / "pipe", input_example=DF[:5]).array_input is None
    ints = DF.round().astype("int64")
    lr_ints = LogisticRegression().fit(ints, Y)
    assert save_model(lr_ints, tmp_path / "ints", input_example=ints[:5]).array_input is None
    assert save_model(lr, tmp_path / "bare").array_input is None


def test_a_bad_array_input_names_the_field(tmp_path: Path) -> None:
    model, data = _sklearn_df()
    save_model(model, tmp_path / "m", input_example=data[:2])
    mpath = tmp_path / "m" / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    for bad in (
        {"order": [0, 0, 1, 2]},
        {"order": [0, 1, 2, 3, "x"]},
        {"order": [True, 0, 2, 3]},
        {"order": "abc"},
        [1],
        {"no": 1},
    ):
        manifest["array_input"] = bad
        mpath.write_text(json.dumps(manifest))
        with pytest.raises(InvalidArgument) as e:
            read_manifest(tmp_path / "m")
        assert e.value.details["field"] == "array_input" and "permutation" in e.value.message
