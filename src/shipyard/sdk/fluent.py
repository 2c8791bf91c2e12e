"""The run context: ``sy.init``, ``sy.start_run`` and the module-level logging functions.

State is per process: one ``Client`` (made by ``init``, or lazily with defaults) and a stack of
active runs, so ``start_run(nested=True)`` inside a run makes a child run.

Inside a training job (``SHIPYARD_RUN_ID`` and ``SHIPYARD_PROJECT`` set by the job's launcher),
the job's run is the one logged to when no run is active: ``sy.log_metric`` needs no set-up,
``sy.start_run()`` returns the job's run (its ``experiment`` and ``name`` are the job's), and
``sy.start_run(nested=True)`` makes a child of it. The job owns that run: ending it from the
script (leaving the ``with`` block, ``sy.end_run()``, interpreter exit) only flushes what was
logged; its status follows the job's.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.core.schemas import validate
from shipyard.sdk.buffer import MetricBuffer, MetricRow
from shipyard.sdk.client import Client
from shipyard.sdk.sysmetrics import SystemMetricsSampler
from shipyard.tracking.schemas import DatasetInput, RunCreate, RunPublic, RunStatus, RunUpdate

_lock = threading.RLock()
# Making the client has its own lock, never held while the buffer flushes: the buffer's
# sends look the client up (``get_client``) while ``init``, under ``_lock``, flushes it.
_client_lock = threading.Lock()
_client: Client | None = None
_buffer: MetricBuffer | None = None
_stack: list[ActiveRun] = []
# Set by a job's launcher: makes the client that the job's code gets when it has not called
# init (the launcher's own), so that the job's process opens the store once.
_default_client: Callable[[], Client] | None = None


def init(
    project: str | None = None,
    tracking_uri: str | None = None,
    token: str | None = None,
    *,
    client: Client | None = None,
) -> Client:
    """Choose the project and where to track: in-process (default) or a server
    (``tracking_uri="http://..."`` or ``SHIPYARD_TRACKING_URI``). Returns the client."""
    global _client, _buffer
    with _lock:
        if _buffer is not None:
            _buffer.close()  # flush (to the previous client), then stop its thread
        new = client or Client(project, tracking_uri, token)
        new._ready()
        with _client_lock:
            _client = new
        _buffer = None
        return new


def get_client() -> Client:
    """The client of ``init``; else the job's (in a training job), or the default one."""
    global _client
    c = _client
    if c is not None:
        return c
    with _client_lock:
        if _client is None:
            new = _default_client() if _default_client is not None else Client()
            new._ready()
            _client = new
        return _client


def _get_buffer() -> MetricBuffer:
    global _buffer
    with _lock:
        if _buffer is None:

            def send(run_id: str, rows: list[MetricRow], batch_id: str) -> None:
                # The client when sending, not when buffering: a job's first log call waits
                # for no store (``init`` flushes and replaces the buffer of an earlier one).
                client = get_client()
                client.backend.log_batch(client.project, run_id, metrics=rows, batch_id=batch_id)

            _buffer = MetricBuffer(send)
        return _buffer


def _metric_row(
    key: str, value: Any, step: int | None, timestamp: float | None, default_step: int
) -> MetricRow:
    if not isinstance(key, str) or not key or len(key) > 250:
        raise InvalidArgument.for_field(
            "key", f"expected a metric name of 1 to 250 characters, got {key!r}"
        )
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument.for_field(
            f"metrics.{key}", f"expected a number, got {value!r}"
        ) from None
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise InvalidArgument.for_field("step", f"expected an integer, got {step!r}")
    ts = int(timestamp * 1000) if timestamp is not None else time.time_ns() // 1_000_000
    if math.isnan(v):
        return (key, None, default_step if step is None else step, ts)
    if math.isinf(v):  # JSON has no infinity: the store keeps the largest finite float
        v = math.copysign(sys.float_info.max, v)
    return (key, v, default_step if step is None else step, ts)


