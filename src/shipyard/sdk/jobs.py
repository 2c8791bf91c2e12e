"""``sy.jobs``: submit a training job and follow it, in-process or against a server.

    import shipyard as sy
    job = sy.jobs.submit("train.py", source_dir=".", hyperparameters={"lr": 0.1},
                         inputs={"train": "data/train.parquet"}, retries=2)
    for chunk in sy.jobs.follow_logs(job.id):
        print(chunk.data, end="")
    job = sy.jobs.wait(job.id)

Paths a job is given (``source_dir``, local ``inputs``) are made absolute here, against this
process's working directory, and checked to exist, so a typo fails at submit and not minutes
later in the job. Without a server, the first submit starts a worker in this process.
"""

from __future__ import annotations

import base64
import builtins
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidArgument
from shipyard.core.schemas import validate
from shipyard.jobs.schemas import Job, JobCreate, JobLogChunk, JobsPublic, JobStatus
from shipyard.sdk.client import Client

__all__ = ["delete", "follow_logs", "get", "list", "logs", "stop", "submit", "wait"]


def _client(client: Client | None) -> Client:
    if client is not None:
        return client
    from shipyard.sdk.fluent import get_client

    return get_client()


def _local_path(raw: str | os.PathLike[str], field: str, *, folder: bool | None = None) -> str:
    p = Path(raw).expanduser().resolve()
    if not p.exists():
        raise InvalidArgument.for_field(field, f"no such file or folder: {p}")
    if folder is True and not p.is_dir():
        raise InvalidArgument.for_field(field, f"expected a folder, got a file: {p}")
    return str(p)


def _metric_definitions(defs: Any) -> builtins.list[dict[str, str]]:
    if defs is None:
        return []
    if isinstance(defs, Mapping):
        return [{"name": k, "regex": v} for k, v in defs.items()]
    return [dict(d) if isinstance(d, Mapping) else d.model_dump() for d in defs]


def submit(
    entry_point: str | os.PathLike[str] | Sequence[str] | None = None,
    *,
    function: str | Callable[..., Any] | None = None,
    algorithm: str | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    resources: Mapping[str, Any] | None = None,
    max_runtime_s: float | None = None,
    retries: int = 0,
    instance_count: int = 1,
    metric_definitions: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
    experiment: str = "jobs",
    environment: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    name: str | None = None,
    tuning_job_id: str | None = None,
    wait: bool = False,
    timeout_s: float | None = None,
    client: Client | None = None,
) -> Job:
    """Queue a job and return it (``wait=True``: once it is final).

    Give exactly one of ``entry_point`` (a .py file, relative to ``source_dir`` or this
    folder; or a command as a list), ``function`` ("package.module:function", or a Python
    function, sent pickled) and ``algorithm`` ("xgboost", "lightgbm", "linear",
    "random-forest", "kmeans"). ``metric_definitions`` maps a metric name to a regular
    expression with one group, applied to every line the job prints.
    """
    c = _client(client)
    body: dict[str, Any] = {
        "name": name,
        "algorithm": algorithm,
        "hyperparameters": dict(hyperparameters or {}),
        "resources": dict(resources or {}),
        "max_runtime_s": max_runtime_s,
        "retries": retries,
        "instance_count": instance_count,
        "metric_definitions": _metric_definitions(metric_definitions),
        "experiment": experiment,
        "environment": dict(environment or {}),
        "idempotency_key": idempotency_key,
        "tags": dict(tags or {}),
        "tuning_job_id": tuning_job_id,
    }
    src = _local_path(source_dir, "source_dir", folder=True) if source_dir is not None else None
    if isinstance(entry_point, str | os.PathLike):
        script = Path(entry_point).expanduser()
        if src is None:
            if script.is_absolute():
                src, script = str(script.parent), Path(script.name)
            else:
                src = str(Path.cwd())
        full = Path(src) / script
        if not full.is_file():
            raise InvalidArgument.for_field("entry_point", f"no such file: {full}")
        body["entry_point"] = str(script)
    elif entry_point is not None:
        body["entry_point"] = [str(a) for a in entry_point]
    body["source_dir"] = src
    if callable(function):
        import cloudpickle

        body["function_pickle"] = base64.b64encode(cloudpickle.dumps(function)).decode()
    else:
        body["function"] = function
    body["inputs"] = {
        k: (str(v) if "://" in str(v) else _local_path(v, f"inputs.{k}"))
        for k, v in (inputs or {}).items()
    }
    spec = validate(JobCreate, **{k: v for k, v in body.items() if v is not None})
    job = c.backend.submit_job(c._ready(), spec)
    if wait:
        return _wait(c, job.id, timeout_s)
    return job


