"""The services of one Shipyard instance, built from settings. Shared by the server and the
SDK's in-process backend so both run exactly the same code."""

from __future__ import annotations

from dataclasses import dataclass

from shipyard.core.artifacts import ArtifactStore
from shipyard.core.db import Database
from shipyard.core.executors import Executor, LocalExecutor
from shipyard.core.settings import Settings
from shipyard.inference.asynchronous import AsyncInferenceService
from shipyard.inference.resolve import ModelCache, ModelResolver
from shipyard.inference.service import BatchService
from shipyard.inference.worker import PRELOAD as SHARD_PRELOAD
from shipyard.models.service import ModelService
from shipyard.projects.service import ProjectService
from shipyard.serving.service import EndpointService
from shipyard.tracking.service import TrackingService


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ArtifactStore
    projects: ProjectService
    tracking: TrackingService
    models: ModelService
    endpoints: EndpointService
    executor: Executor
    batch: BatchService
    async_inference: AsyncInferenceService

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Services:
        settings = settings or Settings()
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url)
        db.ensure_schema(bool(settings.auto_migrate))
        store = ArtifactStore(settings.artifact_root, settings.artifact_storage_options)
        projects = ProjectService(db)
        tracking = TrackingService(db, store, projects, settings.restore_window_s)
        models = ModelService(db, store, projects, tracking, settings.home / "cache" / "models")
        # The purge keeps the blobs of files a model version still lists.
        tracking.digest_keepers = (models.pinned_digests,)
        endpoints = EndpointService(db, store, projects, settings, models.resolve)
        # Inference: a model folder given by path is accepted only when the caller may read this
        # machine's files anyway (auth off); batch paths are confined to <home>/batch/<project>.
        executor = LocalExecutor(settings.home / "tasks", preload=SHARD_PRELOAD)
        resolver = ModelResolver(models, allow_paths=not settings.auth)
        batch = BatchService(
            db, projects, resolver, executor, home=settings.home, restrict_paths=settings.auth
        )
        async_inference = AsyncInferenceService(db, store, projects, resolver, ModelCache())
        return cls(
            settings,
            db,
            store,
            projects,
            tracking,
            models=models,
            endpoints=endpoints,
            executor=executor,
            batch=batch,
            async_inference=async_inference,
        )

    def close(self) -> None:
        self.endpoints.close()  # stops supervising; endpoints keep serving
        self.batch.shutdown()  # this process's batch jobs stop, ready to resume
        self.async_inference.shutdown()
        self.executor.shutdown()
        self.db.dispose()
