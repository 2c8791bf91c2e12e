"""A job's input channels: where each comes from (a local path, or a remote URI read through
fsspec) staged into ``input/<channel>/``, and the environment names they are given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument


def channel_env_name(channel: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", channel.upper())


# -- staging inputs -----------------------------------------------------------------------------


def _link(src: Path, dest: Path) -> None:
    if dest.is_symlink() or dest.exists():
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    try:
        os.symlink(src, dest, target_is_directory=src.is_dir())
    except OSError:  # a filesystem without symlinks: copy
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy2(src, dest)


def _storage_options(uri: str) -> dict[str, Any]:
    """fsspec options (endpoint, keys) for a remote input: ``SHIPYARD_INPUT_STORAGE_OPTIONS``
    (JSON, from the job's ``environment``) when set; else the artifact store's own options when
    the input is on the same protocol (an S3 deployment reading its own bucket); else none, and
    the library's defaults apply (``AWS_*`` variables, instance credentials)."""
    raw = os.environ.get("SHIPYARD_INPUT_STORAGE_OPTIONS", "")
    field = "environment.SHIPYARD_INPUT_STORAGE_OPTIONS"
    if not raw:
        root = os.environ.get("SHIPYARD_ARTIFACT_ROOT", "")
        if uri.split("://", 1)[0] != root.split("://", 1)[0]:
            return {}
        raw = os.environ.get("SHIPYARD_ARTIFACT_STORAGE_OPTIONS", "")
        field = "SHIPYARD_ARTIFACT_STORAGE_OPTIONS"
    if not raw:
        return {}
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument.for_field(field, f"expected a JSON object: {exc}") from None
    if not isinstance(opts, dict):
        raise InvalidArgument.for_field(field, "expected a JSON object")
    return opts


def _download(name: str, uri: str, dest: Path) -> None:
    """Copy a remote file, or every file under a remote folder, into ``dest``."""
    import fsspec

    from shipyard.core.artifacts import clean_relpath

    try:
        fs, path = fsspec.core.url_to_fs(uri, **_storage_options(uri))
        path = path.rstrip("/")
        files = [path] if fs.isfile(path) else sorted(fs.find(path))
    except (OSError, ValueError, ImportError) as exc:
        raise InvalidArgument.for_field(f"inputs.{name}", f"cannot read {uri}: {exc}") from None
    if not files:
        raise InvalidArgument.for_field(f"inputs.{name}", f"{uri} holds no files")
    for f in files:
        rel = f.rsplit("/", 1)[-1] if f == path else f[len(path) :].lstrip("/")
        target = dest / clean_relpath(rel, f"inputs.{name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        fs.get_file(f, str(tmp))
        os.replace(tmp, target)


def stage_channel(name: str, src: str, dest: Path, base: Path) -> None:
    """Make ``dest`` a folder holding the channel's files: links to a local file or to each
    entry of a local folder (relative paths are relative to ``base``), or downloaded copies of
    a remote (``s3://...``) file or folder."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if "://" in src and not src.startswith("file://"):
        _download(name, src, dest)
        return
    p = Path(src.removeprefix("file://")).expanduser()
    if not p.is_absolute():
        p = base / p
    p = p.resolve()
    if not p.exists():
        raise InvalidArgument.for_field(f"inputs.{name}", f"{p} does not exist")
    if p.is_dir():
        for child in sorted(p.iterdir()):
            _link(child, dest / child.name)
    else:
        _link(p, dest / p.name)
