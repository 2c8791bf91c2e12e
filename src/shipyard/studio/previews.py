"""A run's artifacts as Studio shows them: a folder tree, and a preview of the first bytes of a
text, JSON, CSV or image file. Pure functions over what ``TrackingService`` returns."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from shipyard.studio.views import fmt_bytes
from shipyard.tracking.schemas import ArtifactPublic


@dataclass
class TreeNode:
    name: str
    path: str
    is_dir: bool
    size: int | None = None
    children: list[TreeNode] = field(default_factory=list)


def artifact_tree(files: Iterable[ArtifactPublic]) -> list[TreeNode]:
    """Nested folders from a recursive listing of file paths; folders first, then by name."""
    root = TreeNode("", "", True)
    for f in files:
        if f.is_dir:
            continue
        node = root
        parts = f.path.split("/")
        for i, part in enumerate(parts[:-1]):
            sub = next((c for c in node.children if c.is_dir and c.name == part), None)
            if sub is None:
                sub = TreeNode(part, "/".join(parts[: i + 1]), True)
                node.children.append(sub)
            node = sub
        node.children.append(TreeNode(parts[-1], f.path, False, f.size))

    def sort(n: TreeNode) -> None:
        n.children.sort(key=lambda c: (not c.is_dir, c.name.lower()))
        for c in n.children:
            sort(c)

    sort(root)
    return root.children


PREVIEW_BYTES = 256 * 1024
CSV_ROWS = 50
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".svg": "image/svg+xml",
}
TEXT_SUFFIXES = {
    ".txt",
    ".log",
    ".md",
    ".py",
    ".yaml",
    ".yml",
    ".toml",
    ".cfg",
    ".ini",
    ".xml",
    ".html",
    ".sh",
    ".jsonl",
    ".ndjson",
    ".sql",
    ".r",
    ".ipynb",
    "",
}


@dataclass
class Preview:
    path: str
    size: int | None
    kind: str  # text | json | csv | image | binary
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)
    truncated: bool = False
    note: str = ""


def read_head(chunks: Iterator[bytes], limit: int = PREVIEW_BYTES) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of a stream and whether there was more. Closes the stream."""
    buf = bytearray()
    more = False
    try:
        for chunk in chunks:
            buf += chunk
            if len(buf) > limit:
                more = True
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return bytes(buf[:limit]), more


def preview_kind(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in IMAGE_TYPES:
        return "image"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv"):
        return "csv"
    return "text" if suffix in TEXT_SUFFIXES else "other"


def make_preview(path: str, size: int | None, head: bytes, truncated: bool) -> Preview:
    kind = preview_kind(path)
    if kind == "image":
        return Preview(path, size, "image")
    if b"\x00" in head[:8192]:
        return Preview(path, size, "binary", note="a binary file: download it to open it")
    text = head.decode("utf-8", errors="replace")
    if kind == "json" and not truncated:
        try:
            return Preview(path, size, "json", text=json.dumps(json.loads(text), indent=2))
        except ValueError:
            return Preview(path, size, "text", text=text, note="not valid JSON; shown as text")
    if kind == "csv":
        delim = "\t" if path.lower().endswith(".tsv") else ","
        lines = text.splitlines()
        if truncated and lines:
            lines = lines[:-1]  # the last line may be cut short
        rows = list(csv.reader(lines[: CSV_ROWS + 1], delimiter=delim))
        more = truncated or len(lines) > CSV_ROWS + 1
        note = f"first {len(rows) - 1} rows" if more and rows else ""
        return Preview(path, size, "csv", rows=rows, truncated=more, note=note)
    if kind == "other" and text.count("\ufffd") > len(head) // 100:
        return Preview(path, size, "binary", note="a binary file: download it to open it")
    note = f"first {fmt_bytes(len(head))} of {fmt_bytes(size)}" if truncated else ""
    return Preview(path, size, "text", text=text, truncated=truncated, note=note)
