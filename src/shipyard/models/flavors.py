"""One small adapter per flavor: how a model is recognised, written, read back and called.

Every flavor but ``python_function`` writes a format that holds data, not code, so reading a
file planted by an attacker cannot run their code (DESIGN.md, promise 3):
- sklearn: ``model.npz``, the estimators' state as JSON and ``.npy`` arrays
  (``sklearn_state``), when the model's state is plain data and the model rebuilt from the
  file was checked, at save, to hold the same state and predict the same; otherwise
  ``model.skops``: ``skops.io`` with an allow-list built from the file itself, trusting only
  classes under ``sklearn.`` and classes or ufuncs under ``numpy.``; a function such as
  ``builtins.eval`` or a class from any other module is refused by name. Both are read.
- lightgbm: the Booster's text model; xgboost: its JSON model; onnx: the protobuf graph run by
  onnxruntime.
- python_function: cloudpickle, which is code; ``format.load_model`` reads it only after every
  hash matches and the caller passed ``trust_code=True``.

Libraries are imported inside functions: importing ``shipyard.models`` must stay cheap.
"""

from __future__ import annotations

import importlib
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument, PermissionDenied

FLAVORS = ("sklearn", "lightgbm", "xgboost", "onnx", "python_function")
MODEL_FILES = {
    "sklearn": "model.skops",
    "lightgbm": "model.txt",
    "xgboost": "model.json",
    "onnx": "model.onnx",
    "python_function": "model.pkl",
}
# The distributions whose versions a manifest records, per flavor.
LIBRARIES = {
    "sklearn": ("scikit-learn", "skops", "numpy"),
    "lightgbm": ("lightgbm", "numpy"),
    "xgboost": ("xgboost", "xgboost-cpu", "numpy"),
    "onnx": ("onnx", "onnxruntime", "numpy"),
    "python_function": ("cloudpickle", "numpy"),
}
# The files a flavor's model may be stored in (the first is MODEL_FILES'). A scikit-learn model
# is written as model.npz where it can be (see _save_sklearn), and as model.skops otherwise.
SKLEARN_STATE_FILE = "model.npz"
MODEL_FILE_CHOICES = {
    **{flavor: (name,) for flavor, name in MODEL_FILES.items()},
    "sklearn": (MODEL_FILES["sklearn"], SKLEARN_STATE_FILE),
}
_XGB_CLASSES = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")


class ModelRefused(PermissionDenied):
    """A model folder that must not be loaded: a hash mismatch, untrusted code or types."""


def library_versions(flavor: str) -> dict[str, str]:
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for dist in LIBRARIES[flavor]:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _module_of(model: Any) -> str:
    return type(model).__module__.split(".")[0]


def detect_flavor(model: Any) -> str:
    """The flavor of ``model``, from the module that defines its class."""
    top = _module_of(model)
    if top == "lightgbm":
        return "lightgbm"
    if top == "xgboost":
        return "xgboost"
    if top == "onnx" or isinstance(model, bytes | bytearray):
        return "onnx"
    if top == "sklearn":
        return "sklearn"
    if callable(getattr(model, "predict", None)):
        return "python_function"
    raise InvalidArgument.for_field(
        "model",
        f"cannot save a {type(model).__module__}.{type(model).__name__}: "
        "expected a scikit-learn, LightGBM, XGBoost or ONNX model, or an object with predict()",
    )


# -- save ------------------------------------------------------------------------------------


def save(flavor: str, model: Any, folder: Path, example: Any = None) -> tuple[str, dict[str, Any]]:
    """Write ``model`` into ``folder``; return its model file's name and the flavor options.

    ``example`` (a DataFrame or array, optional) is what a scikit-learn model is checked on
    when it is written as ``model.npz``.
    """
    if flavor == "sklearn":
        return _save_sklearn(model, folder, example)
    name = MODEL_FILES.get(flavor, "")
    return name, _save_as(flavor, model, folder / name)


def _save_as(flavor: str, model: Any, path: Path) -> dict[str, Any]:
    if flavor == "lightgbm":
        return _save_lightgbm(model, path)
    if flavor == "xgboost":
        return _save_xgboost(model, path)
    if flavor == "onnx":
        return _save_onnx(model, path)
    if flavor == "python_function":
        if not callable(getattr(model, "predict", None)):
            raise InvalidArgument.for_field("model", "a python_function model needs predict()")
        import cloudpickle

        path.write_bytes(cloudpickle.dumps(model))
        return {}
    raise InvalidArgument.for_field("flavor", f"unknown flavor {flavor!r}; expected {FLAVORS}")