class ActiveRun:
    """A run being logged to. A context manager: leaving the block ends the run FINISHED, or
    FAILED if the block raised (KILLED on KeyboardInterrupt)."""

    def __init__(
        self,
        client: Client | None,
        run: RunPublic | str,
        log_system_metrics: bool = False,
        system_metrics_interval_s: float = 5.0,
        *,
        owned_by_job: bool = False,
    ) -> None:
        # A training job's run is attached by its id alone (``client`` None: the process's
        # client, made when first needed): the first ``log_metric`` of a job's script only
        # buffers, with nothing read from the store.
        self._client = client
        self.id = run if isinstance(run, str) else run.id
        self._run = None if isinstance(run, str) else run
        # The run of the training job this process runs in: never ended from here.
        self.owned_by_job = owned_by_job
        self._ended = False
        self._sampler: SystemMetricsSampler | None = None
        if log_system_metrics:
            self._sampler = SystemMetricsSampler(
                lambda rows: _get_buffer().add_many(self.id, rows), system_metrics_interval_s
            )
            self._sampler.start()

    @property
    def client(self) -> Client:
        return self._client if self._client is not None else get_client()

    def _stored(self) -> RunPublic:
        if self._run is None:
            self._run = self.client.get_run(self.id)
        return self._run

    @property
    def experiment_id(self) -> str:
        return self._stored().experiment_id

    @property
    def name(self) -> str:
        return self._stored().name

    def __repr__(self) -> str:
        return f"<ActiveRun {self.id} {self.name!r}>"

    @property
    def info(self) -> RunPublic:
        """The run as stored now (flushes pending metrics first)."""
        flush()
        return self.client.get_run(self.id)

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        _get_buffer().add(self.id, _metric_row(key, value, step, timestamp, 0))

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        ts = time.time() if timestamp is None else timestamp
        _get_buffer().add_many(
            self.id, [_metric_row(k, v, step, ts, 0) for k, v in metrics.items()]
        )

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.client.backend.log_batch(
            self.client.project, self.id, params=[(k, _str(v)) for k, v in params.items()]
        )

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.backend.log_batch(
            self.client.project, self.id, tags=[(k, _str(v)) for k, v in tags.items()]
        )

    def delete_tag(self, key: str) -> None:
        self.client.delete_tag(self.id, key)

    def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Log a file (or a folder, recursively) as ``artifact_path`` (default: its name)."""
        self.client.log_artifact(self.id, local_path, artifact_path)

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Log the contents of a folder under ``artifact_path`` (default: the run's root)."""
        src = Path(local_dir)
        if not src.is_dir():
            raise InvalidArgument.for_field("local_dir", f"{src} is not a folder")
        for child in sorted(src.iterdir()):
            rel = f"{artifact_path.rstrip('/')}/{child.name}" if artifact_path else child.name
            self.client.log_artifact(self.id, child, rel)

    def log_text(self, text: str, artifact_file: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = Path(d, Path(artifact_file).name)
            p.write_text(text)
            self.client.log_artifact(self.id, p, artifact_file)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        import json

        self.log_text(json.dumps(data, indent=2, default=str), artifact_file)

    def log_input(
        self, name: str, digest: str, source: str = "", schema: Any = None, context: str = ""
    ) -> None:
        """Record a dataset this run read: its name, content digest, source and schema."""
        d = validate(
            DatasetInput, name=name, digest=digest, source=source, schema=schema, context=context
        )
        self.client.log_inputs(self.id, [d])

    def end(self, status: RunStatus | str = RunStatus.FINISHED) -> None:
        if self._ended:
            return
        self._ended = True
        if self._sampler is not None:
            self._sampler.stop()
        if self.owned_by_job:
            try:
                flush()
            finally:
                with _lock:
                    if self in _stack:
                        _stack.remove(self)
            return
        try:
            flush()
        finally:
            try:
                self.client.backend.update_run_quietly(
                    self.client.project, self.id, RunUpdate(status=RunStatus(status))
                )
            finally:
                # Off the stack even when ending failed: the error reaches the caller, and a
                # loop that ends what is active (the one at exit) moves on instead of spinning.
                with _lock:
                    if self in _stack:
                        _stack.remove(self)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            status = RunStatus.FINISHED
        elif issubclass(et, KeyboardInterrupt):
            status = RunStatus.KILLED
        else:
            status = RunStatus.FAILED
        self.end(status)


def _str(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def start_run(
    experiment: str | None = None,
    name: str | None = None,
    *,
    nested: bool = False,
    tags: Mapping[str, Any] | None = None,
    log_system_metrics: bool = False,
    system_metrics_interval_s: float = 5.0,
    run_id: str | None = None,
) -> ActiveRun:
    """Start (or with ``run_id``, resume) a run in ``experiment`` (a name; made if missing;
    default ``SHIPYARD_EXPERIMENT`` or "default"). With ``nested=True`` inside a run, the new
    run is its child.

    Inside a training job, with no run active, this returns the job's run (``experiment`` and
    ``name`` are ignored; ``tags`` are set on it), and ``nested=True`` makes a child of it.
    Ending the job's run from the script only flushes it: the job sets its status."""
    with _lock:
        parent = _stack[-1] if _stack else None
        job_run = os.environ.get("SHIPYARD_RUN_ID") or None
        if parent is None and run_id is None and job_run is not None:
            # In the launcher's process its client comes when first needed; a job's own
            # process (a command) makes its client now, as it could not at interpreter exit.
            attached = ActiveRun(
                None if _default_client is not None else get_client(),
                job_run,
                log_system_metrics,
                system_metrics_interval_s,
                owned_by_job=True,
            )
            _stack.append(attached)
            if not nested:
                if tags:
                    attached.set_tags(tags)
                return attached
            parent = attached
        elif parent is not None and parent.owned_by_job and not nested and run_id is None:
            # The job's run, attached by an earlier log call: it is the run to use.
            if tags:
                parent.set_tags(tags)
            return parent
        if parent is not None and not nested and run_id is None:
            raise InvalidArgument.for_field(
                "nested", f"run {parent.id} is already active: end it first, or pass nested=True"
            )
        client = get_client()
        if run_id is not None:
            run = client.get_run(run_id)
            if run.status != RunStatus.RUNNING:
                run = client.backend.update_run(
                    client.project, run_id, RunUpdate(status=RunStatus.RUNNING)
                )
        else:
            exp_name = experiment or os.environ.get("SHIPYARD_EXPERIMENT") or "default"
            remembered = False
            if parent is not None and experiment is None:
                exp_id = parent.experiment_id  # a child run goes where its parent is
            else:
                remembered = client.remembers_experiment(exp_name)
                exp_id = client.experiment_id(exp_name)
            body = validate(
                RunCreate,
                experiment_id=exp_id,
                name=name,
                parent_run_id=parent.id if parent is not None else None,
                tags={k: _str(v) for k, v in (tags or {}).items()},
            )
            try:
                run = client.backend.create_run(client.project, body)
            except (NotFound, InvalidArgument) as exc:
                # The id remembered for that name went stale (its experiment was deleted or
                # renamed elsewhere): look the name up again, once.
                if not remembered or exc.details.get("field") != "experiment_id":
                    raise
                body.experiment_id = client.experiment_id(exp_name, refresh=True)
                run = client.backend.create_run(client.project, body)
        active = ActiveRun(
            client,
            run,
            log_system_metrics,
            system_metrics_interval_s,
            owned_by_job=run_id is not None and run_id == job_run,
        )
        _stack.append(active)
        return active


def active_run() -> ActiveRun | None:
    with _lock:
        return _stack[-1] if _stack else None


def _current() -> ActiveRun:
    run = active_run()
    if run is None:
        return start_run()
    return run


def end_run(status: RunStatus | str = RunStatus.FINISHED) -> None:
    run = active_run()
    if run is not None:
        run.end(status)


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: float | None = None
) -> None:
    _current().log_metric(key, value, step, timestamp)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    _current().log_metrics(metrics, step)


def log_param(key: str, value: Any) -> None:
    _current().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    _current().log_params(params)


def set_tag(key: str, value: Any) -> None:
    _current().set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    _current().set_tags(tags)


def delete_tag(key: str) -> None:
    _current().delete_tag(key)


def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    _current().log_artifact(local_path, artifact_path)


def log_artifacts(local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    _current().log_artifacts(local_dir, artifact_path)


def log_input(
    name: str, digest: str, source: str = "", schema: Any = None, context: str = ""
) -> None:
    _current().log_input(name, digest, source, schema, context)


def flush() -> None:
    """Block until every metric logged so far is durable in the store."""
    buf = _buffer
    if buf is not None:
        buf.flush()


def _at_exit(status: RunStatus = RunStatus.FINISHED) -> None:
    # End what the script left open, as MLflow does, after sending what is buffered. A job's
    # launcher calls this too (with FAILED when the script failed): a task forked by the
    # executor's fork server leaves through os._exit, which skips atexit.
    try:
        while True:
            run = active_run()
            if run is None:
                break
            run.end(status)
    finally:
        if _buffer is not None:
            _buffer.close()


atexit.register(_at_exit)
