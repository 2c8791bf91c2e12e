"""scikit-learn models written as ``model.npz`` (``shipyard.models.sklearn_state``): they load to
the same predictions, the file holds no pickle, and a tampered or invalid file is refused."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core.artifacts import sha256_file
from shipyard.models import sklearn_state
from shipyard.models.format import MANIFEST_NAME, ModelRefused, load_model, save_model

RNG = np.random.default_rng(11)
X = RNG.normal(size=(300, 6))
DF = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
Y3 = np.digitize(X[:, 0] + 0.3 * X[:, 1], [-0.5, 0.5])  # three classes
YR = X[:, 0] * 2.0 - X[:, 2] + RNG.normal(scale=0.1, size=len(X))


def _models() -> dict[str, tuple[Any, Any]]:
    from sklearn import ensemble, linear_model, tree

    labels = np.array(["low", "mid", "high"])[Y3]  # string classes: an object array
    return {
        "forest": (ensemble.RandomForestClassifier(20, random_state=0).fit(DF, Y3), DF),
        "forest-regressor": (ensemble.RandomForestRegressor(10, random_state=0).fit(X, YR), X),
        "extra-trees": (ensemble.ExtraTreesClassifier(10, random_state=0).fit(X, labels), X),
        "gradient-boosting": (ensemble.GradientBoostingClassifier(n_estimators=15).fit(DF, Y3), DF),
        "gradient-boosting-binary": (
            ensemble.GradientBoostingClassifier(n_estimators=10, subsample=0.8).fit(X, Y3 > 0),
            X,
        ),
        "gradient-boosting-regressor": (
            ensemble.GradientBoostingRegressor(n_estimators=15, loss="huber").fit(DF, YR),
            DF,
        ),
        "decision-tree": (tree.DecisionTreeRegressor(max_depth=6).fit(X, YR), X),
        "logistic-regression": (linear_model.LogisticRegression().fit(DF, Y3), DF),
    }


MODELS = _models()


@pytest.fixture(scope="module")
def forest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, data = MODELS["forest"]
    folder = tmp_path_factory.mktemp("state") / "forest"
    save_model(model, folder, input_example=data[:5])
    return folder


@pytest.mark.parametrize("name", list(MODELS))
def test_a_saved_model_loads_to_identical_predictions(name: str, tmp_path: Path) -> None:
    model, data = MODELS[name]
    manifest = save_model(model, tmp_path / name, input_example=data[:5])
    assert manifest.model_file == "model.npz"
    loaded = load_model(tmp_path / name)
    assert type(loaded.model) is type(model)
    np.testing.assert_array_equal(loaded.model.predict(data), model.predict(data))
    if hasattr(model, "predict_proba"):
        np.testing.assert_array_equal(loaded.model.predict_proba(data), model.predict_proba(data))
    assert sklearn_state.same_state(loaded.model, model)


def test_the_file_holds_no_pickle(forest_dir: Path) -> None:
    """A JSON document and flat arrays of plain dtypes, each readable without pickle."""
    with zipfile.ZipFile(forest_dir / "model.npz") as zf:
        names = zf.namelist()
        assert names[0] == "state.json" and all(n.endswith(".npy") for n in names[1:])
        doc = json.loads(zf.read("state.json"))
        assert doc["format"] == "shipyard-sklearn-state" and doc["version"] == 1
        assert doc["root"]["$obj"] == "sklearn.ensemble._forest.RandomForestClassifier"
        for name in names[1:]:
            with zf.open(name) as f:
                arr = np.lib.format.read_array(f, allow_pickle=False)
            assert arr.ndim == 1 and not arr.dtype.hasobject


def test_a_model_it_cannot_hold_is_written_with_skops(tmp_path: Path) -> None:
    """A histogram gradient boosting model keeps a numpy Generator: skops writes it instead."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=5).fit(X, Y3)
    manifest = save_model(model, tmp_path / "hgb", input_example=X[:5])
    assert manifest.model_file == "model.skops"
    np.testing.assert_array_equal(load_model(tmp_path / "hgb").model.predict(X), model.predict(X))
    with pytest.raises(sklearn_state.Unsupported, match="Generator"):
        sklearn_state.dumps(model)


def test_a_model_saved_with_skops_still_loads(forest_dir: Path, tmp_path: Path) -> None:
    """Folders written before model.npz existed (model.skops in the manifest) load as before."""
    import skops.io as sio

    model, data = MODELS["forest"]
    folder = tmp_path / "old"
    shutil.copytree(forest_dir, folder)
    (folder / "model.npz").unlink()
    (folder / "model.skops").write_bytes(sio.dumps(model))
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    raw["model_file"] = "model.skops"
    raw["files"] = {
        "model.skops": sha256_file(folder / "model.skops")[0],
        "input_example.json": raw["files"]["input_example.json"],
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))
    np.testing.assert_array_equal(load_model(folder).model.predict(data), model.predict(data))


def _resign(folder: Path, data: bytes) -> None:
    """Write ``data`` as the folder's model.npz and its sha256 into the manifest (as someone with
    write access to the store could)."""
    (folder / "model.npz").write_bytes(data)
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    raw["files"]["model.npz"] = sha256_file(folder / "model.npz")[0]
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))


