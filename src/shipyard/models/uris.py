"""Model URIs and the local cache of model folders (shared by the service and the HTTP SDK).

``models:/<name>/<version>``, ``models:/<name>/latest``, ``models:/<name>@<alias>`` and
``runs:/<run_id>/<artifact path>``. A resolved folder lives at ``<cache>/<digest>``, where the
digest is the sha256 of its manifest: it is fetched under a temporary name, every file checked
against its sha256, then renamed into place, so a cached folder is complete or absent, and a
moved alias simply resolves to another folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shipyard.core.artifacts import clean_relpath, sha256_file
from shipyard.core.errors import InvalidArgument
from shipyard.models.flavors import ModelRefused
from shipyard.models.schemas import ModelFile, ResolvedModelInfo

MANIFEST_NAME = "shipyard-model.json"


@dataclass(frozen=True)
class ModelUri:
    scheme: str  # "models" or "runs"
    name: str | None = None
    version: int | None = None  # None with an alias, or for "latest"
    alias: str | None = None
    run_id: str | None = None
    path: str | None = None

    @property
    def latest(self) -> bool:
        return self.scheme == "models" and self.version is None and self.alias is None


def parse_model_uri(uri: str, field: str = "uri") -> ModelUri:
    """Parse a model URI; raises ``InvalidArgument`` (naming ``field``) saying what is expected."""
    expected = (
        "expected models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/latest "
        "or runs:/<run_id>/<path>"
    )
    if not isinstance(uri, str) or not uri:
        raise InvalidArgument.for_field(field, expected)
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :].strip("/")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if not name or not alias or "/" in name or "/" in alias:
                raise InvalidArgument.for_field(field, f"{expected}, got {uri!r}")
            return ModelUri("models", name=name, alias=alias)
        name, _, version = rest.partition("/")
        if not name or not version or "/" in version:
            raise InvalidArgument.for_field(field, f"{expected}, got {uri!r}")
        if version == "latest":
            return ModelUri("models", name=name)
        if not version.isdigit() or int(version) < 1:
            raise InvalidArgument.for_field(
                field, f"version must be a positive integer or 'latest', got {version!r}"
            )
        return ModelUri("models", name=name, version=int(version))
    if uri.startswith("runs:/"):
        rest = uri[len("runs:/") :].strip("/")
        run_id, _, path = rest.partition("/")
        if not run_id or not path:
            raise InvalidArgument.for_field(field, f"{expected}, got {uri!r}")
        return ModelUri("runs", run_id=run_id, path=clean_relpath(path, field))
    raise InvalidArgument.for_field(field, f"{expected}, got {uri!r}")


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI resolved to a verified local folder, ready for ``format.load_model``."""

    name: str | None
    version: int | None
    local_path: Path
    digest: str
    flavor: str
    uri: str


Fetch = Callable[[ModelFile, Path], None]


def materialize(cache_root: Path, info: ResolvedModelInfo, fetch: Fetch) -> ResolvedModel:
    """The local folder for ``info``: from the cache, or fetched file by file and verified.

    ``fetch(file, target)`` writes one file's bytes to ``target``. Raises ``ModelRefused`` when
    a file's sha256 differs from the registry's record.
    """
    dest = cache_root / info.digest
    if not (dest / MANIFEST_NAME).is_file():
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = cache_root / f".{info.digest}.{uuid.uuid4().hex[:8]}.part"
        tmp.mkdir()
        try:
            root = tmp.resolve()
            for f in info.files:
                target = (tmp / clean_relpath(f.path, "path")).resolve()
                if not target.is_relative_to(root):
                    raise InvalidArgument.for_field("path", f"{f.path!r} leaves the model folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                fetch(f, target)
                got = sha256_file(target)[0]
                if got != f.digest:
                    raise ModelRefused(
                        f"model file {f.path!r} arrived corrupt (sha256 mismatch)",
                        {"file": f.path, "expected": f.digest, "got": got},
                    )
            manifest = tmp / MANIFEST_NAME
            if (
                not manifest.is_file()
                or hashlib.sha256(manifest.read_bytes()).hexdigest() != info.digest
            ):
                raise ModelRefused(
                    f"{info.uri}: the model's manifest does not match its digest",
                    {"expected": info.digest},
                )
            try:
                os.replace(tmp, dest)
            except OSError:
                if not (dest / MANIFEST_NAME).is_file():  # not a concurrent fetch that won
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModel(
        name=info.name,
        version=info.version,
        local_path=dest,
        digest=info.digest,
        flavor=info.flavor,
        uri=info.uri,
    )
