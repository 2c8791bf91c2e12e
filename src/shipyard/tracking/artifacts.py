"""A run's artifacts, and purging what was deleted: the part of ``TrackingService`` that also
touches the artifact store. Mixed into ``TrackingService``; only it queries these tables."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from shipyard.core.artifacts import ArtifactStore, clean_relpath
from shipyard.core.db import Database, dialect_insert
from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.core.timeutil import now_ms
from shipyard.tracking.schemas import ArtifactPublic, ArtifactsPublic, PurgeReport
from shipyard.tracking.tables import (
    artifacts,
    experiment_tags,
    experiments,
    latest_metrics,
    metric_batches,
    metric_chunks,
    run_inputs,
    run_params,
    run_tags,
    runs,
)

if TYPE_CHECKING:
    from shipyard.projects.service import ProjectService
    from shipyard.tracking.schemas import RunPublic


class ArtifactsMixin:
    db: Database
    store: ArtifactStore
    projects: ProjectService
    restore_window_s: int
    # Callables naming which of the given digests another domain still refers to (the model
    # registry's versions): purge keeps those blobs. Set by ``server.context.Services``.
    digest_keepers: tuple[Callable[[list[str]], set[str]], ...] = ()

    if TYPE_CHECKING:

        def get_run(self, project: str, run_id: str) -> RunPublic: ...
        def _run_check(self, conn: Any, pid: str, run_id: str, *, active: bool = True) -> None: ...

    # -- artifacts --------------------------------------------------------------------------

    def record_artifact(self, project: str, run_id: str, path: str, digest: str, size: int) -> None:
        """Make ``path`` on the run name the stored content ``digest`` (``store.put_*``), which
        the caller has stored, or stores before this write commits (a ``Database.together``
        block): a committed row never names content that is not durable."""
        path = clean_relpath(path, "artifact_path")
        pid = self.projects.project_id(project)
        with self.db.write() as conn:
            self._run_check(conn, pid, run_id)
            stmt = dialect_insert(conn, artifacts).values(
                run_id=run_id, path=path, digest=digest, size=size, created_at=now_ms()
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["run_id", "path"],
                    set_={"digest": digest, "size": size, "created_at": stmt.excluded.created_at},
                )
            )

    def log_artifact(
        self,
        project: str,
        run_id: str,
        local_path: str | os.PathLike[str],
        artifact_path: str | None = None,
    ) -> list[ArtifactPublic]:
        """Log a file or a folder (recursively) under ``artifact_path`` (default: its name)."""
        src = Path(local_path)
        if not src.exists():
            raise InvalidArgument.for_field("local_path", f"{src} does not exist")
        base = clean_relpath(artifact_path or src.name, "artifact_path")
        files = (
            [
                (p, f"{base}/{p.relative_to(src).as_posix()}")
                for p in sorted(src.rglob("*"))
                if p.is_file()
            ]
            if src.is_dir()
            else [(src, base)]
        )
        self.get_run(project, run_id)  # refuse before any byte is stored
        out = []
        for fpath, rel in files:
            rel = clean_relpath(rel, "artifact_path")
            digest, size = self.store.put_file(fpath)
            self.record_artifact(project, run_id, rel, digest, size)
            if not self.store.exists(digest):  # a purge raced us between put and record
                self.store.put_file(fpath)
            out.append(ArtifactPublic(path=rel, is_dir=False, size=size, digest=digest))
        return out

    def log_artifact_stream(
        self,
        project: str,
        run_id: str,
        path: str,
        chunks: Iterable[bytes],
        expected_digest: str | None,
        max_bytes: int,
    ) -> ArtifactPublic:
        rel = clean_relpath(path)
        self.get_run(project, run_id)
        digest, size = self.store.put_stream(chunks, expected_digest, max_bytes)
        self.record_artifact(project, run_id, rel, digest, size)
        return ArtifactPublic(path=rel, is_dir=False, size=size, digest=digest)

    def _artifact_rows(self, project: str, run_id: str) -> list[Any]:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            self._run_check(conn, pid, run_id, active=False)
            return list(
                conn.execute(
                    select(artifacts.c.path, artifacts.c.digest, artifacts.c.size)
                    .where(artifacts.c.run_id == run_id)
                    .order_by(artifacts.c.path)
                ).all()
            )

    def list_artifacts(
        self, project: str, run_id: str, path: str | None = None, recursive: bool = False
    ) -> ArtifactsPublic:
        prefix = clean_relpath(path) + "/" if path else ""
        rows = self._artifact_rows(project, run_id)
        out: dict[str, ArtifactPublic] = {}
        for r in rows:
            if not r.path.startswith(prefix):
                continue
            rest = r.path[len(prefix) :]
            if recursive or "/" not in rest:
                out[r.path] = ArtifactPublic(
                    path=r.path, is_dir=False, size=r.size, digest=r.digest
                )
            else:
                d = prefix + rest.split("/", 1)[0]
                out.setdefault(d, ArtifactPublic(path=d, is_dir=True))
        if path and not out and not any(r.path == prefix[:-1] for r in rows):
            raise NotFound(f"artifact path {path!r} not found in run {run_id!r}", {"field": "path"})
        return ArtifactsPublic(root=prefix.rstrip("/"), files=list(out.values()))

    def artifact_file(self, project: str, run_id: str, path: str) -> ArtifactPublic:
        rel = clean_relpath(path)
        for r in self._artifact_rows(project, run_id):
            if r.path == rel:
                return ArtifactPublic(path=r.path, is_dir=False, size=r.size, digest=r.digest)
        raise NotFound(f"artifact {path!r} not found in run {run_id!r}", {"field": "path"})

    def iter_artifact(self, digest: str) -> Iterator[bytes]:
        return self.store.iter_verified(digest)

    def download_artifacts(
        self, project: str, run_id: str, path: str | None, dest: str | os.PathLike[str]
    ) -> Path:
        """Copy a file or a folder of a run's artifacts into ``dest``; return the local path."""
        rel = clean_relpath(path) if path else ""
        rows = self._artifact_rows(project, run_id)
        chosen = [r for r in rows if not rel or r.path == rel or r.path.startswith(rel + "/")]
        if not chosen:
            raise NotFound(f"artifact {path!r} not found in run {run_id!r}", {"field": "path"})
        root = Path(dest).resolve()
        for r in chosen:
            target = (root / r.path).resolve()
            if not target.is_relative_to(root):  # paths are clean already; belt and braces
                raise InvalidArgument.for_field("path", "leaves the destination folder")
            self.store.get_file(r.digest, target)
        return root / rel if rel else root

    # -- purge and garbage collection -------------------------------------------------------

    def purge(
        self,
        project: str | None = None,
        *,
        run_ids: list[str] | None = None,
        experiment_ids: list[str] | None = None,
        older_than_s: int | None = None,
    ) -> PurgeReport:
        """Delete for good what was soft-deleted more than ``older_than_s`` ago (default: the
        restore window), or the given deleted runs and experiments now; then free the storage of
        artifact content that no remaining run refers to."""
        window = self.restore_window_s if older_than_s is None else older_than_s
        cutoff = now_ms() - window * 1000
        explicit = run_ids is not None or experiment_ids is not None
        with self.db.write() as conn:
            rq = select(runs.c.id).where(runs.c.lifecycle == "deleted")
            eq = select(experiments.c.id).where(experiments.c.lifecycle == "deleted")
            if project is not None:
                pid = self.projects.project_id(project)
                rq = rq.where(runs.c.project_id == pid)
                eq = eq.where(experiments.c.project_id == pid)
            if explicit:
                rq = rq.where(runs.c.id.in_(run_ids or []))
                eq = eq.where(experiments.c.id.in_(experiment_ids or []))
            else:
                rq = rq.where(runs.c.deleted_at <= cutoff)
                eq = eq.where(experiments.c.deleted_at <= cutoff)
            exp_ids = list(conn.execute(eq).scalars())
            doomed = set(conn.execute(rq).scalars())
            if exp_ids:
                doomed |= set(
                    conn.execute(
                        select(runs.c.id).where(runs.c.experiment_id.in_(exp_ids))
                    ).scalars()
                )
            doomed_list = list(doomed)
            digests: set[str] = set()
            for i in range(0, len(doomed_list), 500):
                chunk = doomed_list[i : i + 500]
                digests |= set(
                    conn.execute(
                        select(artifacts.c.digest).where(artifacts.c.run_id.in_(chunk))
                    ).scalars()
                )
                for table in (
                    metric_chunks,
                    latest_metrics,
                    run_params,
                    run_tags,
                    artifacts,
                    run_inputs,
                    metric_batches,
                ):
                    conn.execute(delete(table).where(table.c.run_id.in_(chunk)))
                conn.execute(delete(runs).where(runs.c.id.in_(chunk)))
            if exp_ids:
                conn.execute(
                    delete(experiment_tags).where(experiment_tags.c.experiment_id.in_(exp_ids))
                )
                conn.execute(delete(experiments).where(experiments.c.id.in_(exp_ids)))
            still = set()
            dl = list(digests)
            for i in range(0, len(dl), 500):
                still |= set(
                    conn.execute(
                        select(artifacts.c.digest).where(artifacts.c.digest.in_(dl[i : i + 500]))
                    ).scalars()
                )
        for keep in self.digest_keepers:
            still |= keep(list(digests - still))
        freed = 0
        deleted = 0
        for d in digests - still:
            n = self.store.delete(d)
            freed += n
            deleted += 1 if n else 0
        return PurgeReport(
            runs_purged=len(doomed),
            experiments_purged=len(exp_ids),
            blobs_deleted=deleted,
            bytes_freed=freed,
        )