def _save_sklearn(model: Any, folder: Path, example: Any) -> tuple[str, dict[str, Any]]:
    data = _sklearn_state_bytes(model, example)
    if data is not None:
        (folder / SKLEARN_STATE_FILE).write_bytes(data)
        return SKLEARN_STATE_FILE, {}
    import skops.io as sio

    path = folder / MODEL_FILES["sklearn"]
    data = sio.dumps(model)
    refused = _untrusted_sklearn_types(sio.get_untrusted_types(data=data))[1]
    if refused:
        raise InvalidArgument.for_field(
            "model",
            "this scikit-learn model holds types that cannot be trusted on load: "
            f"{', '.join(refused)}; save it with flavor='python_function' instead",
            untrusted=refused,
        )
    path.write_bytes(data)
    return path.name, {}


def _sklearn_state_bytes(model: Any, example: Any) -> bytes | None:
    """``model`` as ``model.npz`` bytes, or None when that format cannot hold it exactly.

    Exactly means: the model read back from those bytes (as ``load`` reads them) has the same
    state, value for value, and predicts the same on ``example`` (and on a fixed random matrix
    as wide as the model), with ``predict_proba`` too where it has one.
    """
    import io
    import warnings

    import numpy as np

    from shipyard.models import sklearn_state as st

    try:
        data = st.dumps(model)
        rebuilt = st.read(io.BytesIO(data))
        if not st.same_state(model, rebuilt):
            return None
    except Exception:  # Unsupported, BadState, or anything unforeseen: skops writes it
        return None
    probes = [example] if example is not None else []
    width = getattr(model, "n_features_in_", None)
    if isinstance(width, int) and 0 < width <= 10_000:
        probes.append(np.random.default_rng(0).normal(size=(16, width)))
    for X in probes:
        for method in ("predict", "predict_proba"):
            fn = getattr(model, method, None)
            if fn is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    want = np.asarray(fn(X))
                except Exception:
                    continue  # the original cannot answer this probe: nothing to compare
                try:
                    got = np.asarray(getattr(rebuilt, method)(X))
                except Exception:
                    return None
            if got.shape != want.shape or got.dtype != want.dtype:
                return None
            if not np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"):
                return None
    return data


def _save_lightgbm(model: Any, path: Path) -> dict[str, Any]:
    import lightgbm as lgb

    opts: dict[str, Any] = {}
    booster = model
    if isinstance(model, lgb.LGBMModel):
        booster = model.booster_
        if isinstance(model, lgb.LGBMClassifier):
            opts = {"model_type": "classifier", "classes": _jsonable(model.classes_)}
        else:
            opts = {"model_type": "regressor"}
    elif not isinstance(model, lgb.Booster):
        raise InvalidArgument.for_field("model", "expected a lightgbm Booster or LGBMModel")
    path.write_text(booster.model_to_string(), encoding="utf-8")
    return opts


def _save_xgboost(model: Any, path: Path) -> dict[str, Any]:
    import xgboost as xgb

    if isinstance(model, xgb.Booster):
        model.save_model(str(path))
        return {"model_type": "Booster"}
    name = type(model).__name__
    if name not in _XGB_CLASSES or not isinstance(model, xgb.XGBModel):
        raise InvalidArgument.for_field("model", f"unsupported xgboost model {name}")
    model.save_model(str(path))
    return {"model_type": name}


def _save_onnx(model: Any, path: Path) -> dict[str, Any]:
    data = bytes(model) if isinstance(model, bytes | bytearray) else model.SerializeToString()
    path.write_bytes(data)
    return {}


def _jsonable(values: Any) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in list(values)]


# -- load ------------------------------------------------------------------------------------


# Set by the model server's process before it loads anything (see ``skops_io``).
LEAN_SKOPS = False
_SKOPS_IMPORT = threading.Lock()


