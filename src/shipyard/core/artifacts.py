"""The artifact store: content-addressed bytes behind fsspec. The only code that touches them.

Blobs live at ``<root>/blobs/<d[:2]>/<d[2:4]>/<d>`` where ``d`` is the sha256 of the content, so
identical files logged by many runs are stored once. A blob is written under a temporary name,
its digest checked, then renamed into place (an object store's PUT is already all-or-nothing),
so a blob is either complete and verified or absent. Reads verify the digest again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from shipyard.core.errors import Internal, InvalidArgument, NotFound, PayloadTooLarge

CHUNK = 1024 * 1024


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def clean_relpath(path: str, field: str = "path") -> str:
    """Normalise an artifact path once and refuse one that would leave its run.

    Returns a POSIX relative path without ``.`` segments; raises ``InvalidArgument`` for an
    absolute path, a ``..`` segment, a backslash, a NUL or an empty result.
    """
    if not isinstance(path, str) or not path:
        raise InvalidArgument.for_field(field, "expected a non-empty relative path")
    if "\x00" in path or "\\" in path:
        raise InvalidArgument.for_field(field, "must not contain NUL or backslash", path=path)
    p = PurePosixPath(path)
    if p.is_absolute() or path.startswith("/"):
        raise InvalidArgument.for_field(field, "must be relative to the run", path=path)
    parts = [s for s in p.parts if s not in ("", ".")]
    if any(s == ".." for s in parts):
        raise InvalidArgument.for_field(field, "must not contain '..'", path=path)
    if not parts:
        raise InvalidArgument.for_field(field, "expected a non-empty relative path", path=path)
    clean = "/".join(parts)
    if len(clean) > 1024:
        raise InvalidArgument.for_field(field, "longer than 1024 characters")
    return clean


class ArtifactStore:
    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root = root.rstrip("/")
        self.is_local = "://" not in root or root.startswith("file://")
        self._fs: Any = None
        if self.is_local:
            self.root = str(Path(root.removeprefix("file://")).expanduser().resolve())
            Path(self.root, "blobs").mkdir(parents=True, exist_ok=True)
            Path(self.root, "tmp").mkdir(parents=True, exist_ok=True)
        else:  # made now, so that a missing driver or a bad option fails at start
            import fsspec

            protocol = root.split("://", 1)[0]
            self._fs = fsspec.filesystem(protocol, **(storage_options or {}))

    @property
    def fs(self) -> Any:
        """The fsspec filesystem. A local folder's is made on first use: a server that has not
        touched an artifact yet does without fsspec (about 1 MiB)."""
        if self._fs is None:
            import fsspec

            self._fs = fsspec.filesystem("file")
        return self._fs

    def _blob(self, digest: str) -> str:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidArgument.for_field("digest", "expected a lowercase sha256 hex digest")
        return f"{self.root}/blobs/{digest[:2]}/{digest[2:4]}/{digest}"

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._blob(digest)))

    def put_file(
        self, local_path: str | os.PathLike[str], expected: str | None = None
    ) -> tuple[str, int]:
        """Store a local file; return its (sha256, size). Raises if ``expected`` differs."""
        digest, size = sha256_file(local_path)
        if expected is not None and expected != digest:
            raise InvalidArgument.for_field(
                "digest",
                "content does not match the declared sha256",
                expected=expected,
                got=digest,
            )
        target = self._blob(digest)
        if self.fs.exists(target):
            return digest, size
        if self.is_local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(self.root, "tmp", uuid.uuid4().hex)
            try:
                shutil.copyfile(local_path, tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                if sha256_file(tmp)[0] != digest:
                    raise Internal("artifact changed while it was being stored; nothing was kept")
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            self.fs.put_file(str(local_path), target)
        return digest, size

    def put_stream(
        self, chunks: Iterable[bytes], expected: str | None = None, max_bytes: int | None = None
    ) -> tuple[str, int]:
        """Store bytes from an iterator (an upload), spooled to a temporary file first."""
        fd, tmp = tempfile.mkstemp(prefix="shipyard-upload-")
        try:
            size = 0
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(
                            f"artifact larger than the limit of {max_bytes} bytes",
                            {"field": "body", "limit": max_bytes},
                        )
                    f.write(chunk)
            return self.put_file(tmp, expected)
        finally:
            os.unlink(tmp)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put_stream([data])

    def open(self, digest: str) -> BinaryIO:
        try:
            return self.fs.open(self._blob(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"artifact content {digest} is missing from the store") from None

    def iter_verified(self, digest: str) -> Iterator[bytes]:
        """Yield the content in chunks; raise ``Internal`` at the end if it does not match."""
        h = hashlib.sha256()
        with self.open(digest) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                yield chunk
        if h.hexdigest() != digest:
            raise Internal(f"artifact content {digest} is corrupt in the store")

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> None:
        """Copy a blob to ``dest`` (verified, written under a temporary name, then renamed)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with open(tmp, "wb") as out:
                for chunk in self.iter_verified(digest):
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def read_bytes(self, digest: str) -> bytes:
        return b"".join(self.iter_verified(digest))

    # -- named files: data other tools read by path, not by content ---------------------------

    def put_named(self, key: str, local_path: str | os.PathLike[str]) -> str:
        """Store a file at ``<root>/<key>`` (an endpoint's captured requests, say), complete or
        not at all; return its full path in the store."""
        key = clean_relpath(key, "key")
        if key.split("/", 1)[0] in ("blobs", "tmp"):
            raise InvalidArgument.for_field("key", "blobs/ and tmp/ belong to the store")
        target = f"{self.root}/{key}"
        if self.is_local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(self.root, "tmp", uuid.uuid4().hex)
            try:
                shutil.copyfile(local_path, tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            self.fs.put_file(str(local_path), target)  # an object store's put is atomic
        return target

    def list_named(self, prefix: str) -> list[str]:
        """The keys of the named files under ``prefix`` (sorted; empty when there are none)."""
        prefix = clean_relpath(prefix, "prefix")
        base = f"{self.root}/{prefix}"
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root.split("://", 1)[-1] if not self.is_local else self.root
        return sorted(str(f).split("://", 1)[-1].removeprefix(root + "/") for f in found)

    def read_named(self, key: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(f"{self.root}/{clean_relpath(key, 'key')}")
        except FileNotFoundError:
            raise NotFound(f"no file {key!r} in the artifact store", {"field": "key"}) from None
        return data

    def delete(self, digest: str) -> int:
        """Delete a blob; return the bytes freed (0 if it was absent)."""
        path = self._blob(digest)
        try:
            size = int(self.fs.size(path))
            self.fs.rm_file(path)
        except FileNotFoundError:
            return 0
        return size
