"""Shipyard's errors, one hierarchy for every surface.

    ShipyardError                 code            HTTP
    +-- InvalidArgument           INVALID_ARGUMENT 400
    +-- Unauthenticated           UNAUTHENTICATED  401
    +-- PermissionDenied          PERMISSION_DENIED 403
    +-- NotFound                  NOT_FOUND        404
    +-- AlreadyExists             ALREADY_EXISTS   409
    +-- Conflict                  CONFLICT         409
    +-- PayloadTooLarge           PAYLOAD_TOO_LARGE 413
    +-- SchemaBehind              SCHEMA_BEHIND    500
    +-- Unavailable               UNAVAILABLE      503  (retryable: a locked or unreachable store)
    +-- Internal                  INTERNAL         500

The server serializes an error as ``{"error": {"code", "message", "details"}}``; the SDK's HTTP
backend rebuilds the same class from ``code``, so a user catches the same exception whether the
SDK runs in-process or against a server.
"""

from __future__ import annotations

from typing import Any


class ShipyardError(Exception):
    code = "INTERNAL"
    http_status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidArgument(ShipyardError):
    code = "INVALID_ARGUMENT"
    http_status = 400

    @classmethod
    def for_field(cls, field: str, message: str, **details: Any) -> InvalidArgument:
        return cls(f"{field}: {message}", {"field": field, **details})


class Unauthenticated(ShipyardError):
    code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(ShipyardError):
    code = "PERMISSION_DENIED"
    http_status = 403


class NotFound(ShipyardError):
    code = "NOT_FOUND"
    http_status = 404


class AlreadyExists(ShipyardError):
    code = "ALREADY_EXISTS"
    http_status = 409


class Conflict(ShipyardError):
    code = "CONFLICT"
    http_status = 409


class PayloadTooLarge(ShipyardError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class SchemaBehind(ShipyardError):
    code = "SCHEMA_BEHIND"
    http_status = 500


class Unavailable(ShipyardError):
    code = "UNAVAILABLE"
    http_status = 503


class Internal(ShipyardError):
    code = "INTERNAL"
    http_status = 500


ERRORS_BY_CODE: dict[str, type[ShipyardError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        Conflict,
        PayloadTooLarge,
        SchemaBehind,
        Unavailable,
        Internal,
    )
}


def error_from_dict(body: dict[str, Any], status: int) -> ShipyardError:
    """Rebuild the exception that a server serialized (the inverse of ``to_dict``)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return Internal(f"HTTP {status}: unexpected error body", {"body": str(body)[:500]})
    cls = ERRORS_BY_CODE.get(str(err.get("code")), Internal)
    return cls(str(err.get("message", "")), err.get("details") or {})
