"""The model format: a folder with a manifest, the serialized model and an optional example.

```
<folder>/shipyard-model.json   the manifest (flavor, signature, library versions, sha256 of files)
<folder>/model.<ext>           model.npz | model.skops | model.txt | model.json | model.onnx | model.pkl
<folder>/input_example.json    {"dataframe_split": {"columns": [...], "data": [[...]]}} (optional)
```

``save_model`` writes the folder under a temporary name and renames it into place, so a folder
with a manifest is complete. ``load_model`` checks the manifest's shape, then every file's
sha256, before reading a byte of the model; a ``python_function`` model (a pickle, which is code)
loads only with ``trust_code=True``. The manifest holds every other file's digest, so the sha256
of the manifest (``model_digest``) identifies the whole folder: the registry records it and
``load_model(expected_digest=...)`` refuses a folder whose manifest was rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.core.artifacts import sha256_file
from shipyard.core.errors import AlreadyExists, InvalidArgument, NotFound
from shipyard.models import flavors as _fl
from shipyard.models.flavors import FLAVORS, MODEL_FILE_CHOICES, ModelRefused
from shipyard.models.signature import (
    ColumnSpec,
    Signature,
    TensorSpec,
    infer_outputs,
    infer_signature,
    parse_records,
    to_jsonable_frame,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "FLAVORS",
    "MANIFEST_NAME",
    "ColumnSpec",
    "LoadedModel",
    "Manifest",
    "ModelRefused",
    "Signature",
    "TensorSpec",
    "load_model",
    "model_digest",
    "parse_records",
    "read_manifest",
    "save_model",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "shipyard-model.json"
EXAMPLE_NAME = "input_example.json"
_EXAMPLE_ROWS = 100


@dataclass
class Manifest:
    flavor: str
    model_file: str
    signature: Signature
    libraries: dict[str, str]
    files: dict[str, str]
    input_example: str | None = None
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    flavor_options: dict[str, Any] = field(default_factory=dict)
    # Set when the model answers a float matrix (its signature's columns, in ``order``, or in
    # that order when null) exactly as it answers the frame, as checked on the example at save:
    # a model server then needs no pandas (about 30 MB) for it.
    array_input: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "flavor": self.flavor,
            "model_file": self.model_file,
            "signature": self.signature.to_dict(),
            "libraries": self.libraries,
            "files": self.files,
            "input_example": self.input_example,
            "created_at": self.created_at,
            "flavor_options": self.flavor_options,
            "array_input": self.array_input,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Parse and check a manifest; raises ``InvalidArgument`` naming the bad field."""
        if not isinstance(d, dict):
            raise InvalidArgument.for_field(MANIFEST_NAME, "expected a JSON object")
        if d.get("format_version") != FORMAT_VERSION:
            raise InvalidArgument.for_field(
                "format_version",
                f"unsupported model format version {d.get('format_version')!r} "
                f"(this Shipyard reads {FORMAT_VERSION})",
            )
        flavor = d.get("flavor")
        if flavor not in FLAVORS:
            raise InvalidArgument.for_field(
                "flavor", f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVORS)}"
            )
        if d.get("model_file") not in MODEL_FILE_CHOICES[flavor]:
            choices = " or ".join(repr(n) for n in MODEL_FILE_CHOICES[flavor])
            raise InvalidArgument.for_field(
                "model_file",
                f"a {flavor} model is stored in {choices}, not {d.get('model_file')!r}",
            )
        files = d.get("files")
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise InvalidArgument.for_field("files", "expected {file name: sha256}")
        for name in files:
            # Plain names only: a manifest cannot point outside its folder.
            if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
                raise InvalidArgument.for_field("files", f"invalid file name {name!r}")
        if d["model_file"] not in files:
            raise InvalidArgument.for_field("files", f"no sha256 recorded for {d['model_file']}")
        example = d.get("input_example")
        if example is not None and (example != EXAMPLE_NAME or example not in files):
            raise InvalidArgument.for_field(
                "input_example", f"expected {EXAMPLE_NAME!r} (listed in files) or null"
            )
        libraries = d.get("libraries") or {}
        options = d.get("flavor_options") or {}
        if not isinstance(libraries, dict) or not isinstance(options, dict):
            raise InvalidArgument.for_field("libraries", "expected an object")
        signature = Signature.from_dict(d.get("signature"))
        return cls(
            flavor=flavor,
            model_file=d["model_file"],
            signature=signature,
            libraries={str(k): str(v) for k, v in libraries.items()},
            files=dict(files),
            input_example=example,
            created_at=str(d.get("created_at") or ""),
            format_version=FORMAT_VERSION,
            flavor_options=options,
            array_input=_parse_array_input(d.get("array_input"), signature),
        )


