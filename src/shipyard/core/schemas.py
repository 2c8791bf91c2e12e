"""Pydantic building blocks shared by every domain's schemas."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shipyard.core.errors import InvalidArgument

T = TypeVar("T")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _slug(v: str) -> str:
    if not _NAME_RE.match(v):
        raise ValueError(
            "expected letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return v


# A name that appears in URLs (projects, users).
Slug = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_slug)]
# A display name (experiments, runs): anything printable, bounded.
Name = Annotated[str, Field(min_length=1, max_length=256)]
Key = Annotated[str, Field(min_length=1, max_length=250)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, defer_build=True)


def deferred_models() -> list[type[Model]]:
    """The ``Model`` classes defined so far whose validators are not built yet: they build
    them on first use (``defer_build``), so that a server builds only those it uses."""
    found: list[type[Model]] = []
    pending: list[type[Model]] = list(Model.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__pydantic_complete__:
            found.append(cls)
    return found


def build_deferred_models() -> int:
    """Build every model ``deferred_models`` lists; return how many were built. A process that
    forks workers calls it first, so that no worker builds the same models again. A model that
    cannot be built yet (a forward reference not defined so far) is left to its first use."""
    from pydantic.errors import PydanticUserError

    built = 0
    for cls in deferred_models():
        try:
            built += bool(cls.model_rebuild())
        except PydanticUserError:
            continue
    return built


class Page(Model, Generic[T]):
    """One page of a list: ``next_page_token`` is None on the last page."""

    data: list[T]
    count: int | None = None  # total matches, where it is cheap to know
    next_page_token: str | None = None


class Timestamps(Model):
    created_at: datetime
    updated_at: datetime


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], /, **data: object) -> M:
    """Build a schema from keyword arguments, turning a validation error into InvalidArgument."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from None


def invalid_from_validation(exc: Exception) -> InvalidArgument:
    """One readable InvalidArgument naming every bad field of a Pydantic ValidationError."""
    errors = exc.errors() if hasattr(exc, "errors") else []  # type: ignore[attr-defined]
    parts = []
    fields = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body",)) or "body"
        fields.append({"field": loc, "message": e.get("msg", ""), "type": e.get("type", "")})
        parts.append(f"{loc}: {e.get('msg', '')}")
    first = fields[0]["field"] if fields else "body"
    return InvalidArgument("; ".join(parts) or str(exc), {"field": first, "errors": fields})
