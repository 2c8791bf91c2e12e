"""One settings object, read from ``SHIPYARD_*`` environment variables and built on demand.

Nothing is built at import time: the server's app factory and the SDK's ``init`` each call
``Settings()`` (or take one) so that tests and embedded use can run several side by side.

``Settings(**values)`` takes each field from ``values``, else from ``SHIPYARD_<FIELD>`` (the
name in any case), else its default; a list or a mapping is read from the variable as JSON.
That is all this project asked of pydantic-settings, which also loaded its dotenv, secrets,
cloud and command-line sources into every process (about 1.3 MiB of an idle server).
"""

from __future__ import annotations

import ipaddress
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shipyard.core.errors import InvalidArgument
from shipyard.core.schemas import Slug, invalid_from_validation

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ENV_PREFIX = "SHIPYARD_"
# Annotations whose environment value is JSON: a list, a mapping, a set or a tuple.
_JSON_ORIGINS = (list, dict, set, frozenset, tuple)


def _reads_json(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_reads_json(a) for a in typing.get_args(annotation))
    return (origin or annotation) in _JSON_ORIGINS


def _from_environment(model: type[BaseModel], given: dict[str, Any]) -> dict[str, Any]:
    """The fields not in ``given`` that a ``SHIPYARD_<FIELD>`` variable sets (any case)."""
    found = {
        name[len(ENV_PREFIX) :].lower(): value
        for name, value in os.environ.items()
        if name[: len(ENV_PREFIX)].upper() == ENV_PREFIX
    }
    values: dict[str, Any] = {}
    for field, info in model.model_fields.items():
        if field in given or field not in found:
            continue
        raw = found[field]
        if _reads_json(info.annotation):
            try:
                values[field] = json.loads(raw)
            except ValueError:
                raise InvalidArgument.for_field(
                    field,
                    f"{ENV_PREFIX}{field.upper()} must be JSON (a list or an object), "
                    f"got {raw[:80]!r}",
                ) from None
        else:
            values[field] = raw
    return values


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_default=True)

    home: Path = Field(default_factory=lambda: Path.home() / ".shipyard")
    # Metadata store: sqlite:///path (embedded default, WAL) or postgresql://...
    database_url: str = ""
    # Artifact store: a local folder (default) or an fsspec URL such as s3://bucket/prefix.
    artifact_root: str = ""
    # Extra keyword arguments for fsspec (for s3: endpoint_url, key, secret), as JSON.
    artifact_storage_options: dict = Field(default_factory=dict)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    auth: bool = False
    # Requests above this size are refused with 413, except artifact uploads.
    max_request_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_artifact_bytes: int = Field(default=5 * 1024**3, gt=0)
    # A deleted run or experiment can be restored for this long; after that `gc` purges it.
    restore_window_s: int = Field(default=30 * 24 * 3600, ge=0)
    # Upgrade an empty or older embedded database automatically (SQLite only by default).
    auto_migrate: bool | None = None
    # MLflow has no projects: its REST API (/api/2.0/mlflow/...) works in this one, made on demand.
    mlflow_project: Slug = "default"

    # Training jobs. The server (and a notebook's in-process SDK, from its first submit) runs a
    # worker that claims queued jobs; `shipyard worker` runs more.
    job_workers_embedded: bool = True
    # A worker renews a job's lease every third of this; a job whose lease ran out (its worker
    # died) is retried or failed by any other worker.
    job_lease_s: float = Field(default=30.0, gt=0, le=24 * 3600)
    # Where jobs (and trials) run: local subprocesses, or a Ray cluster at ray_address.
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    # CPUs' worth of tasks run at once on the local executor (default: one per CPU).
    executor_slots: int | None = Field(default=None, ge=1, le=4096)
    # Modules the local executor's fork server imports once, so tasks start in milliseconds
    # with them loaded (JSON list; default: the batch-inference and job-launcher modules).
    executor_preload: list[str] | None = None
    # Where a job's own code tracks to: empty for this store (database and artifacts), or a
    # server's URL, for workers on other machines.
    jobs_tracking_uri: str = ""

    def __init__(self, **values: Any) -> None:
        """``values`` over the ``SHIPYARD_*`` environment over the defaults. A bad value is
        an ``InvalidArgument`` naming the setting (and the variable it came from)."""
        env = _from_environment(type(self), values)
        try:
            super().__init__(**env, **values)
        except ValidationError as exc:
            err = invalid_from_validation(exc)
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            where = ", ".join(f"{ENV_PREFIX}{f.upper()}" for f in sorted(bad & set(env)))
            message = f"{err.message} (set by {where})" if where else err.message
            raise InvalidArgument(message, err.details) from None

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'shipyard.db'}"
        if not self.artifact_root:
            self.artifact_root = str(self.home / "artifacts")
        if self.auto_migrate is None:
            self.auto_migrate = self.database_url.startswith("sqlite")
        return self

    def check_bind(self) -> None:
        """Refuse to serve beyond loopback without auth (DESIGN.md, promise 1)."""
        if not is_loopback(self.host) and not self.auth:
            raise InvalidArgument.for_field(
                "host",
                f"binding to {self.host} exposes the server beyond this machine; "
                "enable auth (SHIPYARD_AUTH=true, then `shipyard users create`) or bind 127.0.0.1",
            )