def _untrusted_sklearn_types(names: list[str]) -> tuple[list[str], list[str]]:
    """Split skops' untrusted type names into (trusted by our allow-list, refused).

    Only classes under ``sklearn.`` and classes or ufuncs under ``numpy.`` are trusted: a name
    is resolved (importing only sklearn or numpy modules) and must be a class (or ufunc). A
    function, even one under those packages, is refused, since a FunctionTransformer would call
    it with the caller's data.
    """
    trusted: list[str] = []
    refused: list[str] = []
    for name in names:
        top = name.split(".")[0]
        obj = _resolve(name) if top in ("sklearn", "numpy") else None
        ok = isinstance(obj, type)
        if not ok and top == "numpy" and obj is not None:
            import numpy as np

            ok = isinstance(obj, np.ufunc)
        (trusted if ok else refused).append(name)
    return trusted, refused


def _resolve(name: str) -> Any:
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


class _FastWhichmodule:
    """While ``skops.io`` imports: its ``whichmodule`` answering as before, about 5x faster.

    At import, skops names each of SciPy's 230 special ufuncs (they have no ``__module__``) by
    looking for it in every loaded module, in import order, with a ``getattr`` that raises and
    catches an ``AttributeError`` in nearly all of them: about 0.13 CPU s in a model server's
    1,700 modules. This finder (it finds nothing) swaps in, just before skops' trust lists are
    computed, a search that reads a plain module's ``__dict__`` instead and keeps ``getattr``
    for any module that could answer otherwise (a module ``__getattr__``, a module subclass,
    a name the module type itself defines): the same first match, so the same names.
    """

    def __init__(self) -> None:
        self.utils: Any = None
        self.real: Any = None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "skops.io._trusted_types" and self.utils is None:
            utils = sys.modules.get("skops.io._utils")
            real = getattr(utils, "whichmodule", None)
            if real is not None:
                self.utils, self.real = utils, real
                utils.whichmodule = self._make(real)  # type: ignore[union-attr]
        return None

    def restore(self) -> None:
        if self.utils is not None:
            self.utils.whichmodule = self.real

    @staticmethod
    def _make(real: Any) -> Any:
        import types
        import warnings

        module_type = types.ModuleType
        type_attrs = set(dir(module_type))
        missing = object()

        def whichmodule(obj: Any, name: str) -> str:
            module_name = getattr(obj, "__module__", None)
            if module_name is not None:
                return str(module_name)
            if "." in name or name in type_attrs:
                return str(real(obj, name))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                for module_name, module in sys.modules.copy().items():
                    if module_name in ("__main__", "__mp_main__") or module is None:
                        continue
                    d = module.__dict__ if type(module) is module_type else None
                    found = missing if d is None else d.get(name, missing)
                    if found is missing and (d is None or "__getattr__" in d):
                        try:
                            found = getattr(module, name, None)
                        except (AttributeError, ImportError):
                            continue
                    if found is obj:
                        return str(module_name)
            return "__main__"

        return whichmodule


def skops_io(lean: bool = False) -> Any:
    """``skops.io``; with ``lean``, imported without its list of every scikit-learn estimator.

    On import, ``skops.io`` builds its default trust list from ``sklearn.utils.all_estimators()``,
    which imports every scikit-learn module (and pytest, through its testing helpers): about
    0.3 CPU s and 20 MB more than a model needs. Shipyard always passes its own allow-list (every
    class under ``sklearn.``, a superset of that default), so a model server, which loads models
    only through ``load`` below, imports it lean: the same types are trusted and refused. Only a
    process of Shipyard's own asks for it (it changes skops' default for the whole process).
    """
    if lean and "skops.io" not in sys.modules:
        with _SKOPS_IMPORT:
            if "skops.io" not in sys.modules:
                import sklearn.utils

                real = sklearn.utils.all_estimators
                sklearn.utils.all_estimators = lambda *a, **k: []  # type: ignore[assignment]
                hook = _FastWhichmodule()
                sys.meta_path.insert(0, hook)
                try:
                    import skops.io  # noqa: F401  (imported for its side effect)
                finally:
                    sklearn.utils.all_estimators = real
                    sys.meta_path.remove(hook)
                    hook.restore()
    import skops.io as sio

    return sio


def _refuse(path: Path, refused: list[str]) -> None:
    if refused:
        raise ModelRefused(
            f"refusing to load {path.name}: it holds untrusted types {', '.join(refused)}",
            {"untrusted": refused},
        )


