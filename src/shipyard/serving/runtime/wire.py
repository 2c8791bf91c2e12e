"""Content types and the error body, shared by the server and the workers (no numpy here)."""

from __future__ import annotations

import orjson

JSON_CT = b"application/json"
BINARY_CT = b"application/octet-stream"
CSV_CT = b"text/csv"


def error_body(message: str) -> bytes:
    """``{"error": message}``: the Open Inference Protocol's error object, used on every route."""
    return orjson.dumps({"error": message})
