"""From what a user types (``churn@champion``, ``models:/churn/3``, ``runs:/<id>/model``, or a
model folder on this machine) to a pinned model: a name, a version and a local folder.

Aliases move; a job must not. A batch job is pinned to the version its alias named when the job
was created, and resolves ``models:/<name>/<version>`` again when it resumes.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shipyard.core.errors import InvalidArgument, NotFound

# The short forms the endpoints accept too: NAME@ALIAS, NAME/VERSION, NAME/latest.
_SHORT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9][A-Za-z0-9_.\-]*|/(\d+|latest))$")
MANIFEST_NAME = "shipyard-model.json"


class ModelRegistry(Protocol):
    """What inference needs from the registry (``shipyard.models``' ``ModelService``)."""

    def resolve(self, project: str, uri: str) -> Any:
        """A ``ResolvedModel`` with ``name``, ``version`` and ``local_path`` (a verified folder,
        cached locally). Raises ``NotFound`` for an unknown model, version or alias."""
        ...


@dataclass(frozen=True)
class PinnedModel:
    uri: str  # as the user gave it, normalised
    name: str | None
    version: str | None
    path: Path
    digest: str | None = None

    @property
    def pinned_uri(self) -> str:
        if self.name is not None and self.version is not None:
            return f"models:/{self.name}/{self.version}"
        return self.uri


def normalize_ref(ref: str, field: str = "model") -> str:
    """``churn@champion`` -> ``models:/churn@champion``; ``churn/3`` -> ``models:/churn/3``;
    a URI or a path is returned as is."""
    ref = ref.strip()
    if not ref:
        raise InvalidArgument.for_field(field, "expected a model URI such as models:/churn/3")
    if ref.startswith(("models:/", "runs:/")):
        return ref
    if _SHORT.match(ref):
        return f"models:/{ref}"
    return ref


class ModelResolver:
    """Resolve references for one Shipyard. ``allow_paths``: whether a model folder given by
    path is accepted (only when the caller may read this machine's files: auth off)."""

    def __init__(self, registry: ModelRegistry | None, allow_paths: bool) -> None:
        self.registry = registry
        self.allow_paths = allow_paths

    def resolve(self, project: str, ref: str, field: str = "model") -> PinnedModel:
        uri = normalize_ref(ref, field)
        if uri.startswith(("models:/", "runs:/")):
            if self.registry is None:
                raise InvalidArgument.for_field(field, "this Shipyard has no model registry")
            r = self.registry.resolve(project, uri)
            version = getattr(r, "version", None)
            return PinnedModel(
                uri=uri,
                name=getattr(r, "name", None),
                version=None if version is None else str(version),
                path=Path(r.local_path),
                digest=getattr(r, "digest", None),
            )
        if not self.allow_paths:
            raise InvalidArgument.for_field(
                field,
                "expected models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH, or the "
                f"short NAME@ALIAS / NAME/VERSION, got {ref!r}",
            )
        path = Path(uri).expanduser()
        if not path.is_absolute():
            raise InvalidArgument.for_field(
                field, f"a model folder must be an absolute path: {ref}"
            )
        if not (path / MANIFEST_NAME).is_file():
            raise NotFound(
                f"{field}: no model at {path} ({MANIFEST_NAME} is missing)", {"field": field}
            )
        return PinnedModel(uri=str(path), name=None, version=None, path=path)


class ModelCache:
    """Loaded models by folder and digest, least recently used evicted past ``size``."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, str | None, bool], Any] = OrderedDict()
        self._loading: dict[tuple[str, str | None, bool], threading.Lock] = {}

    def get(self, pinned: PinnedModel, trust_code: bool = False) -> Any:
        from shipyard.models.format import load_model

        key = (str(pinned.path), pinned.digest, trust_code)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            loading = self._loading.setdefault(key, threading.Lock())
        # One loader per model: a second request for it waits here, others are not held up.
        with loading:
            with self._lock:
                model = self._models.get(key)
            if model is None:
                model = load_model(
                    pinned.path, trust_code=trust_code, expected_digest=pinned.digest
                )
            with self._lock:
                self._models[key] = model
                self._models.move_to_end(key)
                self._loading.pop(key, None)
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
        return model