def _skops_one_pass() -> Any:
    """``skops.io.load`` with the allow-list check on the same tree it builds, or None.

    The public API reads and parses the file twice: ``get_untrusted_types`` builds the node
    tree (reading every array) to list the types, then ``load`` builds it again to audit and
    construct it. Built once, a 100-tree forest loads in about 0.06 CPU s instead of 0.1. The
    checks are skops' own, in its order: the types the tree holds beyond skops' defaults must
    all pass the allow-list (``audit_tree`` with that list) before ``construct``. Uses skops'
    internal modules; when they change shape this returns None and the public API is used.
    """
    try:
        from skops.io._audit import audit_tree, get_tree
        from skops.io._utils import read_schema
    except ImportError:  # pragma: no cover - another skops layout
        return None

    def load_one_pass(path: Path) -> Any:
        from zipfile import ZipFile

        with ZipFile(path, "r") as zf:
            schema, context = read_schema(zf)
            tree = get_tree(schema, context, trusted=None)
            trusted, refused = _untrusted_sklearn_types(sorted(tree.get_unsafe_set()))
            _refuse(path, refused)
            audit_tree(tree, trusted=trusted)
            return tree.construct()

    return load_one_pass


def load(flavor: str, path: Path, options: dict[str, Any]) -> Any:
    if flavor == "sklearn" and path.name == SKLEARN_STATE_FILE:
        from shipyard.models import sklearn_state as st

        try:
            return st.read(path)
        except st.BadState as e:
            raise ModelRefused(f"refusing to load {path.name}: {e}", {"file": path.name}) from None
    if flavor == "sklearn":
        sio = skops_io(lean=LEAN_SKOPS)
        one_pass = _skops_one_pass()
        if one_pass is not None:
            return one_pass(path)
        trusted, refused = _untrusted_sklearn_types(sio.get_untrusted_types(file=path))
        _refuse(path, refused)
        return sio.load(path, trusted=trusted)
    if flavor == "lightgbm":
        import lightgbm as lgb

        return lgb.Booster(model_str=path.read_text(encoding="utf-8"))
    if flavor == "xgboost":
        import xgboost as xgb

        kind = options.get("model_type", "Booster")
        model: Any
        if kind == "Booster":
            model = xgb.Booster()
        elif kind in _XGB_CLASSES:
            model = getattr(xgb, kind)()
        else:
            raise InvalidArgument.for_field("flavor_options.model_type", f"unknown {kind!r}")
        model.load_model(str(path))
        return model
    if flavor == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    if flavor == "python_function":
        import cloudpickle

        with open(path, "rb") as f:
            return cloudpickle.load(f)
    raise InvalidArgument.for_field("flavor", f"unknown flavor {flavor!r}")


# -- predict ---------------------------------------------------------------------------------


def array_order(flavor: str, model: Any, names: list[str]) -> tuple[bool, list[int] | None]:
    """Whether ``model`` (as loaded, or as it predicts once saved) can be called with a bare
    float matrix whose columns are ``names`` in that order, and the column order it wants.

    scikit-learn spends about 0.4 ms turning a one-row DataFrame into an array, more than a
    LogisticRegression takes to predict; a caller that answers yes here still checks, on an
    example, that both ways give the same answer. A pipeline may pick its columns by name, so
    it needs its frame.
    """
    if flavor == "onnx":
        return len(model.get_inputs()) == 1, None
    if flavor == "lightgbm":
        have = [str(n) for n in model.feature_name()]
    elif flavor == "sklearn":
        if any(hasattr(model, a) for a in ("steps", "transformers", "transformer_list")):
            return False, None
        fitted = getattr(model, "feature_names_in_", None)
        if fitted is None:
            return True, None
        have = [str(n) for n in fitted]
    else:
        return False, None
    if sorted(have) != sorted(names):
        if flavor == "lightgbm" and len(have) == len(names):
            return True, None  # LightGBM reads columns by position either way
        return False, None
    order = [names.index(n) for n in have]
    return True, None if order == list(range(len(order))) else order


def quiet_feature_name_warning() -> None:
    """A model fitted on a frame and called with its matrix (columns in its own order, see
    ``array_order``) warns on every call that the matrix has no feature names."""
    import warnings

    warnings.filterwarnings(
        "ignore", message="X does not have valid feature names", category=UserWarning
    )


