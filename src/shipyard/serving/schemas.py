"""API types of the endpoints domain: the schema ladder (Create / Update / Public) per entity.

An endpoint's *spec* is what a user asks for: production variants by model URI and weight, an
optional shadow variant, data capture, batching and scaling. A deployment pins each URI to the
version it resolved to, so a rollback serves exactly what was served before, even after an
alias such as ``champion`` has moved.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator

from shipyard.core.errors import InvalidArgument
from shipyard.core.schemas import Model, Page, Slug, invalid_from_validation

M = TypeVar("M", bound=BaseModel)
_SHORT_URI = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9][A-Za-z0-9_.\-]*|/(\d+|latest))$"
)


def normalize_model_uri(v: str) -> str:
    """``fraud@champion`` -> ``models:/fraud@champion``, ``fraud/3`` -> ``models:/fraud/3``;
    ``models:/...`` and ``runs:/...`` URIs are kept as they are."""
    v = v.strip()
    if v.startswith(("models:/", "runs:/")):
        if len(v.split(":/", 1)[1].strip("/")) == 0:
            raise ValueError("the URI names no model")
        return v
    if _SHORT_URI.match(v):
        return f"models:/{v}"
    raise ValueError(
        "expected a model URI: models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH, "
        f"or the short NAME@ALIAS / NAME/VERSION (got {v!r})"
    )


def parse(schema: type[M], data: dict[str, Any]) -> M:
    """``schema`` from a dict, a validation error as ``InvalidArgument`` naming each field.
    (``core.schemas.validate`` takes keyword arguments, and these schemas have a field called
    ``model``, which is that function's first parameter.)"""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from None


ModelUri = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(normalize_model_uri)]


class EndpointStatus(StrEnum):
    creating = "Creating"
    in_service = "InService"
    updating = "Updating"
    failed = "Failed"
    deleting = "Deleting"
    stopped = "Stopped"


# -- the spec -----------------------------------------------------------------------------------


class VariantSpec(Model):
    """A production variant: a model and its share of the traffic (weights are relative)."""

    name: Slug
    model: ModelUri
    weight: float = Field(default=1.0, ge=0, le=1_000_000)


class ShadowSpec(Model):
    """A variant that gets a copy of every request; its answers are recorded, never returned."""

    name: Slug = "shadow"
    model: ModelUri


class CaptureSpec(Model):
    """Record this fraction of requests and responses (JSONL, in the artifact store)."""

    sample_rate: float = Field(ge=0, le=1)


class BatchingSpec(Model):
    """Concurrent requests are served together: up to ``max_batch_size`` rows, waiting at most
    ``max_wait_ms`` for a batch to fill."""

    max_batch_size: int = Field(default=64, ge=1, le=65_536)
    max_wait_ms: float = Field(default=2.0, ge=0, le=10_000)


class ScalingSpec(Model):
    """Worker processes between ``min_workers`` and ``max_workers`` on load; to zero after
    ``idle_to_zero_s`` without requests (the next request cold-starts one)."""

    min_workers: int = Field(default=1, ge=0, le=256)
    max_workers: int = Field(default=1, ge=1, le=256)
    idle_to_zero_s: float | None = Field(default=None, gt=0)
    target_inflight_per_worker: int = Field(default=8, ge=1, le=100_000)

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSpec:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) must not exceed max_workers ({self.max_workers})"
            )
        return self


class MultiModelSpec(Model):
    """Many models behind one server, each loaded on its first request and evicted least
    recently used when the loaded ones pass ``memory_budget_mb``. Keys are the names callers
    use (``/v2/models/{name}/infer``)."""

    models: dict[Slug, ModelUri] = Field(min_length=1, max_length=10_000)
    memory_budget_mb: int = Field(default=1024, ge=1)


class EndpointSpec(Model):
    """What an endpoint serves, as asked (URIs as given, aliases unresolved)."""

    variants: list[VariantSpec] = Field(default_factory=list, max_length=16)
    shadow: ShadowSpec | None = None
    capture: CaptureSpec | None = None
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    multi_model: MultiModelSpec | None = None
    trust_code: bool = False

    def check(self) -> EndpointSpec:
        """Raise ``InvalidArgument`` naming the field when the parts do not fit together."""
        if self.multi_model is None and not self.variants:
            raise InvalidArgument.for_field(
                "variants", "give a model, at least one variant, or multi_model"
            )
        if self.multi_model is not None and self.variants:
            raise InvalidArgument.for_field(
                "variants", "a multi-model endpoint takes multi_model.models, not variants"
            )
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise InvalidArgument.for_field(
                "variants", f"variant names must be unique (got {names})"
            )
        if self.variants and sum(v.weight for v in self.variants) <= 0:
            raise InvalidArgument.for_field(
                "variants", "at least one variant needs a weight above 0"
            )
        if self.shadow is not None and self.shadow.name in names:
            raise InvalidArgument.for_field(
                "shadow.name", f"{self.shadow.name!r} is already the name of a variant"
            )
        return self


