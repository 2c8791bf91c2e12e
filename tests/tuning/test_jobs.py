"""Tuning jobs whose trials are training jobs: real subprocesses through the job worker and the
launcher, on both databases."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from shipyard.core.errors import Conflict, InvalidArgument
from shipyard.jobs.schemas import JobCreate
from shipyard.tuning.schemas import (
    Objective,
    ParamSpec,
    RegisterBest,
    TrialState,
    TuningJobCreate,
)

pytestmark = pytest.mark.timeout(120)


def body(trial: dict[str, Any], **kw: Any) -> TuningJobCreate:
    fields: dict[str, Any] = {
        "objective": Objective(metric="loss", direction="minimize"),
        "space": {"q": ParamSpec(type="categorical", choices=[0.0, 1.0, 2.0])},
        "strategy": "grid",
        "max_trials": 4,
        "max_parallel": 2,
        "seed": 0,
        "trial": JobCreate.model_validate(trial),
    }
    fields.update(kw)
    return TuningJobCreate.model_validate(fields)


def _times(services: Any, project: str, job_id: str) -> tuple[float, float]:
    text = "".join(c.data for c in services.jobs.logs(project, job_id).data)
    start = float(re.search(r"started q=\S+ pid=\d+ t=([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    end = float(re.search(r"ended q=\S+ t=([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    return start, end


# PostgreSQL only: script trials on SQLite are the next tests' (each trial is a real job of a
# second or two, and the suite stays fast).
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_script_trials_run_in_parallel_and_the_best_model_registers(
    sy: Any, services: Any, trial_spec: dict[str, Any]
) -> None:
    """Through the SDK, on both backends: a grid of four script trials, two at a time."""
    project = sy.get_client().project
    tj = sy.tuning.create(
        space={"q": [0.0, 1.0, 2.0, 3.0]},
        objective="loss",
        strategy="grid",
        max_trials=10,  # the grid has 4 points: 4 trials
        max_parallel=2,
        name="grid-q",
        **trial_spec,
        hyperparameters={"epochs": 3, "step_s": 0.15},
    )
    assert tj.status.value == "running" and tj.info.kind.value == "job"
    done = tj.wait(timeout_s=90, poll_s=0.2).info
    assert done.status.value == "completed", done.failure_reason
    trials = done.trials
    assert sorted(t.params["q"] for t in trials) == [0.0, 1.0, 2.0, 3.0]  # the whole grid
    assert all(t.state == TrialState.completed for t in trials)
    for t in trials:
        assert t.value == pytest.approx(t.params["q"] + 1 / 3)  # the latest logged loss
        assert t.intermediate_values == pytest.approx(
            {s: t.params["q"] + 1 / (s + 1) for s in range(3)}
        )
        job = services.jobs.get(project, t.job_id)
        assert job.tuning_job_id == tj.id and job.run_id == t.run_id
        assert job.spec.hyperparameters == {"epochs": 3, "step_s": 0.15, "q": t.params["q"]}
        run = services.tracking.get_run(project, t.run_id)
        assert run.params["q"] == str(t.params["q"]) and run.status.value == "FINISHED"
    assert done.best is not None and done.best.params == {"q": 0.0}
    assert done.best.run_id == next(t.run_id for t in trials if t.params["q"] == 0.0)
    assert done.best.job_id == next(t.job_id for t in trials if t.params["q"] == 0.0)
    # max_parallel=2: two trials overlapped in time, never three.
    spans = [_times(services, project, t.job_id) for t in trials]
    overlaps = [sum(1 for s, e in spans if s <= at < e) for at, _ in spans]
    assert max(overlaps) == 2
    assert services.jobs.list(project, tuning_job_id=tj.id).count == 4
    mv = tj.register_best("shift")
    assert mv.name == "shift" and mv.version == 1 and mv.run_id == done.best.run_id
    assert mv.tags["shipyard.tuning_job_id"] == tj.id
    assert sy.tuning.stop(tj.id).status.value == "completed"  # a finished job stays as it is


def test_a_bad_trial_template_or_space_is_refused(
    services: Any, project: str, trial_spec: dict[str, Any]
) -> None:
    services.projects.ensure_project(project)
    with pytest.raises(InvalidArgument) as err:
        services.tuning.create(
            project, body({**trial_spec, "hyperparameters": {"q": 1.0}}, strategy="random")
        )
    assert err.value.details["field"] == "trial.hyperparameters.q"
    with pytest.raises(InvalidArgument) as err:
        services.tuning.create(
            project,
            body(trial_spec, space={"q": ParamSpec(type="float", low=0, high=1)}),
        )
    assert err.value.details["field"] == "space.q.step"
    assert services.tuning.list(project).data == []


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_failing_trials_fail_the_tuning_job_early_with_their_reason(
    services: Any, project: str
) -> None:
    services.projects.ensure_project(project)
    spec = {"entry_point": ["python", "-c", "import sys; sys.exit('no data here')"]}
    tj = services.tuning.create(project, body(spec, strategy="random", max_trials=8))
    done = services.tuning.wait(project, tj.id, timeout_s=60)
    assert done.status.value == "failed"
    assert "trials failed" in (done.failure_reason or "")
    assert len(done.trials) < 8  # it did not run the rest
    with pytest.raises(Conflict):
        services.tuning.register_best(project, tj.id, RegisterBest(model_name="none"))
    with pytest.raises(Conflict, match="is failed"):
        services.tuning.resume(project, tj.id)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_asha_stops_the_jobs_of_clearly_bad_script_trials(
    services: Any, project: str, printing_trial: dict[str, Any]
) -> None:
    """The loss comes from the trial's log (a metric definition) as it is printed."""
    services.projects.ensure_project(project)
    spec = {**printing_trial, "hyperparameters": {"report": "print", "epochs": 6, "step_s": 0.2}}
    tj = services.tuning.create(
        project,
        body(
            spec,
            space={"q": ParamSpec(type="categorical", choices=[0.0, 5.0, 10.0, 20.0, 30.0])},
            max_trials=5,
            early_stopping="asha",
            min_resource=1,
            reduction_factor=2,
        ),
    )
    done = services.tuning.wait(project, tj.id, timeout_s=90)
    assert done.status.value == "completed", done.failure_reason
    pruned = [t for t in done.trials if t.state == TrialState.pruned]
    assert pruned, [(t.params, t.state, t.intermediate_values) for t in done.trials]
    for t in pruned:
        assert t.params["q"] > 0.0 and t.error == "pruned by ASHA/Hyperband"
        assert len(t.intermediate_values) < 6  # stopped before its last epoch
        job = services.jobs.wait(project, t.job_id, timeout_s=20)
        assert job.status.value == "stopped"
        assert "pruned by ASHA/Hyperband" in (job.failure_reason or "") or job.stop_requested
    assert done.best is not None and done.best.params == {"q": 0.0}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_restarted_shipyard_resumes_an_unfinished_tuning_job(
    settings: Any, project: str, printing_trial: dict[str, Any]
) -> None:
    from tests.tuning.conftest import fast_services

    first = fast_services(settings)
    first.projects.ensure_project(project)
    spec = {**printing_trial, "hyperparameters": {"report": "print", "epochs": 2, "step_s": 0.2}}
    tj = first.tuning.create(
        project,
        body(spec, space={"q": ParamSpec(type="categorical", choices=[0.0, 1.0])}, max_parallel=1),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = first.tuning.get(project, tj.id)
        if info.trials_count.completed >= 1:
            break
        time.sleep(0.1)
    assert info.trials_count.completed >= 1
    first.close()  # the process ends: its coordinator lets the tuning job go
    first_left = second = None
    try:
        second = fast_services(settings)
        left = second.tuning.get(project, tj.id)
        assert left.status.value == "running"
        first_left = left.trials_count.completed
        second.start_job_worker()  # as `shipyard server` does when it starts
        # A server adopts every orphan when it starts; `shipyard tuning resume` adopts one
        # (here it already is).
        assert list(second.tuning.start()) == [tj.id]
        assert second.tuning.resume(project, tj.id).status.value == "running"
        done = second.tuning.wait(project, tj.id, timeout_s=60)
    finally:
        if second is not None:
            second.close()
    assert done.status.value == "completed", done.failure_reason
    assert [t.number for t in done.trials] == [0, 1]
    assert sorted(t.params["q"] for t in done.trials) == [0.0, 1.0]  # no point twice
    assert all(t.state == TrialState.completed for t in done.trials)
    assert first_left == 1  # the second trial was left to the restarted Shipyard
    # One job per trial: a trial submitted before the restart was not submitted again.
    third = fast_services(settings)
    try:
        assert third.jobs.list(project, tuning_job_id=tj.id).count == 2
    finally:
        third.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_stopping_a_tuning_job_stops_its_running_trials(
    services: Any, project: str, printing_trial: dict[str, Any]
) -> None:
    services.projects.ensure_project(project)
    spec = {**printing_trial, "hyperparameters": {"report": "print", "epochs": 60, "step_s": 0.5}}
    tj = services.tuning.create(project, body(spec, strategy="random", max_trials=6))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = [
            t for t in services.tuning.get(project, tj.id).trials or [] if t.job_id is not None
        ]
        if len(running) == 2 and all(
            services.jobs.get(project, t.job_id).status.value == "running" for t in running
        ):
            break
        time.sleep(0.1)
    assert len(running) == 2
    t0 = time.monotonic()
    assert services.tuning.stop(project, tj.id).status.value in ("stopping", "stopped")
    done = services.tuning.wait(project, tj.id, timeout_s=30, poll_s=0.1)
    assert done.status.value == "stopped" and time.monotonic() - t0 < 10
    assert [t.state for t in done.trials] == [TrialState.stopped, TrialState.stopped]
    for t in done.trials:
        job = services.jobs.wait(project, t.job_id, timeout_s=20)
        assert job.status.value == "stopped"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_sdk_checks_the_trial_job_and_makes_its_paths_absolute(
    sy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.tuning.conftest import SCRIPTS

    space = {"q": sy.tuning.uniform(0.0, 1.0)}
    with pytest.raises(sy.InvalidArgument) as err:
        sy.tuning.create(space=space, objective="loss", entry_point="nope.py", source_dir=SCRIPTS)
    assert err.value.details["field"] == "trial.entry_point"
    with pytest.raises(sy.InvalidArgument) as err:
        sy.tuning.create(
            space=space, objective="loss", entry_point="train.py", source_dir=SCRIPTS, retries=-1
        )
    assert err.value.details["field"] == "trial.retries"
    monkeypatch.chdir(SCRIPTS)
    tj = sy.tuning.create(
        space=space,
        objective="loss",
        entry_point="train.py",
        metric_definitions={"loss": r"loss=([0-9.]+)"},
        hyperparameters={"report": "print", "epochs": 50, "step_s": 0.2},
        max_trials=1,
    )
    assert tj.info.trial is not None and tj.info.trial.source_dir == str(SCRIPTS)
    assert tj.info.trial.metric_definitions[0].name == "loss"
    assert tj.stop().status.value in ("stopping", "stopped")
    assert tj.wait(timeout_s=30, poll_s=0.1).status.value == "stopped"
