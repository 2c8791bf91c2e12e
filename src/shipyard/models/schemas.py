"""API types of the model registry: the schema ladder per entity (Create / Update / Public)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from shipyard.core.schemas import Key, Model, Page
from shipyard.tracking.schemas import DatasetInput, RunPublic

TagValue = Annotated[str, Field(max_length=8000)]
Description = Annotated[str, Field(max_length=20_000)]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
# Words a model URI already gives a meaning to (``models:/churn/latest``).
RESERVED_ALIASES = {"latest"}


def _model_name(v: str) -> str:
    if not _NAME_RE.match(v):
        raise ValueError(
            "expected letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return v


def _alias(v: str) -> str:
    if not _ALIAS_RE.match(v):
        raise ValueError(
            "expected letters, digits, '_' or '-', starting with a letter or '_' "
            "(a number would read as a version)"
        )
    if v.lower() in RESERVED_ALIASES:
        raise ValueError(f"{v!r} is reserved: models:/<name>/latest already means the newest")
    return v


# A model's name appears in URIs (models:/<name>/<version>) and URLs.
ModelName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_model_name)]
AliasName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_alias)]


class ApprovalStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


# -- registered models ------------------------------------------------------------------------


class RegisteredModelCreate(Model):
    name: ModelName
    description: Description = ""
    tags: dict[Key, TagValue] = Field(default_factory=dict)


class RegisteredModelUpdate(Model):
    description: Description | None = None


class RegisteredModelPublic(Model):
    id: str
    project: str
    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]  # alias -> version
    latest_version: int | None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime


RegisteredModelsPublic = Page[RegisteredModelPublic]


# -- versions ---------------------------------------------------------------------------------


class ModelVersionCreate(Model):
    """A version of a registered model, from a model folder logged in a run."""

    source: str = Field(min_length=1, max_length=2048, description="runs:/<run_id>/<path>")
    description: Description = ""
    tags: dict[Key, TagValue] = Field(default_factory=dict)


class RegisterModel(ModelVersionCreate):
    """Create the registered model if needed, then a version of it (``sy.register_model``)."""

    name: ModelName


class ModelVersionUpdate(Model):
    description: Description | None = None


class ModelFile(Model):
    path: str  # relative to the model folder
    digest: str
    size: int


class ModelVersionPublic(Model):
    id: str
    project: str
    name: str
    version: int
    source_uri: str
    run_id: str | None
    source_path: str | None
    digest: str  # sha256 of the model folder's manifest (which lists every file's sha256)
    size: int
    flavor: str
    signature: dict[str, Any] | None
    approval_status: ApprovalStatus
    description: str
    tags: dict[str, str]
    aliases: list[str]
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


ModelVersionsPublic = Page[ModelVersionPublic]


class SearchModelVersions(Model):
    filter: str | None = Field(default=None, max_length=10_000)
    order_by: list[str] | None = None
    page_size: int = Field(default=100, ge=1, le=10_000)
    page_token: str | None = None


class TagSet(Model):
    key: Key
    value: TagValue


class AliasSet(Model):
    version: int = Field(ge=1)


class ApprovalCreate(Model):
    status: ApprovalStatus
    comment: str = Field(default="", max_length=20_000)


class ApprovalPublic(Model):
    status: ApprovalStatus
    actor: str | None
    comment: str
    created_at: datetime


class ModelVersionLineage(Model):
    """Where a version came from: its run, the run's dataset inputs, its approval history."""

    version: ModelVersionPublic
    run: RunPublic | None
    run_missing: bool = False  # the source run was purged
    datasets: list[DatasetInput]
    approvals: list[ApprovalPublic]


class ResolvedModelInfo(Model):
    """What a model URI points at: enough to fetch and verify its folder."""

    uri: str
    name: str | None
    version: int | None
    run_id: str | None
    source_path: str | None
    digest: str
    flavor: str
    files: list[ModelFile]
