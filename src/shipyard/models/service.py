"""The model registry. The only module that queries the registry's tables.

A version is made from a model folder logged in a run (``runs:/<run_id>/<path>``): its manifest
is read from the artifact store and checked, every file it lists must be in the run with the
same sha256, and the version records the folder's files and digest, so it stays loadable (and
its blobs kept by the tracking purge) even after the run is deleted. Lineage beyond the run
(the run's dataset inputs) is read through ``TrackingService``.

Every method takes the project by name; a name that does not exist in the project is the same
``NotFound`` as one in another project.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from shipyard.core.artifacts import ArtifactStore, clean_relpath
from shipyard.core.db import Database, dialect_insert
from shipyard.core.errors import AlreadyExists, InvalidArgument, NotFound
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.schemas import validate
from shipyard.core.timeutil import ms_to_dt, now_ms
from shipyard.models import search
from shipyard.models.schemas import (
    AliasName,
    ApprovalPublic,
    ApprovalStatus,
    ModelFile,
    ModelName,
    ModelVersionCreate,
    ModelVersionLineage,
    ModelVersionPublic,
    ModelVersionsPublic,
    ModelVersionUpdate,
    RegisteredModelCreate,
    RegisteredModelPublic,
    RegisteredModelsPublic,
    RegisteredModelUpdate,
    ResolvedModelInfo,
    SearchModelVersions,
    TagSet,
)
from shipyard.models.tables import (
    model_aliases,
    model_approvals,
    model_tags,
    model_version_files,
    model_version_tags,
    model_versions,
    registered_models,
)
from shipyard.models.uris import MANIFEST_NAME, ResolvedModel, materialize, parse_model_uri
from shipyard.projects.service import ProjectService
from shipyard.tracking.service import TrackingService

_MAX_SCAN = 100_000  # versions scanned by one search: far beyond any project's registry


class ModelService:
    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        projects: ProjectService,
        tracking: TrackingService,
        cache_dir: Path,
    ) -> None:
        self.db = db
        self.store = store
        self.projects = projects
        self.tracking = tracking
        self.cache_dir = cache_dir

    # -- registered models ------------------------------------------------------------------

    def _model_row(self, conn: Connection, pid: str, name: str) -> Any:
        row = conn.execute(
            select(registered_models).where(
                registered_models.c.project_id == pid, registered_models.c.name == name
            )
        ).first()
        if row is None:
            raise NotFound(f"registered model {name!r} not found", {"name": name})
        return row

    def create_registered_model(
        self, project: str, body: RegisteredModelCreate, created_by: str | None = None
    ) -> RegisteredModelPublic:
        pid = self.projects.project_id(project)
        now = now_ms()
        mid = new_id()
        with self.db.write() as conn:
            exists = conn.execute(
                select(registered_models.c.id).where(
                    registered_models.c.project_id == pid, registered_models.c.name == body.name
                )
            ).first()
            if exists is not None:
                raise AlreadyExists(
                    f"registered model {body.name!r} already exists", {"name": body.name}
                )
            conn.execute(
                registered_models.insert().values(
                    id=mid,
                    project_id=pid,
                    name=body.name,
                    description=body.description,
                    last_version=0,
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                )
            )
            if body.tags:
                conn.execute(
                    model_tags.insert(),
                    [{"model_id": mid, "key": k, "value": v} for k, v in body.tags.items()],
                )
        return self.get_registered_model(project, body.name)

    def _models_public(
        self, conn: Connection, project: str, rows: list[Any]
    ) -> list[RegisteredModelPublic]:
        ids = [r.id for r in rows]
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        aliases: dict[str, dict[str, int]] = {i: {} for i in ids}
        latest: dict[str, int] = {}
        if ids:
            for t in conn.execute(select(model_tags).where(model_tags.c.model_id.in_(ids))):
                tags[t.model_id][t.key] = t.value
            for a in conn.execute(
                select(model_aliases.c.model_id, model_aliases.c.alias, model_versions.c.version)
                .join(model_versions, model_versions.c.id == model_aliases.c.version_id)
                .where(model_aliases.c.model_id.in_(ids))
                .order_by(model_aliases.c.alias)
            ):
                aliases[a.model_id][a.alias] = a.version
            for m in conn.execute(
                select(model_versions.c.model_id, func.max(model_versions.c.version))
                .where(model_versions.c.model_id.in_(ids))
                .group_by(model_versions.c.model_id)
            ):
                latest[m[0]] = m[1]
        return [
            RegisteredModelPublic(
                id=r.id,
                project=project,
                name=r.name,
                description=r.description,
                tags=tags[r.id],
                aliases=aliases[r.id],
                latest_version=latest.get(r.id),
                created_by=r.created_by,
                created_at=ms_to_dt(r.created_at),
                updated_at=ms_to_dt(r.updated_at),
            )
            for r in rows
        ]

    def get_registered_model(self, project: str, name: str) -> RegisteredModelPublic:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            return self._models_public(conn, project, [self._model_row(conn, pid, name)])[0]

    def list_registered_models(
        self,
        project: str,
        *,
        name_like: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> RegisteredModelsPublic:
        """Models by name; ``name_like`` is a case-insensitive LIKE pattern (``%`` any run)."""
        pid = self.projects.project_id(project)
        check_page_size(page_size)
        offset = decode_page_token(page_token)
        cond = [registered_models.c.project_id == pid]
        if name_like:
            cond.append(func.lower(registered_models.c.name).like(name_like.lower()))
        with self.db.read() as conn:
            rows = conn.execute(
                select(registered_models)
                .where(*cond)
                .order_by(registered_models.c.name)
                .limit(page_size + 1)
                .offset(offset)
            ).all()
            count = conn.execute(
                select(func.count()).select_from(registered_models).where(*cond)
            ).scalar_one()
            data = self._models_public(conn, project, list(rows[:page_size]))
        return RegisteredModelsPublic(
            data=data, count=count, next_page_token=next_token(offset, page_size, len(rows))
        )

    def update_registered_model(
        self, project: str, name: str, body: RegisteredModelUpdate
    ) -> RegisteredModelPublic:
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._model_row(conn, pid, name)
            values: dict[str, Any] = {"updated_at": now_ms()}
            if body.description is not None:
                values["description"] = body.description
            conn.execute(
                update(registered_models).where(registered_models.c.id == row.id).values(**values)
            )
        return self.get_registered_model(project, name)

    def delete_registered_model(self, project: str, name: str) -> None:
        """Delete a model with all its versions, aliases and history (the run keeps its files)."""
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._model_row(conn, pid, name)
            vids = select(model_versions.c.id).where(model_versions.c.model_id == row.id)
            # Explicit deletes: SQLite enforces ON DELETE CASCADE only with foreign keys on.
            for table in (model_aliases,):
                conn.execute(delete(table).where(table.c.model_id == row.id))
            for table in (model_version_files, model_version_tags, model_approvals):
                conn.execute(delete(table).where(table.c.version_id.in_(vids)))
            conn.execute(delete(model_versions).where(model_versions.c.model_id == row.id))
            conn.execute(delete(model_tags).where(model_tags.c.model_id == row.id))
            conn.execute(delete(registered_models).where(registered_models.c.id == row.id))

    def set_model_tag(self, project: str, name: str, key: str, value: str) -> None:
        tag = validate(TagSet, key=key, value=value)
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._model_row(conn, pid, name)
            _upsert_tag(conn, model_tags, "model_id", row.id, tag)
            conn.execute(
                update(registered_models)
                .where(registered_models.c.id == row.id)
                .values(updated_at=now_ms())
            )

    def delete_model_tag(self, project: str, name: str, key: str) -> None:
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._model_row(conn, pid, name)
            gone = conn.execute(
                delete(model_tags).where(model_tags.c.model_id == row.id, model_tags.c.key == key)
            ).rowcount
        if not gone:
            raise NotFound(f"model {name!r} has no tag {key!r}", {"field": "key"})

    # -- versions ---------------------------------------------------------------------------

    def _source_files(self, project: str, uri: str) -> tuple[str, str, list[ModelFile]]:
        """(run id, folder path, files relative to the folder) of a ``runs:/`` source."""
        parsed = parse_model_uri(uri, "source")
        if parsed.scheme != "runs" or not parsed.run_id or not parsed.path:
            raise InvalidArgument.for_field(
                "source", f"expected runs:/<run_id>/<path> (a model logged in a run), got {uri!r}"
            )
        try:
            listing = self.tracking.list_artifacts(
                project, parsed.run_id, parsed.path, recursive=True
            )
        except NotFound as e:
            raise NotFound(f"source {uri!r}: {e.message}", {"field": "source"}) from None
        prefix = parsed.path + "/"
        files = [
            ModelFile(path=a.path[len(prefix) :], digest=a.digest or "", size=a.size or 0)
            for a in listing.files
            if a.path.startswith(prefix) and not a.is_dir
        ]
        return parsed.run_id, parsed.path, files

    def _check_folder(
        self, uri: str, files: list[ModelFile], require_manifest: bool
    ) -> tuple[str, str, dict[str, Any] | None]:
        """(digest, flavor, signature) of a logged folder, after checking its manifest."""
        from shipyard.models.format import Manifest

        by_path = {f.path: f for f in files}
        mf = by_path.get(MANIFEST_NAME)
        if mf is None:
            if require_manifest:
                raise InvalidArgument.for_field(
                    "source",
                    f"{uri} holds no {MANIFEST_NAME}: log the model with sy.log_model first",
                )
            # A folder of another tool (MLflow's client registering its own model): its digest
            # is the sha256 of its file list, and it cannot be loaded by Shipyard.
            import hashlib

            listing = "\n".join(f"{f.path} {f.digest}" for f in sorted(files, key=lambda f: f.path))
            flavor = "mlflow" if "MLmodel" in by_path else "unknown"
            return hashlib.sha256(listing.encode()).hexdigest(), flavor, None
        try:
            raw = json.loads(self.store.read_bytes(mf.digest))
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument.for_field(
                "source", f"{uri}: {MANIFEST_NAME} is not JSON"
            ) from None
        manifest = Manifest.from_dict(raw)
        for name, sha in manifest.files.items():
            got = by_path.get(name)
            if got is None:
                raise InvalidArgument.for_field(
                    "source", f"{uri}: {name} is listed in the manifest but was not logged"
                )
            if got.digest != sha:
                raise InvalidArgument.for_field(
                    "source", f"{uri}: the sha256 of {name} does not match the manifest"
                )
        return mf.digest, manifest.flavor, manifest.signature.to_dict()

    def create_model_version(
        self,
        project: str,
        name: str,
        body: ModelVersionCreate,
        created_by: str | None = None,
        *,
        require_manifest: bool = True,
    ) -> ModelVersionPublic:
        """A new version (number = the model's last + 1) of ``name`` from ``body.source``."""
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            self._model_row(conn, pid, name)  # a missing model first, before reading the run
        run_id, path, files = self._source_files(project, body.source)
        digest, flavor, signature = self._check_folder(body.source, files, require_manifest)
        now = now_ms()
        vid = new_id()
        with self.db.write() as conn:
            row = self._model_row(conn, pid, name)
            # Taking the next number updates the model's row first: concurrent creators queue on
            # its lock (PostgreSQL) or the write lock (SQLite) and never share a number.
            conn.execute(
                update(registered_models)
                .where(registered_models.c.id == row.id)
                .values(last_version=registered_models.c.last_version + 1, updated_at=now)
            )
            number = conn.execute(
                select(registered_models.c.last_version).where(registered_models.c.id == row.id)
            ).scalar_one()
            conn.execute(
                model_versions.insert().values(
                    id=vid,
                    model_id=row.id,
                    version=number,
                    source_uri=f"runs:/{run_id}/{path}",
                    source_run_id=run_id,
                    source_path=path,
                    digest=digest,
                    size=sum(f.size for f in files),
                    flavor=flavor,
                    signature=json.dumps(signature) if signature is not None else "",
                    approval_status=ApprovalStatus.pending.value,
                    description=body.description,
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                model_version_files.insert(),
                [
                    {"version_id": vid, "path": f.path, "digest": f.digest, "size": f.size}
                    for f in files
                ],
            )
            conn.execute(
                model_approvals.insert().values(
                    id=new_id(),
                    version_id=vid,
                    status=ApprovalStatus.pending.value,
                    actor=created_by,
                    comment="registered",
                    created_at=now,
                )
            )
            if body.tags:
                conn.execute(
                    model_version_tags.insert(),
                    [{"version_id": vid, "key": k, "value": v} for k, v in body.tags.items()],
                )
        return self.get_model_version(project, name, number)

    def register_model(
        self,
        project: str,
        name: str,
        body: ModelVersionCreate,
        created_by: str | None = None,
    ) -> ModelVersionPublic:
        """Create the registered model when it does not exist yet, then a version of it."""
        validate(RegisteredModelCreate, name=name)
        with contextlib.suppress(AlreadyExists):
            self.create_registered_model(
                project, RegisteredModelCreate(name=name), created_by=created_by
            )
        return self.create_model_version(project, name, body, created_by)

    def _versions_public(
        self, conn: Connection, project: str, rows: list[Any]
    ) -> list[ModelVersionPublic]:
        ids = [r.id for r in rows]
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        aliases: dict[str, list[str]] = {i: [] for i in ids}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for t in conn.execute(
                select(model_version_tags).where(model_version_tags.c.version_id.in_(chunk))
            ):
                tags[t.version_id][t.key] = t.value
            for a in conn.execute(
                select(model_aliases.c.version_id, model_aliases.c.alias)
                .where(model_aliases.c.version_id.in_(chunk))
                .order_by(model_aliases.c.alias)
            ):
                aliases[a.version_id].append(a.alias)
        return [
            ModelVersionPublic(
                id=r.id,
                project=project,
                name=r.name,
                version=r.version,
                source_uri=r.source_uri,
                run_id=r.source_run_id,
                source_path=r.source_path,
                digest=r.digest,
                size=r.size,
                flavor=r.flavor,
                signature=json.loads(r.signature) if r.signature else None,
                approval_status=ApprovalStatus(r.approval_status),
                description=r.description,
                tags=tags[r.id],
                aliases=aliases[r.id],
                created_by=r.created_by,
                created_at=ms_to_dt(r.created_at),
                updated_at=ms_to_dt(r.updated_at),
            )
            for r in rows
        ]

    @staticmethod
    def _version_query(pid: str) -> Any:
        return (
            select(model_versions, registered_models.c.name)
            .join(registered_models, registered_models.c.id == model_versions.c.model_id)
            .where(registered_models.c.project_id == pid)
        )

    def _version_row(self, conn: Connection, pid: str, name: str, version: int) -> Any:
        row = conn.execute(
            self._version_query(pid).where(
                registered_models.c.name == name, model_versions.c.version == version
            )
        ).first()
        if row is None:
            self._model_row(conn, pid, name)  # NotFound for the model itself first
            raise NotFound(
                f"model {name!r} has no version {version}", {"name": name, "version": version}
            )
        return row

    def get_model_version(self, project: str, name: str, version: int) -> ModelVersionPublic:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            return self._versions_public(
                conn, project, [self._version_row(conn, pid, name, version)]
            )[0]

    def get_version_by_alias(self, project: str, name: str, alias: str) -> ModelVersionPublic:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            row = self._model_row(conn, pid, name)
            version = conn.execute(
                select(model_versions.c.version)
                .join(model_aliases, model_aliases.c.version_id == model_versions.c.id)
                .where(model_aliases.c.model_id == row.id, model_aliases.c.alias == alias)
            ).scalar_one_or_none()
            if version is None:
                raise NotFound(
                    f"model {name!r} has no alias {alias!r}", {"name": name, "alias": alias}
                )
            return self._versions_public(
                conn, project, [self._version_row(conn, pid, name, version)]
            )[0]

    def get_latest_version(self, project: str, name: str) -> ModelVersionPublic:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            row = self._model_row(conn, pid, name)
            version = conn.execute(
                select(func.max(model_versions.c.version)).where(
                    model_versions.c.model_id == row.id
                )
            ).scalar_one_or_none()
            if version is None:
                raise NotFound(f"model {name!r} has no versions yet", {"name": name})
            return self._versions_public(
                conn, project, [self._version_row(conn, pid, name, version)]
            )[0]

    def list_model_versions(
        self, project: str, name: str, *, page_size: int = 100, page_token: str | None = None
    ) -> ModelVersionsPublic:
        self.get_registered_model(project, name)  # NotFound for a missing model
        filter_ = f"name = '{name}'"  # names are letters, digits, '_', '.', '-': no quoting
        return self.search_model_versions(
            project, SearchModelVersions(filter=filter_, page_size=page_size, page_token=page_token)
        )

    def search_model_versions(self, project: str, body: SearchModelVersions) -> ModelVersionsPublic:
        """Versions matching ``body.filter`` (see ``models.search``), one page at a time."""
        pid = self.projects.project_id(project)
        clauses = search.parse_version_filter(body.filter)
        check_page_size(body.page_size)
        offset = decode_page_token(body.page_token)
        query = self._version_query(pid)
        pinned = search.name_equals(clauses)
        if pinned is not None:
            query = query.where(registered_models.c.name == pinned)
        with self.db.read() as conn:
            rows = conn.execute(query.limit(_MAX_SCAN)).all()
            versions = self._versions_public(conn, project, list(rows))
        found = [v for v in versions if search.matches(v, clauses)]
        found = search.sort_versions(found, body.order_by)
        page = found[offset : offset + body.page_size + 1]
        return ModelVersionsPublic(
            data=page[: body.page_size],
            count=len(found),
            next_page_token=next_token(offset, body.page_size, len(page)),
        )

    def update_model_version(
        self, project: str, name: str, version: int, body: ModelVersionUpdate
    ) -> ModelVersionPublic:
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._version_row(conn, pid, name, version)
            values: dict[str, Any] = {"updated_at": now_ms()}
            if body.description is not None:
                values["description"] = body.description
            conn.execute(
                update(model_versions).where(model_versions.c.id == row.id).values(**values)
            )
        return self.get_model_version(project, name, version)

    def delete_model_version(self, project: str, name: str, version: int) -> None:
        """Delete a version, its aliases, tags and history. Its number is never reused."""
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._version_row(conn, pid, name, version)
            for table in (model_aliases, model_version_files, model_version_tags, model_approvals):
                conn.execute(delete(table).where(table.c.version_id == row.id))
            conn.execute(delete(model_versions).where(model_versions.c.id == row.id))

    def set_version_tag(self, project: str, name: str, version: int, key: str, value: str) -> None:
        tag = validate(TagSet, key=key, value=value)
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._version_row(conn, pid, name, version)
            _upsert_tag(conn, model_version_tags, "version_id", row.id, tag)

    def delete_version_tag(self, project: str, name: str, version: int, key: str) -> None:
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._version_row(conn, pid, name, version)
            gone = conn.execute(
                delete(model_version_tags).where(
                    model_version_tags.c.version_id == row.id, model_version_tags.c.key == key
                )
            ).rowcount
        if not gone:
            raise NotFound(f"version {version} of {name!r} has no tag {key!r}", {"field": "key"})

    # -- aliases ----------------------------------------------------------------------------

    def set_alias(
        self, project: str, name: str, alias: str, version: int, actor: str | None = None
    ) -> ModelVersionPublic:
        """Point ``alias`` at ``version`` (moving it from any other version of the model)."""
        _check_alias(alias)
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._version_row(conn, pid, name, version)
            stmt = dialect_insert(conn, model_aliases).values(
                model_id=row.model_id,
                alias=alias,
                version_id=row.id,
                updated_by=actor,
                updated_at=now_ms(),
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["model_id", "alias"],
                    set_={
                        "version_id": stmt.excluded.version_id,
                        "updated_by": stmt.excluded.updated_by,
                        "updated_at": stmt.excluded.updated_at,
                    },
                )
            )
        return self.get_model_version(project, name, version)

    def delete_alias(self, project: str, name: str, alias: str) -> None:
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            row = self._model_row(conn, pid, name)
            gone = conn.execute(
                delete(model_aliases).where(
                    model_aliases.c.model_id == row.id, model_aliases.c.alias == alias
                )
            ).rowcount
        if not gone:
            raise NotFound(f"model {name!r} has no alias {alias!r}", {"field": "alias"})

    # -- approval ---------------------------------------------------------------------------

    def transition_approval(
        self,
        project: str,
        name: str,
        version: int,
        status: ApprovalStatus | str,
        actor: str | None = None,
        comment: str = "",
    ) -> ModelVersionPublic:
        """Set a version's approval status, recording who, when and why in its history."""
        try:
            status = ApprovalStatus(status)
        except ValueError:
            raise InvalidArgument.for_field(
                "status",
                f"expected one of {', '.join(s.value for s in ApprovalStatus)}, got {status!r}",
            ) from None
        pid = self.projects.project_id(project)
        now = now_ms()
        with self.db.write() as conn:
            row = self._version_row(conn, pid, name, version)
            conn.execute(
                update(model_versions)
                .where(model_versions.c.id == row.id)
                .values(approval_status=status.value, updated_at=now)
            )
            conn.execute(
                model_approvals.insert().values(
                    id=new_id(),
                    version_id=row.id,
                    status=status.value,
                    actor=actor,
                    comment=comment,
                    created_at=now,
                )
            )
        return self.get_model_version(project, name, version)

    def approval_history(self, project: str, name: str, version: int) -> list[ApprovalPublic]:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            row = self._version_row(conn, pid, name, version)
            return _approvals(conn, row.id)

    # -- lineage ----------------------------------------------------------------------------

    def get_lineage(self, project: str, name: str, version: int) -> ModelVersionLineage:
        v = self.get_model_version(project, name, version)
        run = None
        if v.run_id:
            try:
                run = self.tracking.get_run(project, v.run_id)
            except NotFound:
                run = None
        return ModelVersionLineage(
            version=v,
            run=run,
            run_missing=bool(v.run_id) and run is None,
            datasets=list(run.inputs) if run else [],
            approvals=self.approval_history(project, name, version),
        )

    # -- resolving URIs ---------------------------------------------------------------------

    def version_files(self, project: str, name: str, version: int) -> list[ModelFile]:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            row = self._version_row(conn, pid, name, version)
            return [
                ModelFile(path=f.path, digest=f.digest, size=f.size)
                for f in conn.execute(
                    select(model_version_files)
                    .where(model_version_files.c.version_id == row.id)
                    .order_by(model_version_files.c.path)
                )
            ]

    def iter_version_file(
        self, project: str, name: str, version: int, path: str
    ) -> Iterator[bytes]:
        rel = clean_relpath(path)
        for f in self.version_files(project, name, version):
            if f.path == rel:
                return self.store.iter_verified(f.digest)
        raise NotFound(f"version {version} of {name!r} has no file {path!r}", {"field": "path"})

    def resolve_info(self, project: str, uri: str) -> ResolvedModelInfo:
        """What ``uri`` points at (the version, its digest and files), without fetching it."""
        parsed = parse_model_uri(uri)
        if parsed.scheme == "runs":
            run_id, path, files = self._source_files(project, uri)
            digest, flavor, _ = self._check_folder(uri, files, True)
            return ResolvedModelInfo(
                uri=uri,
                name=None,
                version=None,
                run_id=run_id,
                source_path=path,
                digest=digest,
                flavor=flavor,
                files=files,
            )
        assert parsed.name is not None
        if parsed.alias is not None:
            v = self.get_version_by_alias(project, parsed.name, parsed.alias)
        elif parsed.version is not None:
            v = self.get_model_version(project, parsed.name, parsed.version)
        else:
            v = self.get_latest_version(project, parsed.name)
        return ResolvedModelInfo(
            uri=uri,
            name=v.name,
            version=v.version,
            run_id=v.run_id,
            source_path=v.source_path,
            digest=v.digest,
            flavor=v.flavor,
            files=self.version_files(project, v.name, v.version),
        )

    def resolve(self, project: str, uri: str) -> ResolvedModel:
        """A local folder for ``uri``, fetched from the artifact store once and cached by digest
        under ``<cache_dir>/<digest>``; ready for ``format.load_model``."""
        info = self.resolve_info(project, uri)
        if info.flavor in ("mlflow", "unknown"):
            raise InvalidArgument.for_field(
                "uri", f"{uri} is not a Shipyard model (no {MANIFEST_NAME}); it cannot be loaded"
            )
        return materialize(
            self.cache_dir, info, lambda f, target: self.store.get_file(f.digest, target)
        )

    def pinned_digests(self, digests: list[str]) -> set[str]:
        """Which of ``digests`` a model version still lists (the tracking purge keeps them)."""
        out: set[str] = set()
        with self.db.read() as conn:
            for i in range(0, len(digests), 500):
                out |= set(
                    conn.execute(
                        select(model_version_files.c.digest).where(
                            model_version_files.c.digest.in_(digests[i : i + 500])
                        )
                    ).scalars()
                )
        return out


def _upsert_tag(conn: Connection, table: Any, owner: str, owner_id: str, tag: TagSet) -> None:
    stmt = dialect_insert(conn, table).values(
        **{owner: owner_id, "key": tag.key, "value": tag.value}
    )
    conn.execute(
        stmt.on_conflict_do_update(index_elements=[owner, "key"], set_={"value": tag.value})
    )


def _check_alias(alias: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(AliasName).validate_python(alias)
    except ValidationError as e:
        raise InvalidArgument.for_field("alias", e.errors()[0]["msg"], alias=alias) from None


def _approvals(conn: Connection, version_id: str) -> list[ApprovalPublic]:
    return [
        ApprovalPublic(
            status=ApprovalStatus(a.status),
            actor=a.actor,
            comment=a.comment,
            created_at=ms_to_dt(a.created_at),
        )
        for a in conn.execute(
            select(model_approvals)
            .where(model_approvals.c.version_id == version_id)
            .order_by(model_approvals.c.created_at, model_approvals.c.id)
        )
    ]


__all__ = ["ModelName", "ModelService", "ResolvedModel"]