class EndpointCreate(Model):
    """Create an endpoint. ``model`` is the short form of one variant named ``primary``."""

    name: Slug
    model: ModelUri | None = None
    variants: list[VariantSpec] | None = Field(default=None, max_length=16)
    shadow: ShadowSpec | None = None
    capture: CaptureSpec | None = None
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    multi_model: MultiModelSpec | None = None
    trust_code: bool = False

    def spec(self) -> EndpointSpec:
        """The spec this asks for; ``InvalidArgument`` names the field that does not fit."""
        given = [k for k in ("model", "variants", "multi_model") if getattr(self, k)]
        if not given:
            raise InvalidArgument.for_field(
                "model", "give a model URI (e.g. fraud@champion), variants or multi_model"
            )
        if len(given) > 1:
            raise InvalidArgument.for_field(
                given[1], "give only one of model, variants and multi_model"
            )
        variants = self.variants or (
            [VariantSpec(name="primary", model=self.model)] if self.model else []
        )
        return EndpointSpec(
            variants=variants,
            shadow=self.shadow,
            capture=self.capture,
            batching=self.batching,
            scaling=self.scaling,
            multi_model=self.multi_model,
            trust_code=self.trust_code,
        ).check()


class EndpointUpdate(Model):
    """Change what an endpoint serves, with no failed request: the new deployment is loaded and
    ready before the old one drains.

    - ``model``: serve this model alone (one variant, keeping the first variant's name);
    - ``variants``: replace the variants;
    - ``weights``: new weights for existing variants, by name;
    - ``shadow``, ``capture``, ``batching``, ``scaling``, ``multi_model``, ``trust_code``:
      replace the setting (``shadow``/``capture`` set to null remove it).
    A field left out is kept as it is.
    """

    model: ModelUri | None = None
    variants: list[VariantSpec] | None = Field(default=None, max_length=16)
    weights: dict[str, float] | None = None
    shadow: ShadowSpec | None = None
    capture: CaptureSpec | None = None
    batching: BatchingSpec | None = None
    scaling: ScalingSpec | None = None
    multi_model: MultiModelSpec | None = None
    trust_code: bool | None = None

    def apply(self, old: EndpointSpec) -> EndpointSpec:
        """The spec after this update; ``InvalidArgument`` names the field that does not fit."""
        if not self.model_fields_set:
            raise InvalidArgument.for_field("body", "nothing to update")
        given = [k for k in ("model", "variants", "weights") if getattr(self, k) is not None]
        if len(given) > 1:
            raise InvalidArgument.for_field(
                given[1], "give only one of model, variants and weights"
            )
        new = old.model_copy(deep=True)
        if self.model is not None:
            name = old.variants[0].name if old.variants else "primary"
            new.variants = [VariantSpec(name=name, model=self.model)]
            new.multi_model = None
        elif self.variants is not None:
            new.variants = list(self.variants)
            new.multi_model = None
        elif self.weights is not None:
            known = {v.name for v in old.variants}
            for name, w in self.weights.items():
                if name not in known:
                    raise InvalidArgument.for_field(
                        f"weights.{name}", f"no such variant (the variants are {sorted(known)})"
                    )
                if not 0 <= w <= 1_000_000:
                    raise InvalidArgument.for_field(
                        f"weights.{name}", f"expected a number from 0 to 1000000, got {w}"
                    )
            new.variants = [
                v.model_copy(update={"weight": self.weights.get(v.name, v.weight)})
                for v in old.variants
            ]
        for key in ("shadow", "capture", "multi_model"):
            if key in self.model_fields_set:
                setattr(new, key, getattr(self, key))
        if self.multi_model is not None:
            new.variants = []
        for key in ("batching", "scaling", "trust_code"):
            if getattr(self, key) is not None:
                setattr(new, key, getattr(self, key))
        return EndpointSpec.model_validate(new.model_dump()).check()


class EndpointRollback(Model):
    """Serve an earlier deployment again: ``to`` is its number (default: the one before)."""

    to: int | None = Field(default=None, ge=1)


# -- what the API returns -----------------------------------------------------------------------


class VariantPublic(Model):
    name: str
    model: str  # the URI as asked, e.g. models:/fraud@champion
    model_name: str | None = None
    model_version: str | None = None
    weight: float = 0.0  # the share of traffic, 0..1 (0 for a shadow)
    requests: int | None = None
    errors: int | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None


class EndpointPublic(Model):
    id: str
    project: str
    name: str
    status: EndpointStatus
    url: str | None = None  # the endpoint's own server: the fast path for callers
    variants: list[VariantPublic]
    shadow: VariantPublic | None = None
    capture: CaptureSpec | None = None
    capture_dir: str | None = None
    batching: BatchingSpec
    scaling: ScalingSpec
    multi_model: MultiModelSpec | None = None
    trust_code: bool = False
    deployment: int
    restarts: int = 0
    last_error: str | None = None
    pid: int | None = None
    # Live, from the endpoint's server: whether it answers predictions now (False while it
    # restarts after a crash or loads its models; None when not asked), and its figures.
    ready: bool | None = None
    workers: int | None = None
    requests: int | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    stats: dict[str, Any] | None = None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime


EndpointsPublic = Page[EndpointPublic]


class DeploymentPublic(Model):
    number: int
    reason: str  # create | update | rollback
    current: bool
    variants: list[VariantPublic]
    shadow: VariantPublic | None = None
    created_by: str | None = None
    created_at: datetime


DeploymentsPublic = Page[DeploymentPublic]


class EndpointEventPublic(Model):
    kind: str
    message: str
    created_at: datetime


EndpointEventsPublic = Page[EndpointEventPublic]