def _rewrite(source: Path, edit: Any) -> bytes:
    """The zip at ``source`` with ``edit(doc, arrays)`` applied to its state and arrays."""
    with zipfile.ZipFile(source) as zf:
        doc = json.loads(zf.read("state.json"))
        arrays = {}
        for name in zf.namelist()[1:]:
            with zf.open(name) as f:
                arrays[name] = np.lib.format.read_array(f)
    edit(doc, arrays)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("state.json", json.dumps(doc))
        for name, arr in arrays.items():
            with zf.open(name, "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=True)
    return buf.getvalue()


def _first_tree(doc: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = doc["root"]["state"]["$dict"]["estimators_"][0]["state"]["$dict"]
    return tree["tree_"]


def _nodes(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray:
    blob, offset, shape, _ = _first_tree(doc)["state"]["$dict"]["nodes"]["$a"]
    out: np.ndarray = arrays[f"a{blob}.npy"][offset : offset + shape[0]]
    return out


def _child_out_of_range(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    _nodes(doc, arrays)["left_child"][0] = 10**6


def _child_loops_back(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    nodes = _nodes(doc, arrays)
    inner = np.flatnonzero(nodes["left_child"] != -1)
    nodes["right_child"][inner[1]] = inner[0]  # a walk could cycle


def _feature_too_wide(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    _nodes(doc, arrays)["feature"][0] = 6  # the model reads 6 features: 0..5


def _depth_understated(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    _first_tree(doc)["state"]["$dict"]["max_depth"] = 1


def _tree_wider_than_model(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    _first_tree(doc)["args"]["$tuple"][0] = 60


def _class_outside_sklearn(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    doc["root"]["state"]["$dict"]["estimator"] = {"$obj": "os._wrap_close", "id": 10**6}


def _function_under_sklearn(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    doc["root"]["$obj"] = "sklearn.utils.validation.check_array"


def _unknown_tag(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    doc["root"]["state"]["$dict"]["n_estimators"] = {"$eval": "print(1)"}


def _scalar_that_is_a_list(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    doc["root"]["state"]["$dict"]["n_estimators"] = {"$s": ["<i8", [1, 2]]}


def _pickled_array(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["a0.npy"] = np.array([print, 1], dtype=object)  # written with pickle inside


def _slice_past_the_end(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    _first_tree(doc)["state"]["$dict"]["values"]["$a"][1] = 10**9


TAMPERED = {
    "child out of range": (_child_out_of_range, "point outside the tree"),
    "child loops back": (_child_loops_back, "point outside the tree"),
    "feature too wide": (_feature_too_wide, "split on no feature"),
    "depth understated": (_depth_understated, "deeper than its max_depth"),
    "tree wider than the model": (_tree_wider_than_model, "not 6 features wide"),
    "class outside sklearn": (_class_outside_sklearn, "refusing class 'os._wrap_close'"),
    "function under sklearn": (_function_under_sklearn, "not a scikit-learn class"),
    "unknown tag": (_unknown_tag, "unknown tag '\\$eval'"),
    "pickled array": (_pickled_array, "object arrays are refused"),
    "scalar that is a list": (_scalar_that_is_a_list, "is not a numpy number"),
    "slice past the end": (_slice_past_the_end, "outside the arrays"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_file_is_refused_with_its_reason(
    case: str, forest_dir: Path, tmp_path: Path
) -> None:
    """Re-signed, so the hashes match: the reader itself must refuse it, before scikit-learn's
    Cython code walks a tree it would trust."""
    edit, message = TAMPERED[case]
    folder = tmp_path / "forest"
    shutil.copytree(forest_dir, folder)
    _resign(folder, _rewrite(folder / "model.npz", edit))
    with pytest.raises(ModelRefused, match=f"refusing to load model.npz: .*{message}") as e:
        load_model(folder)
    assert e.value.details["file"] == "model.npz"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a zip", "BadZipFile"),
        (b"", "BadZipFile"),
    ],
)
def test_a_file_that_is_not_a_model_is_refused(
    data: bytes, message: str, forest_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "forest"
    shutil.copytree(forest_dir, folder)
    _resign(folder, data)
    with pytest.raises(ModelRefused, match=message):
        load_model(folder)


def test_a_compressed_file_reads_the_same(forest_dir: Path) -> None:
    """Written by another zip tool (deflated members): read through the zip module instead."""
    model, data = MODELS["forest"]
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(forest_dir / "model.npz") as src,
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    rebuilt = sklearn_state.read(io.BytesIO(buf.getvalue()))
    np.testing.assert_array_equal(rebuilt.predict_proba(data), model.predict_proba(data))


def test_a_changed_file_fails_its_hash_first(forest_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "forest"
    shutil.copytree(forest_dir, folder)
    with open(folder / "model.npz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelRefused, match="sha256 of model.npz does not match"):
        load_model(folder)


def test_the_state_is_checked_against_the_model_at_save(tmp_path: Path) -> None:
    """A model whose state the reader would rebuild differently is written with skops."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(3, random_state=0).fit(X, Y3)
    model.shared_ = model.estimators_  # one list under two names: still the same state
    assert save_model(model, tmp_path / "a").model_file == "model.npz"
    assert sklearn_state.same_state(load_model(tmp_path / "a").model, model)
    model.odd_ = {1: slice(0, 2)}  # a slice is not data this format holds
    assert save_model(model, tmp_path / "b").model_file == "model.skops"
