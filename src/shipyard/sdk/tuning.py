"""Hyperparameter tuning from the SDK: ``sy.tuning.create`` (each trial a training job) and
``sy.tune`` (each trial a Python function called here).

    import shipyard as sy

    space = {"lr": sy.tuning.loguniform(1e-4, 1e-1), "depth": sy.tuning.integer(2, 8)}
    job = sy.tuning.create(entry_point="train.py", source_dir="/src", space=space,
                           objective="val_loss", max_trials=20, max_parallel=2)
    job.wait().best                       # params, value, run_id, job_id
    job.register_best("churn")            # the best trial's model/ as a new version

    def objective(params, trial):
        for step in range(10):
            loss = ...
            trial.report(loss, step)      # intermediate values feed ASHA/Hyperband
            if trial.should_prune():
                raise sy.tuning.TrialPruned()
        return loss
    sy.tune(objective, space=space, max_trials=50, strategy="asha").best

Every trial is a run. ``sy.tune`` runs Optuna here, in memory, and reports finished trials to
Shipyard in batches (one call, one transaction, per batch), so tracking costs a trial well under
a millisecond.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from shipyard.core.errors import InvalidArgument
from shipyard.core.schemas import invalid_from_validation
from shipyard.jobs.schemas import JobCreate
from shipyard.models.schemas import ModelVersionPublic
from shipyard.sdk import fluent
from shipyard.sdk.client import Client
from shipyard.tuning import engine
from shipyard.tuning.schemas import (
    Objective,
    ParamSpec,
    RegisterBest,
    TrialRecord,
    TrialsReport,
    TrialState,
    TuningJobCreate,
    TuningJobKind,
    TuningJobPublic,
    TuningJobStatus,
)

__all__ = [
    "Trial",
    "TrialPruned",
    "TuningJob",
    "categorical",
    "create",
    "delete",
    "get",
    "integer",
    "list_jobs",
    "loguniform",
    "register_best",
    "stop",
    "tune",
    "uniform",
    "wait",
]

log = logging.getLogger("shipyard.tuning")

SpaceLike = Mapping[str, ParamSpec | Mapping[str, Any] | list[Any]]
Progress = Callable[[TuningJobPublic], None]


class TrialPruned(Exception):
    """Raise it from an objective function to end the trial as pruned."""


# -- the search space ---------------------------------------------------------------------------


def uniform(low: float, high: float, *, step: float | None = None) -> ParamSpec:
    return ParamSpec(type="float", low=low, high=high, step=step)  # type: ignore[arg-type]


def loguniform(low: float, high: float) -> ParamSpec:
    return ParamSpec(type="float", low=low, high=high, log=True)  # type: ignore[arg-type]


def integer(low: int, high: int, *, step: int = 1, log: bool = False) -> ParamSpec:
    return ParamSpec(type="int", low=low, high=high, step=step, log=log)  # type: ignore[arg-type]


def categorical(choices: Iterable[Any]) -> ParamSpec:
    return ParamSpec(type="categorical", choices=list(choices))  # type: ignore[arg-type]


def _space(space: SpaceLike) -> dict[str, ParamSpec]:
    from pydantic import ValidationError

    if not isinstance(space, Mapping) or not space:
        raise InvalidArgument.for_field("space", "expected a non-empty mapping of parameters")
    out: dict[str, ParamSpec] = {}
    for name, p in space.items():
        if isinstance(p, ParamSpec):
            out[name] = p
        elif isinstance(p, list | tuple):
            out[name] = categorical(p)
        elif isinstance(p, Mapping):
            try:
                out[name] = ParamSpec.model_validate(dict(p))
            except ValidationError as exc:
                err = invalid_from_validation(exc)
                field = f"space.{name}.{err.details.get('field', '')}".rstrip(".")
                raise InvalidArgument(
                    f"space.{name}: {err.message}", {**err.details, "field": field}
                ) from None
        else:
            raise InvalidArgument.for_field(
                f"space.{name}",
                "expected a parameter (sy.tuning.uniform, loguniform, integer, categorical), "
                f"a dict, or a list of choices; got {type(p).__name__}",
            )
    return out


def _validated(model: type[Any], **fields: Any) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from None


# -- the tuning job handle ----------------------------------------------------------------------


class TuningJob:
    """A tuning job as last fetched (``info``), with what one does with it."""

    def __init__(self, client: Client, info: TuningJobPublic) -> None:
        self.client = client
        self.info = info

    def __repr__(self) -> str:
        return f"<TuningJob {self.id} {self.info.name!r} {self.status.value}>"

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> TuningJobStatus:
        return self.info.status

    @property
    def best(self) -> Any:
        """The best completed trial (``params``, ``value``, ``run_id``, ``job_id``), or None."""
        return self.info.best

    @property
    def trials(self) -> list[Any]:
        if self.info.trials is None:
            self.refresh()
        return list(self.info.trials or [])

    def trials_dataframe(self) -> Any:
        """The trials as a pandas DataFrame: number, state, the objective, one ``params.<name>``
        column per parameter, the trial's run and job, and its start and end."""
        import pandas as pd

        metric = self.info.objective.metric
        rows = [
            {
                "number": t.number,
                "state": t.state.value,
                metric: t.value,
                **{f"params.{k}": v for k, v in t.params.items()},
                "run_id": t.run_id,
                "job_id": t.job_id,
                "started_at": t.started_at,
                "ended_at": t.ended_at,
            }
            for t in self.trials
        ]
        columns = ["number", "state", metric, *[f"params.{k}" for k in self.info.space]]
        columns += ["run_id", "job_id", "started_at", "ended_at"]
        return pd.DataFrame(rows, columns=columns)

    def refresh(self) -> TuningJob:
        self.info = self.client.backend.get_tuning_job(self.client._ready(), self.id)
        return self

    def wait(
        self,
        timeout_s: float | None = None,
        on_progress: Progress | None = None,
        poll_s: float | None = None,
    ) -> TuningJob:
        """Poll until the tuning job ends (or ``timeout_s`` passes: ``TimeoutError``). By
        default the polls start 50 ms apart and slow down to 1 s as the search goes on."""
        t0 = time.monotonic()
        deadline = None if timeout_s is None else t0 + timeout_s
        backend, project = self.client.backend, self.client._ready()
        while True:
            info = backend.get_tuning_job(project, self.id, with_trials=False)
            if on_progress is not None:
                on_progress(info)
            if info.status.final:
                return self.refresh()
            if deadline is not None and time.monotonic() >= deadline:
                self.info = info
                raise TimeoutError(
                    f"tuning job {self.id} is still {info.status.value} after {timeout_s} s"
                )
            time.sleep(
                poll_s if poll_s is not None else min(1.0, 0.05 + (time.monotonic() - t0) / 20)
            )

    def stop(self) -> TuningJob:
        self.info = self.client.backend.stop_tuning_job(self.client._ready(), self.id)
        return self

    def resume(self) -> TuningJob:
        """Drive the tuning job in this process, when the one that drove it has ended."""
        self.info = self.client.backend.resume_tuning_job(self.client._ready(), self.id)
        return self

    def register_best(
        self, model_name: str, *, artifact_path: str = "model", description: str = ""
    ) -> ModelVersionPublic:
        """Register the best trial's model (its run's ``model/`` folder) as a new version."""
        body = _validated(
            RegisterBest,
            model_name=model_name,
            artifact_path=artifact_path,
            description=description,
        )
        return self.client.backend.register_best_trial(self.client._ready(), self.id, body)