def _parse_array_input(raw: Any, signature: Signature) -> dict[str, Any] | None:
    if raw is None:
        return None
    width = len(signature.inputs) if isinstance(signature.inputs, list) else -1
    order = raw.get("order", 0) if isinstance(raw, dict) else 0
    if not (
        width > 0
        and (
            order is None
            or (
                isinstance(order, list)
                and all(type(o) is int for o in order)
                and sorted(order) == list(range(width))
            )
        )
    ):
        raise InvalidArgument.for_field(
            "array_input",
            f'expected null or {{"order": null | a permutation of 0..{width - 1}}} '
            "for a model whose signature has named columns",
        )
    return {"order": order}


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of the model folder at ``path`` (NotFound when it has none)."""
    return Manifest.from_dict(_read_manifest_json(Path(path))[0])


def model_digest(path: str | Path) -> str:
    """The sha256 of the folder's manifest, which holds every other file's sha256."""
    return _read_manifest_json(Path(path))[1]


def _read_manifest_json(folder: Path) -> tuple[Any, str]:
    mpath = folder / MANIFEST_NAME
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no model at {folder}: {MANIFEST_NAME} is missing") from None
    except NotADirectoryError:
        raise NotFound(f"no model at {folder}: not a folder") from None
    try:
        return json.loads(raw), hashlib.sha256(raw).hexdigest()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument.for_field(MANIFEST_NAME, f"invalid JSON: {e}") from None


# -- save ------------------------------------------------------------------------------------


def save_model(
    model: object,
    path: str | Path,
    *,
    flavor: str | None = None,
    input_example: object = None,
    signature: Signature | None = None,
) -> Manifest:
    """Save ``model`` as a model folder at ``path`` (which must not exist, or be empty).

    The flavor is detected from the model's class unless given; the signature is inferred from
    ``input_example`` (a DataFrame gives named columns, an array a tensor) and the model's
    predictions on it, or from what the fitted model knows (feature names, feature count, an
    ONNX graph's inputs). Raises ``InvalidArgument`` for a model or example that cannot be saved.
    """
    dest = Path(path)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AlreadyExists(f"cannot save a model to {dest}: it exists and is not empty")
    flavor = flavor or _fl.detect_flavor(model)
    if flavor not in FLAVORS:
        raise InvalidArgument.for_field(
            "flavor", f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVORS)}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        manifest = _write_folder(model, tmp, flavor, input_example, signature)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _write_folder(
    model: Any, folder: Path, flavor: str, example: Any, signature: Signature | None
) -> Manifest:
    example_df = _example_frame(example)
    check_on = None
    if example_df is not None and flavor == "sklearn":
        check_on = example_df if hasattr(model, "feature_names_in_") else example_df.to_numpy()
    model_file, options = _fl.save(flavor, model, folder, check_on)
    if signature is None:
        signature = _infer(model, folder / model_file, flavor, options, example, example_df)
    files = {model_file: sha256_file(folder / model_file)[0]}
    example_name = None
    if example_df is not None:
        payload = to_jsonable_frame(example_df, _EXAMPLE_ROWS)
        (folder / EXAMPLE_NAME).write_text(json.dumps(payload), encoding="utf-8")
        files[EXAMPLE_NAME] = sha256_file(folder / EXAMPLE_NAME)[0]
        example_name = EXAMPLE_NAME
    manifest = Manifest(
        flavor=flavor,
        model_file=model_file,
        signature=signature,
        libraries=_fl.library_versions(flavor),
        files=files,
        input_example=example_name,
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        flavor_options=options,
        array_input=_array_input(model, flavor, options, signature, example_df),
    )
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2), "utf-8")
    return manifest


def _array_input(
    model: Any,
    flavor: str,
    options: dict[str, Any],
    signature: Signature,
    example_df: pd.DataFrame | None,
) -> dict[str, Any] | None:
    """``{"order": ...}`` when the saved model predicts the example from its float matrix
    exactly as from the frame (see ``Manifest.array_input``), else None."""
    cols = signature.inputs
    if (
        example_df is None
        or flavor not in ("sklearn", "lightgbm")
        or not isinstance(cols, list)
        or not cols
        or any(c.type not in ("double", "float") for c in cols)
    ):
        return None
    import numpy as np

    target = model
    if flavor == "lightgbm" and options.get("model_type"):
        target = model.booster_  # what a loaded one is
    names = [c.name for c in cols]
    try:
        ok, order = _fl.array_order(flavor, target, names)
        if not ok:
            return None
        df = signature.validate(example_df)
        want = np.asarray(
            _fl.predict(flavor, target, _model_input(signature, df, flavor, model), options)
        )
        dtype = "float32" if all(c.type == "float" for c in cols) else "float64"
        X = df[names].to_numpy(dtype=dtype)
        if order is not None:
            X = X[:, order]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "X does not have valid feature names"
            got = np.asarray(_fl.predict(flavor, target, X, options))
    except Exception:  # any doubt: the server keeps the frame
        return None
    if got.shape != want.shape or not bool(np.all(got == want)):
        return None
    return {"order": order}


def _example_frame(example: Any) -> pd.DataFrame | None:
    if example is None:
        return None
    import numpy as np
    import pandas as pd

    from shipyard.models.signature import _as_frame

    if isinstance(example, pd.DataFrame):
        return example
    if isinstance(example, np.ndarray) and example.ndim > 2:
        raise InvalidArgument.for_field(
            "input_example", f"expected rows (2 dimensions), got {example.ndim}"
        )
    return _as_frame(example)


def _infer(
    model: Any,
    model_path: Path,
    flavor: str,
    options: dict[str, Any],
    example: Any,
    example_df: pd.DataFrame | None,
) -> Signature:
    if example is None:
        if flavor == "onnx":
            return Signature.from_dict({"inputs": _fl.onnx_signature_inputs(model_path)})
        return Signature.from_dict({"inputs": _fl.native_signature_inputs(flavor, model)})
    import numpy as np

    sig = infer_signature(example if isinstance(example, np.ndarray) else example_df)
    # The outputs come from the model's own answer on the example: this also checks, at save
    # time, that the example fits the model.
    try:
        if flavor == "onnx":
            loaded = _fl.load(flavor, model_path, options)
            preds = _fl.predict(flavor, loaded, _model_input(sig, example_df, flavor, None), {})
        else:
            target = model
            if flavor == "lightgbm" and options.get("model_type"):
                target = model.booster_  # predicts through the same path as a loaded one
            preds = _fl.predict(
                flavor, target, _model_input(sig, example_df, flavor, model), options
            )
    except Exception as e:  # the user's model or example: report it as theirs
        raise InvalidArgument.for_field(
            "input_example", f"the model could not predict on it: {type(e).__name__}: {e}"
        ) from e
    sig.outputs = infer_outputs(preds)
    return sig


def _model_input(sig: Signature, df: Any, flavor: str, model: Any) -> Any:
    """What the underlying library is called with, from a validated frame."""
    if isinstance(sig.inputs, TensorSpec):
        return df.to_numpy(dtype=sig.inputs.dtype)
    if flavor == "sklearn" and model is not None and not hasattr(model, "feature_names_in_"):
        return df.to_numpy()
    if flavor == "xgboost" and model is not None and not _xgb_has_names(model):
        return df.to_numpy()
    return df


def _xgb_has_names(model: Any) -> bool:
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    try:
        return bool(booster.feature_names)
    except Exception:
        return False


# -- load ------------------------------------------------------------------------------------


class LoadedModel:
    """A verified, loaded model: ``predict`` takes rows and returns one answer per row."""

    def __init__(self, path: Path, manifest: Manifest, model: Any, digest: str) -> None:
        self.path = path
        self.manifest = manifest
        self.signature = manifest.signature
        self.flavor = manifest.flavor
        self.digest = digest
        self.model = model

    def __repr__(self) -> str:
        return f"LoadedModel(flavor={self.flavor!r}, path={str(self.path)!r})"

    def _input(self, data: Any, validate: bool) -> Any:
        if self.signature.inputs is None and self.flavor == "python_function":
            return data
        df = self.signature.validate(data) if validate else data
        return _model_input(self.signature, df, self.flavor, self.model)

    def predict(
        self, data: pd.DataFrame | np.ndarray | Any, *, validate: bool = True
    ) -> np.ndarray:
        """Predict for each row of ``data`` (checked against the signature unless told not to).

        Raises ``InvalidArgument`` naming the missing column, wrong type or shape.
        """
        import numpy as np

        X = self._input(data, validate)
        return np.asarray(_fl.predict(self.flavor, self.model, X, self.manifest.flavor_options))

    def predict_proba(
        self, data: pd.DataFrame | np.ndarray | Any, *, validate: bool = True
    ) -> np.ndarray:
        import numpy as np

        X = self._input(data, validate)
        return np.asarray(
            _fl.predict_proba(self.flavor, self.model, X, self.manifest.flavor_options)
        )

    @property
    def has_predict_proba(self) -> bool:
        if self.flavor == "lightgbm":
            return self.manifest.flavor_options.get("model_type") == "classifier"
        if self.flavor == "onnx":
            return len(self.model.get_outputs()) > 1
        return callable(getattr(self.model, "predict_proba", None))

    def input_example(self) -> pd.DataFrame | None:
        if not self.manifest.input_example:
            return None
        data = json.loads((self.path / self.manifest.input_example).read_text("utf-8"))
        return parse_records(data)


def verify_files(path: str | Path, *, expected_digest: str | None = None) -> tuple[Manifest, str]:
    """Check a model folder's manifest and every file's sha256; return (manifest, digest).

    Raises ``NotFound`` without a manifest, ``InvalidArgument`` for a malformed one and
    ``ModelRefused`` when a digest does not match.
    """
    folder = Path(path)
    raw, digest = _read_manifest_json(folder)
    if expected_digest is not None and digest != expected_digest:
        raise ModelRefused(
            f"refusing to load {folder}: its manifest does not match the registered digest",
            {"expected": expected_digest, "got": digest, "file": MANIFEST_NAME},
        )
    manifest = Manifest.from_dict(raw)
    root = folder.resolve()
    for name, want in manifest.files.items():
        fpath = folder / name
        if not fpath.resolve().is_relative_to(root):
            raise ModelRefused(f"refusing to load {folder}: {name} leaves the model folder")
        try:
            got = sha256_file(fpath)[0]
        except FileNotFoundError:
            raise ModelRefused(
                f"refusing to load {folder}: {name} is missing", {"file": name}
            ) from None
        if got != want:
            raise ModelRefused(
                f"refusing to load {folder}: the sha256 of {name} does not match its manifest "
                "(the file was changed after the model was saved)",
                {"file": name, "expected": want, "got": got},
            )
    return manifest, digest


def load_model(
    path: str | Path, *, trust_code: bool = False, expected_digest: str | None = None
) -> LoadedModel:
    """Load the model folder at ``path`` after verifying every file's sha256.

    A ``python_function`` model is a pickle (code): it is refused (``ModelRefused``, a
    ``PermissionDenied``) unless ``trust_code=True``, and even then only when every hash matches.
    """
    folder = Path(path)
    manifest, digest = verify_files(folder, expected_digest=expected_digest)
    if manifest.flavor == "python_function" and not trust_code:
        raise ModelRefused(
            f"refusing to load {folder}: a python_function model is a pickle, which runs code "
            "when loaded; load it with trust_code=True only if you trust who wrote it",
            {"flavor": "python_function"},
        )
    model = _fl.load(manifest.flavor, folder / manifest.model_file, manifest.flavor_options)
    return LoadedModel(folder, manifest, model, digest)
