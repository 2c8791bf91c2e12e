"""The fluent model API: ``sy.log_model``, ``sy.register_model``, ``sy.load_model``.

``log_model`` saves the model folder (``models.format.save_model``) to a temporary folder and
logs it as artifacts of the active run (starting one when none is active, as ``log_metric``
does); ``register_model`` makes it a version of a registered model; ``load_model`` fetches a
version (or a run's model) into the local cache by digest, verifies it and loads it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.models.format import LoadedModel, Signature, save_model
from shipyard.models.schemas import ModelVersionPublic
from shipyard.sdk import fluent


@dataclass(frozen=True)
class LoggedModel:
    """A model logged in a run: ``uri`` (``runs:/<run_id>/<path>``) registers or loads it."""

    uri: str
    run_id: str
    artifact_path: str
    flavor: str
    signature: dict[str, Any]
    digest: str  # sha256 of the folder's manifest
    registered_version: ModelVersionPublic | None = None


def log_model(
    model: object,
    artifact_path: str = "model",
    *,
    input_example: object = None,
    signature: Signature | None = None,
    flavor: str | None = None,
    registered_model_name: str | None = None,
) -> LoggedModel:
    """Save ``model`` as a model folder in the active run under ``artifact_path``.

    The flavor (sklearn, lightgbm, xgboost, onnx, python_function) is detected from the model;
    the signature is inferred from ``input_example`` (``X[:5]``). With
    ``registered_model_name`` the logged model also becomes a new version of that model.
    """
    import hashlib

    run = fluent._current()
    with tempfile.TemporaryDirectory(prefix="shipyard-model-") as tmp:
        folder = Path(tmp) / "model"
        manifest = save_model(
            model, folder, flavor=flavor, input_example=input_example, signature=signature
        )
        digest = hashlib.sha256((folder / "shipyard-model.json").read_bytes()).hexdigest()
        run.client.log_artifact(run.id, folder, artifact_path)
    uri = f"runs:/{run.id}/{artifact_path.strip('/')}"
    version = None
    if registered_model_name is not None:
        version = run.client.register_model(uri, registered_model_name)
    return LoggedModel(
        uri=uri,
        run_id=run.id,
        artifact_path=artifact_path.strip("/"),
        flavor=manifest.flavor,
        signature=manifest.signature.to_dict(),
        digest=digest,
        registered_version=version,
    )


def register_model(
    model_uri: str, name: str, *, description: str = "", tags: dict[str, str] | None = None
) -> ModelVersionPublic:
    """Register ``runs:/<run_id>/<path>`` as a new version of ``name`` (created if needed)."""
    return fluent.get_client().register_model(model_uri, name, description, tags)


def load_model(model_uri: str, *, trust_code: bool = False) -> LoadedModel:
    """Load ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/<name>/latest``,
    ``runs:/<run_id>/<path>`` or a local model folder, after checking every file's sha256.
    A ``python_function`` model is a pickle: it loads only with ``trust_code=True``."""
    return fluent.get_client().load_model(model_uri, trust_code=trust_code)