def predict(flavor: str, model: Any, X: Any, options: dict[str, Any]) -> Any:
    """Call the model on ``X`` (a validated DataFrame, or an array for tensor signatures)."""
    if flavor == "lightgbm":
        raw = model.predict(X)
        classes = options.get("classes")
        if options.get("model_type") == "classifier" and classes is not None:
            import numpy as np

            cls = np.asarray(classes)
            if raw.ndim == 1:
                return cls[(raw > 0.5).astype(int)]
            return cls[np.argmax(raw, axis=1)]
        return raw
    if flavor == "xgboost":
        if options.get("model_type", "Booster") == "Booster":
            import xgboost as xgb

            return model.predict(xgb.DMatrix(X))
        return model.predict(X)
    if flavor == "onnx":
        return _onnx_run(model, X)[0]
    return model.predict(X)


def predict_proba(flavor: str, model: Any, X: Any, options: dict[str, Any]) -> Any:
    import numpy as np

    if flavor == "lightgbm":
        if options.get("model_type") != "classifier":
            raise InvalidArgument("predict_proba: this LightGBM model is not a classifier")
        raw = model.predict(X)
        return np.column_stack([1 - raw, raw]) if raw.ndim == 1 else raw
    if flavor == "onnx":
        outs = _onnx_run(model, X)
        if len(outs) < 2:
            raise InvalidArgument("predict_proba: this ONNX model has a single output")
        probs = outs[1]
        if isinstance(probs, list) and probs and isinstance(probs[0], dict):
            keys = sorted(probs[0])
            return np.array([[row[k] for k in keys] for row in probs])
        return np.asarray(probs)
    fn = getattr(model, "predict_proba", None)
    if fn is None:
        raise InvalidArgument(f"predict_proba: this {flavor} model has no predict_proba")
    return fn(X)


def _onnx_run(session: Any, X: Any) -> list[Any]:
    import numpy as np

    inputs = session.get_inputs()
    feeds: dict[str, Any] = {}
    if len(inputs) == 1:
        arr = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
        feeds[inputs[0].name] = arr.astype(_onnx_dtype(inputs[0].type), copy=False)
    else:
        for inp in inputs:
            col = X[inp.name].to_numpy()
            feeds[inp.name] = col.astype(_onnx_dtype(inp.type), copy=False).reshape(-1, 1)
    return session.run(None, feeds)


_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


def _onnx_dtype(t: str) -> str:
    return _ONNX_TYPES.get(t, "float32")


def onnx_signature_inputs(path: Path) -> dict[str, Any] | list[dict[str, str]] | None:
    """A signature's inputs read from an ONNX graph (no example needed)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init]
    elem = onnx.helper.tensor_dtype_to_np_dtype

    def dims(i: Any) -> list[int]:
        return [d.dim_value if d.dim_value > 0 else -1 for d in i.type.tensor_type.shape.dim]

    if len(inputs) == 1:
        return {
            "tensor": {
                "dtype": str(elem(inputs[0].type.tensor_type.elem_type)),
                "shape": dims(inputs[0]) or [-1],
            }
        }
    from shipyard.models.signature import column_type

    return [
        {"name": i.name, "type": column_type(elem(i.type.tensor_type.elem_type))} for i in inputs
    ]


def native_signature_inputs(
    flavor: str, model: Any
) -> dict[str, Any] | list[dict[str, str]] | None:
    """Inputs a fitted model knows about itself, used when no input example is given."""
    names: list[str] | None = None
    n: int | None = None
    if flavor == "sklearn":
        fn = getattr(model, "feature_names_in_", None)
        names = [str(x) for x in fn] if fn is not None else None
        n = getattr(model, "n_features_in_", None)
    elif flavor == "lightgbm":
        booster = getattr(model, "booster_", model)
        names = list(booster.feature_name())
        if all(x == f"Column_{i}" for i, x in enumerate(names)):
            n, names = len(names), None
    elif flavor == "xgboost":
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        names = list(booster.feature_names) if booster.feature_names else None
        n = booster.num_features()
    if names:
        return [{"name": x, "type": "double"} for x in names]
    if n:
        return {"tensor": {"dtype": "float64", "shape": [-1, int(n)]}}
    return None
