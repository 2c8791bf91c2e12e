"""The services of one Shipyard instance, built from settings. Shared by the server and the
SDK's in-process backend so both run exactly the same code."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from shipyard.core.artifacts import ArtifactStore
from shipyard.core.db import Database
from shipyard.core.executors import Executor, LocalExecutor, TaskSpec, TaskStatus
from shipyard.core.settings import Settings
from shipyard.inference.asynchronous import AsyncInferenceService
from shipyard.inference.resolve import ModelCache, ModelResolver
from shipyard.inference.service import BatchService
from shipyard.inference.worker import PRELOAD as SHARD_PRELOAD
from shipyard.jobs.service import JobService
from shipyard.jobs.worker import PRELOAD as JOB_PRELOAD
from shipyard.jobs.worker import JobWorker
from shipyard.models.service import ModelService
from shipyard.projects.service import ProjectService
from shipyard.serving.service import EndpointService
from shipyard.tracking.service import TrackingService
from shipyard.tuning.service import TuningService

_worker_lock = threading.Lock()


def make_executor(settings: Settings) -> Executor:
    """The one executor of this process, shared by jobs, trials and batch shards: local
    subprocesses (a fork server preloads what they import) or a Ray cluster."""
    preload = (
        settings.executor_preload
        if settings.executor_preload is not None
        else (*SHARD_PRELOAD, *JOB_PRELOAD)
    )
    if settings.executor == "ray":
        from shipyard.core.ray_executor import RayExecutor

        local = settings.ray_address in (None, "", "local")
        return RayExecutor(
            settings.home / "tasks",
            settings.ray_address or None,
            # A local Ray gets the slots asked for; a cluster has its own.
            num_cpus=settings.executor_slots if local else None,
            preload=preload,  # each Ray worker keeps a fork server with these imported
        )
    return LocalExecutor(settings.home / "tasks", settings.executor_slots, preload=preload)


class LazyExecutor:
    """The executor, made on first use. Every process that opens the store builds the services
    (a job's own SDK, a CLI command), and most never run a task: making a ``RayExecutor`` joins
    (or starts) a Ray cluster, and a ``LocalExecutor`` soon starts a fork server."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._executor: Executor | None = None
        self._lock = threading.Lock()

    def get(self) -> Executor:
        with self._lock:
            if self._executor is None:
                self._executor = make_executor(self._settings)
            return self._executor

    @property
    def slots(self) -> int:
        return self.get().slots

    def submit(self, spec: TaskSpec) -> str:
        return self.get().submit(spec)

    def status(self, task_id: str) -> TaskStatus:
        return self.get().status(task_id)

    def cancel(self, task_id: str) -> TaskStatus:
        return self.get().cancel(task_id)

    def logs(self, task_id: str, tail_bytes: int | None = None) -> str:
        return self.get().logs(task_id, tail_bytes)

    def wait(self, task_id: str, timeout_s: float | None = None) -> TaskStatus:
        return self.get().wait(task_id, timeout_s)

    def __getattr__(self, name: str) -> Any:
        # What only some executors offer (forget, add_done_callback, ...), looked up on the
        # real one; getattr(..., default) callers see it absent when it is.
        return getattr(self.get(), name)

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:  # never made: nothing to stop
            executor.shutdown()


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
    jobs: JobService
    tuning: TuningService
    # This process's job worker (the embedded one), made by ``start_job_worker``.
    job_worker: JobWorker | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, migrate_apart: bool = False
    ) -> Services:
        """``migrate_apart``: a migration the store needs runs in a child process (a server's
        choice: see ``Database.upgrade``)."""
        settings = settings or Settings()
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url)
        db.ensure_schema(bool(settings.auto_migrate), apart=migrate_apart)
        store = ArtifactStore(settings.artifact_root, settings.artifact_storage_options)
        projects = ProjectService(db)
        tracking = TrackingService(db, store, projects, settings.restore_window_s)
        models = ModelService(db, store, projects, tracking, settings.home / "cache" / "models")
        # The purge keeps the blobs of files a model version still lists.
        tracking.digest_keepers = (models.pinned_digests,)
        endpoints = EndpointService(db, store, projects, settings, models.resolve)
        # Inference: a model folder given by path is accepted only when the caller may read this
        # machine's files anyway (auth off); batch paths are confined to <home>/batch/<project>.
        executor = LazyExecutor(settings)
        resolver = ModelResolver(models, allow_paths=not settings.auth)
        batch = BatchService(
            db, projects, resolver, executor, home=settings.home, restrict_paths=settings.auth
        )
        async_inference = AsyncInferenceService(db, store, projects, resolver, ModelCache())
        jobs = JobService(db, projects, tracking, lease_s=settings.job_lease_s)
        services = cls(
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
            jobs=jobs,
            tuning=TuningService(db, projects, tracking, models, jobs),
        )
        if settings.job_workers_embedded:
            # A submit in this process starts the embedded worker (a notebook with no server);
            # the server starts it at once, for jobs queued before it started.
            jobs.on_submit = services.start_job_worker
        return services

    def _real_executor(self) -> Executor:
        ex = self.executor
        return ex.get() if isinstance(ex, LazyExecutor) else ex

    def start_job_worker(self, run_jobs: bool = True) -> JobWorker:
        """Start this process's job worker (once) and wake it. With ``run_jobs`` False it only
        reaps jobs whose worker died (a server whose jobs run on ``shipyard worker``s)."""
        with _worker_lock:
            if self.job_worker is None:
                self.job_worker = JobWorker(
                    self.jobs, self._real_executor(), self.settings, run_jobs=run_jobs
                )
        self.job_worker.start()
        return self.job_worker

    def close(self) -> None:
        if self.job_worker is not None:
            self.job_worker.stop()  # its jobs go back to the queue, attempt not counted
        self.endpoints.close()  # stops supervising; endpoints keep serving
        self.tuning.shutdown()  # tuning jobs driven here are left for the next start to resume
        self.batch.shutdown()  # this process's batch jobs stop, ready to resume
        self.async_inference.shutdown()
        self.executor.shutdown()
        self.db.dispose()