def get(job_id: str, *, client: Client | None = None) -> Job:
    c = _client(client)
    return c.backend.get_job(c._ready(), job_id)


def list(  # noqa: A001 - sy.jobs.list reads as the user would say it
    *,
    status: JobStatus | str | Sequence[JobStatus | str] | None = None,
    tuning_job_id: str | None = None,
    page_size: int = 100,
    page_token: str | None = None,
    client: Client | None = None,
) -> JobsPublic:
    """One page of the project's jobs, newest first; pass ``next_page_token`` for the next."""
    c = _client(client)
    wanted: builtins.list[JobStatus] | None = None
    if status is not None:
        raw = [status] if isinstance(status, str) else builtins.list(status)
        try:
            wanted = [JobStatus(str(s).lower()) for s in raw]
        except ValueError:
            raise InvalidArgument.for_field(
                "status", f"expected one of {', '.join(s.value for s in JobStatus)}, got {status!r}"
            ) from None
    return c.backend.list_jobs(
        c._ready(),
        status=wanted,
        tuning_job_id=tuning_job_id,
        page_size=page_size,
        page_token=page_token,
    )


def _wait(c: Client, job_id: str, timeout_s: float | None, poll_s: float = 0.2) -> Job:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    project = c._ready()
    while True:
        job = c.backend.get_job(project, job_id)
        if job.status.final or (deadline is not None and time.monotonic() >= deadline):
            return job
        time.sleep(poll_s)


def wait(job_id: str, *, timeout_s: float | None = None, client: Client | None = None) -> Job:
    """Block until the job is completed, failed or stopped (or ``timeout_s`` passed) and
    return it; check ``job.status``."""
    return _wait(_client(client), job_id, timeout_s)


def stop(job_id: str, *, reason: str | None = None, client: Client | None = None) -> Job:
    """Ask the job to stop: a queued job stops at once, a running one within a second or so."""
    c = _client(client)
    return c.backend.stop_job(c._ready(), job_id, reason)


def delete(job_id: str, *, client: Client | None = None) -> None:
    """Delete a final job and its log (its run stays)."""
    c = _client(client)
    c.backend.delete_job(c._ready(), job_id)


def logs(job_id: str, *, after_seq: int = 0, client: Client | None = None) -> str:
    """The job's log so far, as one string."""
    c = _client(client)
    project = c._ready()
    parts: builtins.list[str] = []
    while True:
        page = c.backend.get_job_logs(project, job_id, after_seq, 1000)
        parts.extend(ch.data for ch in page.data)
        if len(page.data) < 1000:
            return "".join(parts)
        after_seq = page.next_seq


def follow_logs(
    job_id: str, *, after_seq: int = 0, poll_s: float = 0.25, client: Client | None = None
) -> Iterator[JobLogChunk]:
    """Yield the job's log chunks as they are written, until the job is final."""
    c = _client(client)
    project = c._ready()
    while True:
        page = c.backend.get_job_logs(project, job_id, after_seq, 1000)
        yield from page.data
        after_seq = page.next_seq
        if page.done:
            return
        if len(page.data) < 1000:
            time.sleep(poll_s)
