"""A deployment made concrete: every model URI of a spec pinned to a version and a local folder
(through the registry), and the config file the endpoint's runtime reads.

A resolved deployment is plain JSON, stored with the deployment so that a rollback serves the
same versions again: ``{"variants": [{name, weight, model, pinned, model_name, model_version,
model_path}], "shadow": {...} | null, "multi_model": {name: {...}} | null, "capture_dir"}``,
where ``pinned`` is the URI of exactly that version (``models:/fraud/3`` for
``models:/fraud@champion``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from shipyard.core.errors import ShipyardError
from shipyard.core.ids import new_id
from shipyard.serving.schemas import EndpointSpec


class ResolvedLike(Protocol):
    """What the registry's ``resolve`` returns (``models.uris.ResolvedModel``)."""

    @property
    def name(self) -> str | None: ...
    @property
    def version(self) -> int | str | None: ...
    @property
    def local_path(self) -> Path: ...


# (project, model URI) -> a verified local folder; ``ModelService.resolve``.
Resolver = Callable[[str, str], ResolvedLike]


def pinned(uri: str, name: str | None, version: str | None) -> str:
    if uri.startswith("models:/") and name and version is not None:
        return f"models:/{name}/{version}"
    return uri


def resolve_one(resolve: Resolver, project: str, uri: str, field_name: str) -> dict[str, Any]:
    """One URI, pinned; an error from the registry names ``field_name`` (where it was given)."""
    try:
        r = resolve(project, uri)
    except ShipyardError as exc:
        details = {**exc.details, "field": field_name}
        raise type(exc)(f"{field_name}: {exc.message}", details) from None
    version = None if r.version is None else str(r.version)
    return {
        "model": uri,
        "pinned": pinned(uri, r.name, version),
        "model_name": r.name,
        "model_version": version,
        "model_path": str(Path(r.local_path).resolve()),
    }


def resolve_spec(
    resolve: Resolver, project: str, spec: EndpointSpec, *, shorthand: bool
) -> dict[str, Any]:
    """Pin every URI of ``spec``; weights become shares of the traffic (summing to 1).
    ``shorthand``: the spec came from ``model=...``, so an error names the field ``model``."""
    total = sum(v.weight for v in spec.variants) or 1.0
    variants = []
    for i, v in enumerate(spec.variants):
        where = "model" if shorthand else f"variants.{i}.model"
        variants.append(
            {"name": v.name, "weight": v.weight / total}
            | resolve_one(resolve, project, v.model, where)
        )
    shadow = None
    if spec.shadow is not None:
        shadow = {"name": spec.shadow.name} | resolve_one(
            resolve, project, spec.shadow.model, "shadow.model"
        )
    multi = None
    if spec.multi_model is not None:
        multi = {
            key: resolve_one(resolve, project, uri, f"multi_model.models.{key}")
            for key, uri in spec.multi_model.models.items()
        }
    return {"variants": variants, "shadow": shadow, "multi_model": multi}


def repin(resolve: Resolver, project: str, resolved: dict[str, Any]) -> dict[str, Any]:
    """A stored deployment with its folders fetched again where the local cache lost them
    (by the pinned URI: the same version, whatever an alias says now)."""

    def again(item: dict[str, Any], where: str) -> dict[str, Any]:
        if Path(item["model_path"]).is_dir():
            return item
        fresh = resolve_one(resolve, project, item["pinned"], where)
        return item | {"model_path": fresh["model_path"]}

    out = dict(resolved)
    out["variants"] = [
        again(v, f"variants.{i}.model") for i, v in enumerate(resolved.get("variants") or [])
    ]
    if resolved.get("shadow"):
        out["shadow"] = again(resolved["shadow"], "shadow.model")
    if resolved.get("multi_model"):
        out["multi_model"] = {
            k: again(v, f"multi_model.models.{k}") for k, v in resolved["multi_model"].items()
        }
    return out


def runtime_config(
    name: str,
    endpoint_dir: Path,
    port: int,
    spec: EndpointSpec,
    resolved: dict[str, Any],
    auth_token: str | None = None,
) -> dict[str, Any]:
    """The config file the runtime reads (the contract in ``serving/runtime/config.py``)."""

    def variant(v: dict[str, Any], weight: float | None) -> dict[str, Any]:
        out = {
            "name": v["name"],
            "model_path": v["model_path"],
            "model_name": v["model_name"],
            "model_version": v["model_version"],
        }
        if weight is not None:
            out["weight"] = weight
        return out

    multi = None
    if spec.multi_model is not None and resolved.get("multi_model"):
        multi = {
            "models_dir": str(place_models(endpoint_dir, resolved["multi_model"])),
            "memory_budget_mb": spec.multi_model.memory_budget_mb,
        }
    capture = None
    if spec.capture is not None and resolved.get("capture_dir"):
        capture = {"sample_rate": spec.capture.sample_rate, "dir": resolved["capture_dir"]}
    return {
        "endpoint": name,
        "host": "127.0.0.1",
        "port": port,
        "variants": [variant(v, v["weight"]) for v in resolved.get("variants") or []],
        "shadow": variant(resolved["shadow"], None) if resolved.get("shadow") else None,
        "capture": capture,
        "batching": spec.batching.model_dump(),
        "multi_model": multi,
        "scaling": spec.scaling.model_dump(),
        "trust_code": spec.trust_code,
        "auth_token": auth_token,
    }


def place_models(endpoint_dir: Path, models: dict[str, dict[str, Any]]) -> Path:
    """The folder a multi-model endpoint serves from: ``<name>/<version>/`` per model.

    The runtime refuses links that leave this folder, so each model folder is placed in it with
    hard links to the registry's cache (a copy where the two are on different disks). A model
    is staged under ``.staging`` and renamed into place, so the runtime never sees a half-made
    folder; names no longer served are removed."""
    base = endpoint_dir / "models"
    staging = base / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, str] = {}
    for key, item in models.items():
        version = str(item.get("model_version") or "1")
        wanted[key] = version
        final = base / key / version
        if final.is_dir():
            continue
        tmp = staging / new_id()
        shutil.copytree(item["model_path"], tmp, copy_function=_link_or_copy)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    for child in base.iterdir():
        if child.name == ".staging":
            continue
        if child.name not in wanted:
            shutil.rmtree(child, ignore_errors=True)
            continue
        for version_dir in child.iterdir():
            if version_dir.name != wanted[child.name]:
                shutil.rmtree(version_dir, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return base


def describe(resolved: dict[str, Any]) -> str:
    """One line for the events: ``blue=models:/fraud/3 (90%), shadow canary=models:/fraud/4``."""
    parts = [
        f"{v['name']}={v['pinned']} ({v['weight'] * 100:.0f}%)"
        for v in resolved.get("variants") or []
    ]
    if resolved.get("shadow"):
        parts.append(f"shadow {resolved['shadow']['name']}={resolved['shadow']['pinned']}")
    if resolved.get("multi_model"):
        parts.append(f"{len(resolved['multi_model'])} models")
    return ", ".join(parts)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