def _client(client: Client | None) -> Client:
    return client or fluent.get_client()


def create(
    *,
    space: SpaceLike,
    objective: str,
    direction: str = "minimize",
    strategy: str = "bayesian",
    max_trials: int = 20,
    max_parallel: int = 1,
    early_stopping: str | None = None,
    warm_start_from: Iterable[str | TuningJob] = (),
    name: str | None = None,
    experiment: str | None = None,
    seed: int | None = None,
    min_resource: int = 1,
    max_resource: int | None = None,
    reduction_factor: int = 3,
    trial: JobCreate | Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    wait: bool = False,
    timeout_s: float | None = None,
    client: Client | None = None,
    **job: Any,
) -> TuningJob:
    """Start a tuning job whose trials are training jobs. The job each trial runs is ``trial``
    or the keyword arguments of ``sy.jobs.submit`` (``entry_point``, ``source_dir``,
    ``algorithm``, ``hyperparameters`` (static), ``inputs``, ``resources``, ...); each trial adds
    its sampled values to the hyperparameters. ``objective`` is the metric the trial's run logs
    (through ``sy.log_metric`` or a metric definition); its latest value is the trial's."""
    c = _client(client)
    template: dict[str, Any] = {}
    if isinstance(trial, JobCreate):
        template = trial.model_dump(exclude_unset=True)
    elif trial is not None:
        template = dict(trial)
    template.update(job)
    spec = _trial_spec(template)
    body = _validated(
        TuningJobCreate,
        name=name,
        kind=TuningJobKind.job,
        objective=Objective(metric=objective, direction=direction),  # type: ignore[arg-type]
        space=_space(space),
        strategy=strategy,
        early_stopping=early_stopping,
        max_trials=max_trials,
        max_parallel=max_parallel,
        min_resource=min_resource,
        max_resource=max_resource,
        reduction_factor=reduction_factor,
        seed=seed,
        warm_start_from=[w.id if isinstance(w, TuningJob) else w for w in warm_start_from],
        trial=spec,
        experiment=experiment,
        idempotency_key=idempotency_key,
    )
    tj = TuningJob(c, c.backend.create_tuning_job(c._ready(), body))
    return tj.wait(timeout_s) if wait else tj


