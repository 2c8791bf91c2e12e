"""Experiments: the part of ``TrackingService`` that creates, lists, renames, deletes and
restores them. Mixed into ``TrackingService``; only the tracking domain queries these tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.db import Database, dialect_insert
from shipyard.core.errors import AlreadyExists, NotFound
from shipyard.core.ids import new_id
from shipyard.core.paging import check_page_size, decode_page_token, next_token
from shipyard.core.timeutil import dt_to_ms, ms_to_dt, now_ms
from shipyard.tracking.schemas import (
    ExperimentCreate,
    ExperimentPublic,
    ExperimentsPublic,
    ExperimentUpdate,
    Lifecycle,
)
from shipyard.tracking.tables import experiment_tags, experiments, runs

if TYPE_CHECKING:
    from shipyard.projects.service import ProjectService


class ExperimentsMixin:
    db: Database
    projects: ProjectService

    # -- experiments ------------------------------------------------------------------------

    def create_experiment(self, project: str, body: ExperimentCreate) -> ExperimentPublic:
        pid = self.projects.project_id(project)
        now = now_ms()
        eid = new_id()
        try:
            with self.db.write() as conn:
                conn.execute(
                    experiments.insert().values(
                        id=eid,
                        project_id=pid,
                        name=body.name,
                        description=body.description,
                        lifecycle="active",
                        created_at=now,
                        updated_at=now,
                    )
                )
                if body.tags:
                    conn.execute(
                        experiment_tags.insert(),
                        [
                            {"experiment_id": eid, "key": k, "value": v}
                            for k, v in body.tags.items()
                        ],
                    )
        except IntegrityError:
            raise AlreadyExists(
                f"experiment {body.name!r} already exists in project {project!r}"
                " (it may be deleted: restore it or choose another name)",
                {"field": "name"},
            ) from None
        return self.get_experiment(project, eid)

    def _experiment_rows(self, conn: Connection, pid: str, where) -> list[ExperimentPublic]:  # type: ignore[no-untyped-def]
        rows = conn.execute(select(experiments).where(experiments.c.project_id == pid, where)).all()
        return self._experiments(conn, rows)

    def _experiments(self, conn: Connection, rows: Sequence[Any]) -> list[ExperimentPublic]:
        tags: dict[str, dict[str, str]] = {r.id: {} for r in rows}
        if rows:
            for t in conn.execute(
                select(experiment_tags).where(experiment_tags.c.experiment_id.in_(list(tags)))
            ):
                tags[t.experiment_id][t.key] = t.value
        return [
            ExperimentPublic(
                id=r.id,
                project=self.projects.project_name(r.project_id),
                name=r.name,
                description=r.description,
                lifecycle=Lifecycle(r.lifecycle),
                tags=tags[r.id],
                deleted_at=ms_to_dt(r.deleted_at),
                created_at=ms_to_dt(r.created_at),
                updated_at=ms_to_dt(r.updated_at),
            )
            for r in rows
        ]

    def get_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            found = self._experiment_rows(conn, pid, experiments.c.id == experiment_id)
        if not found:
            raise NotFound(
                f"experiment {experiment_id!r} not found in project {project!r}",
                {"experiment_id": experiment_id},
            )
        return found[0]

    def get_experiment_by_name(self, project: str, name: str) -> ExperimentPublic:
        pid = self.projects.project_id(project)
        with self.db.read() as conn:
            found = self._experiment_rows(conn, pid, experiments.c.name == name)
        if not found:
            raise NotFound(
                f"experiment {name!r} not found in project {project!r}", {"experiment": name}
            )
        return found[0]

    def ensure_experiment(self, project: str, name: str) -> ExperimentPublic:
        try:
            return self.get_experiment_by_name(project, name)
        except NotFound:
            try:
                return self.create_experiment(project, ExperimentCreate(name=name))
            except AlreadyExists:
                return self.get_experiment_by_name(project, name)

    def list_experiments(
        self,
        project: str,
        *,
        name_like: str | None = None,
        lifecycle: Lifecycle = Lifecycle.active,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> ExperimentsPublic:
        pid = self.projects.project_id(project)
        check_page_size(page_size)
        offset = decode_page_token(page_token)
        cond = [experiments.c.project_id == pid]
        if lifecycle != Lifecycle.all:
            cond.append(experiments.c.lifecycle == lifecycle.value)
        if name_like:
            cond.append(func.lower(experiments.c.name).like(name_like.lower()))
        with self.db.read() as conn:
            rows = conn.execute(
                select(experiments)
                .where(*cond)
                .order_by(experiments.c.created_at.desc(), experiments.c.id.desc())
                .limit(page_size + 1)
                .offset(offset)
            ).all()
            count = conn.execute(
                select(func.count()).select_from(experiments).where(*cond)
            ).scalar_one()
            data = self._experiments(conn, rows[:page_size])
        return ExperimentsPublic(
            data=data, count=count, next_page_token=next_token(offset, page_size, len(rows))
        )

    def update_experiment(
        self, project: str, experiment_id: str, body: ExperimentUpdate
    ) -> ExperimentPublic:
        self.get_experiment(project, experiment_id)
        values: dict[str, Any] = {"updated_at": now_ms()}
        if body.name is not None:
            values["name"] = body.name
        if body.description is not None:
            values["description"] = body.description
        try:
            with self.db.write() as conn:
                conn.execute(
                    update(experiments).where(experiments.c.id == experiment_id).values(**values)
                )
                for k, v in (body.tags or {}).items():
                    conn.execute(
                        dialect_insert(conn, experiment_tags)
                        .values(experiment_id=experiment_id, key=k, value=v)
                        .on_conflict_do_update(
                            index_elements=["experiment_id", "key"], set_={"value": v}
                        )
                    )
        except IntegrityError:
            raise AlreadyExists(
                f"experiment {body.name!r} already exists in project {project!r}", {"field": "name"}
            ) from None
        return self.get_experiment(project, experiment_id)

    def delete_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        """Soft delete: the experiment and its active runs can be restored until purged."""
        exp = self.get_experiment(project, experiment_id)
        if exp.lifecycle == Lifecycle.deleted:
            return exp
        now = now_ms()
        with self.db.write() as conn:
            conn.execute(
                update(experiments)
                .where(experiments.c.id == experiment_id)
                .values(lifecycle="deleted", deleted_at=now, updated_at=now)
            )
            # Runs deleted with their experiment share its deleted_at, so restore finds them.
            conn.execute(
                update(runs)
                .where(runs.c.experiment_id == experiment_id, runs.c.lifecycle == "active")
                .values(lifecycle="deleted", deleted_at=now, updated_at=now)
            )
        return self.get_experiment(project, experiment_id)

    def restore_experiment(self, project: str, experiment_id: str) -> ExperimentPublic:
        exp = self.get_experiment(project, experiment_id)
        if exp.lifecycle == Lifecycle.active:
            return exp
        deleted_at = dt_to_ms(exp.deleted_at) if exp.deleted_at else None
        now = now_ms()
        with self.db.write() as conn:
            conn.execute(
                update(experiments)
                .where(experiments.c.id == experiment_id)
                .values(lifecycle="active", deleted_at=None, updated_at=now)
            )
            conn.execute(
                update(runs)
                .where(runs.c.experiment_id == experiment_id, runs.c.deleted_at == deleted_at)
                .values(lifecycle="active", deleted_at=None, updated_at=now)
            )
        return self.get_experiment(project, experiment_id)