def _trial_spec(t: dict[str, Any]) -> JobCreate:
    """The trial's job, with local paths made absolute (against this process's folder) and
    checked, as ``sy.jobs.submit`` does: a typo fails here, not in every trial."""
    import base64
    import os
    from pathlib import Path

    def local(raw: Any, field: str) -> str:
        p = Path(raw).expanduser().resolve()
        if not p.exists():
            raise InvalidArgument.for_field(field, f"no such file or folder: {p}")
        return str(p)

    t = {k: v for k, v in t.items() if v is not None}
    if "source_dir" in t:
        t["source_dir"] = local(t["source_dir"], "trial.source_dir")
    entry = t.get("entry_point")
    if isinstance(entry, str | os.PathLike):
        script = Path(entry).expanduser()
        if "source_dir" not in t:
            if script.is_absolute():
                t["source_dir"], script = str(script.parent), Path(script.name)
            else:
                t["source_dir"] = str(Path.cwd())
        if not (Path(t["source_dir"]) / script).is_file():
            raise InvalidArgument.for_field(
                "trial.entry_point", f"no such file: {Path(t['source_dir']) / script}"
            )
        t["entry_point"] = str(script)
    if callable(t.get("function")):
        import cloudpickle

        t["function_pickle"] = base64.b64encode(cloudpickle.dumps(t.pop("function"))).decode()
    if isinstance(t.get("metric_definitions"), Mapping):
        t["metric_definitions"] = [
            {"name": k, "regex": v} for k, v in t["metric_definitions"].items()
        ]
    if isinstance(t.get("inputs"), Mapping):
        t["inputs"] = {
            k: str(v) if "://" in str(v) else local(v, f"trial.inputs.{k}")
            for k, v in t["inputs"].items()
        }
    from pydantic import ValidationError

    try:
        return JobCreate.model_validate(t)
    except ValidationError as exc:
        err = invalid_from_validation(exc)
        field = f"trial.{err.details.get('field', '')}".rstrip(".")
        raise InvalidArgument(f"trial: {err.message}", {**err.details, "field": field}) from None


def get(tuning_job_id: str, *, client: Client | None = None) -> TuningJob:
    c = _client(client)
    return TuningJob(c, c.backend.get_tuning_job(c._ready(), tuning_job_id))


def list_jobs(
    *,
    status: str | None = None,
    kind: str | None = None,
    page_size: int = 100,
    page_token: str | None = None,
    client: Client | None = None,
) -> Any:
    c = _client(client)
    return c.backend.list_tuning_jobs(
        c._ready(),
        status=TuningJobStatus(status) if status else None,
        kind=TuningJobKind(kind) if kind else None,
        page_size=page_size,
        page_token=page_token,
    )


def wait(
    tuning_job_id: str, timeout_s: float | None = None, *, client: Client | None = None
) -> TuningJob:
    return get(tuning_job_id, client=client).wait(timeout_s)


def stop(tuning_job_id: str, *, client: Client | None = None) -> TuningJob:
    c = _client(client)
    return TuningJob(c, c.backend.stop_tuning_job(c._ready(), tuning_job_id))


def delete(tuning_job_id: str, *, client: Client | None = None) -> None:
    """Forget a finished tuning job (its trials' jobs and runs stay)."""
    c = _client(client)
    c.backend.delete_tuning_job(c._ready(), tuning_job_id)


def register_best(
    tuning_job_id: str,
    model_name: str,
    *,
    artifact_path: str = "model",
    client: Client | None = None,
) -> ModelVersionPublic:
    return get(tuning_job_id, client=client).register_best(model_name, artifact_path=artifact_path)


# -- function trials ----------------------------------------------------------------------------


class Trial:
    """What an objective function gets beside its params: report intermediate values (they
    feed ASHA/Hyperband and become the objective metric's history in the trial's run) and ask
    whether to stop early."""

    def __init__(self, search: engine.Search, number: int, params: dict[str, Any]) -> None:
        self._search = search
        self.number = number
        self.params = params
        self.intermediate_values: dict[int, float] = {}
        self.metrics: list[tuple[str, float | None, int]] = []

    def __repr__(self) -> str:
        return f"<Trial {self.number} {self.params}>"

    def report(self, value: float, step: int) -> None:
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InvalidArgument.for_field("step", f"expected an integer >= 0, got {step!r}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InvalidArgument.for_field("value", f"expected a number, got {value!r}") from None
        if not math.isfinite(v):
            return  # NaN or infinity says nothing a pruner could use
        self.intermediate_values[step] = v
        self._search.report(self.number, {step: v})

    def should_prune(self) -> bool:
        return self._search.should_prune(self.number)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        """Log another metric in the trial's run (its objective is logged already)."""
        if not isinstance(key, str) or not 0 < len(key) <= 250:
            raise InvalidArgument.for_field("key", f"expected a metric name, got {key!r}")
        if not isinstance(step, int) or isinstance(step, bool):
            raise InvalidArgument.for_field("step", f"expected an integer, got {step!r}")
        try:
            v: float | None = float(value)
        except (TypeError, ValueError):
            raise InvalidArgument.for_field(
                f"metrics.{key}", f"expected a number, got {value!r}"
            ) from None
        self.metrics.append((key, None if v is None or math.isnan(v) else v, step))


def _is_pruned(exc: BaseException) -> bool:
    if isinstance(exc, TrialPruned):
        return True
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a dependency
        return False
    return isinstance(exc, optuna.TrialPruned)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def tune(
    objective_fn: Callable[..., float],
    *,
    space: SpaceLike,
    max_trials: int = 20,
    direction: str = "minimize",
    strategy: str = "bayesian",
    early_stopping: str | None = None,
    metric: str = "objective",
    name: str | None = None,
    experiment: str | None = None,
    warm_start_from: Iterable[str | TuningJob] = (),
    seed: int | None = None,
    min_resource: int = 1,
    max_resource: int | None = None,
    reduction_factor: int = 3,
    catch: bool = False,
    report_every: int = 200,
    report_every_s: float = 2.0,
    heartbeat_s: float = 10.0,
    client: Client | None = None,
) -> TuningJob:
    """Tune a Python function here: ``objective_fn(params, trial) -> float`` (or
    ``objective_fn(params)``) is called once per trial with the sampled ``params``. Returns
    the finished tuning job (``.best``).

    Each trial is a run: its params, the objective (``metric``; the values given to
    ``trial.report`` are its history) and what ``trial.log_metric`` logged. Inside the objective
    there is no active run (``sy.log_metric`` would start one of its own): log through ``trial``.
    A trial that raises ``sy.tuning.TrialPruned`` (or Optuna's) is pruned. One that raises
    anything else is failed, and the error ends the tuning job (re-raised) unless ``catch``.
    Trials are reported in batches of ``report_every`` or every ``report_every_s`` seconds; a
    tuning job stopped meanwhile (``shipyard tuning stop``) ends at the next report."""
    c = _client(client)
    project = c._ready()
    backend = c.backend
    warm_ids = [w.id if isinstance(w, TuningJob) else w for w in warm_start_from]
    body = _validated(
        TuningJobCreate,
        name=name,
        kind=TuningJobKind.function,
        objective=Objective(metric=metric, direction=direction),  # type: ignore[arg-type]
        space=_space(space),
        strategy=strategy,
        early_stopping=early_stopping,
        max_trials=max_trials,
        max_parallel=1,
        min_resource=min_resource,
        max_resource=max_resource,
        reduction_factor=reduction_factor,
        seed=seed,
        warm_start_from=warm_ids,
        experiment=experiment,
    )
    engine.check_space(body.space, body.strategy)
    warm: list[engine.TrialRow] = []
    for wid in warm_ids:
        earlier = backend.get_tuning_job(project, wid)
        warm.extend(
            engine.TrialRow(t.number, t.params, t.state, t.value, t.intermediate_values)
            for t in earlier.trials or []
        )
    info = backend.create_tuning_job(project, body)
    from shipyard.tuning.service import config_of

    cfg = config_of(body)
    search = engine.Search(cfg, [], warm, name=info.id)
    budget = engine.trial_budget(cfg, max_trials)
    pending: list[TrialRecord] = []
    last_report = time.monotonic()

    def report(status: str | None = None, reason: str | None = None) -> TuningJobPublic:
        nonlocal pending, last_report
        batch, pending = pending, []
        last_report = time.monotonic()
        return backend.report_tuning_trials(
            project,
            info.id,
            TrialsReport(trials=batch, status=status, failure_reason=reason),  # type: ignore[arg-type]
        )

    wants_trial = _takes_trial(objective_fn)
    # While an objective runs (maybe for long), a heartbeat renews the job's lease, so a
    # process that dies mid-search has its tuning job failed instead of left running.
    beat_stop = threading.Event()

    def heartbeat() -> None:
        while not beat_stop.wait(heartbeat_s):
            if time.monotonic() - last_report < heartbeat_s:
                continue
            try:
                backend.report_tuning_trials(project, info.id, TrialsReport())
            except Exception:  # the next report or heartbeat tries again
                log.debug("tuning job %s: heartbeat failed", info.id, exc_info=True)

    beat = threading.Thread(target=heartbeat, name=f"tune-{info.id}", daemon=True)
    beat.start()
    try:
        completed = 0
        for _ in range(budget):
            number, params = search.ask()
            trial = Trial(search, number, params)
            start = time.time_ns() // 1_000_000
            state, value, error = TrialState.completed, None, None
            raised: BaseException | None = None
            try:
                result = objective_fn(params, trial) if wants_trial else objective_fn(params)
            except KeyboardInterrupt:
                search.tell(number, TrialState.failed)
                pending.append(_record(trial, TrialState.stopped, None, "interrupted", start))
                report("stopped", "interrupted")
                raise
            except Exception as exc:
                if _is_pruned(exc):
                    state = TrialState.pruned
                    if trial.intermediate_values:
                        value = trial.intermediate_values[max(trial.intermediate_values)]
                else:
                    state = TrialState.failed
                    error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:8000]
                    raised = exc
            else:
                try:
                    value = float(result)
                except (TypeError, ValueError):
                    value = None
                if value is None or not math.isfinite(value):
                    state, value = TrialState.failed, None
                    error = f"the objective returned {result!r}; expected a finite number"
            search.tell(number, state, value)
            completed += state == TrialState.completed
            pending.append(_record(trial, state, value, error, start))
            if raised is not None and not catch:
                report("failed", f"trial {number} raised {error}")
                raise raised
            due = len(pending) >= report_every or time.monotonic() - last_report >= report_every_s
            if due and report().status.final:  # stopped from elsewhere
                return TuningJob(c, backend.get_tuning_job(project, info.id))
        report("completed" if completed else "failed", None if completed else "no trial completed")
        return TuningJob(c, backend.get_tuning_job(project, info.id))
    finally:
        beat_stop.set()


def _takes_trial(fn: Callable[..., Any]) -> bool:
    """Whether the objective takes ``(params, trial)``, or only ``(params)``."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or a C function: assume the documented form
        return True
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    return varargs or len(positional) >= 2


def _record(
    trial: Trial, state: TrialState, value: float | None, error: str | None, start: int
) -> TrialRecord:
    # model_construct: the fields are ours and already checked; validating each record would
    # cost more than the bookkeeping it guards (the server validates the batch anyway).
    return TrialRecord.model_construct(
        number=trial.number,
        params=trial.params,
        state=state,
        value=value,
        intermediate_values=trial.intermediate_values,
        metrics=trial.metrics,
        run_id=None,
        error=error,
        started_at=_dt(start),
        ended_at=_dt(time.time_ns() // 1_000_000),
    )
