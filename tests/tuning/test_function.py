"""``sy.tune``: in-process function trials, on both backends (in-process and a real server) and
both databases. Every trial is a run with its params and objective; the tuning job's trials live
in Shipyard's tables."""

from __future__ import annotations

import pytest

from shipyard.core.errors import InvalidArgument, NotFound
from shipyard.sdk import tuning
from shipyard.tuning.schemas import TrialState

SPACE = {
    "x": tuning.uniform(-5.0, 5.0),
    "n": tuning.integer(1, 4),
    "kind": tuning.categorical(["a", "b"]),
}


def quadratic(params: dict, trial: tuning.Trial) -> float:
    trial.log_metric("n_squared", params["n"] ** 2)
    return (params["x"] - 1.0) ** 2 + params["n"] + (0.5 if params["kind"] == "b" else 0.0)


def test_tune_records_every_trial_as_a_run_and_reports_the_best(sy) -> None:  # type: ignore[no-untyped-def]
    tj = sy.tune(quadratic, space=SPACE, max_trials=12, strategy="random", seed=4)
    assert tj.status.value == "completed"
    trials = tj.trials
    assert [t.number for t in trials] == list(range(12))
    assert all(t.state == TrialState.completed for t in trials)
    best = min(trials, key=lambda t: t.value)
    assert tj.best.number == best.number and tj.best.value == pytest.approx(best.value)
    assert tj.best.params == best.params and tj.best.run_id == best.run_id
    # Each trial is a finished run in the tuning experiment, with its params and objective.
    run = sy.get_client().get_run(best.run_id)
    assert run.status.value == "FINISHED"
    assert run.params == {
        "x": repr(best.params["x"]),
        "n": str(best.params["n"]),
        "kind": best.params["kind"],
    }
    assert run.metrics["objective"].value == pytest.approx(best.value)
    assert run.metrics["n_squared"].value == best.params["n"] ** 2
    assert run.tags["shipyard.tuning_job_id"] == tj.id
    runs = sy.get_client().search_runs(
        ["tuning"], f"tags.`shipyard.tuning_job_id` = '{tj.id}'", include_count=True
    )
    assert runs.count == 12
    frame = tj.trials_dataframe()
    assert list(frame.columns[:6]) == [
        "number",
        "state",
        "objective",
        "params.x",
        "params.n",
        "params.kind",
    ]
    assert len(frame) == 12 and frame["objective"].min() == pytest.approx(best.value)
    listed = sy.tuning.list(kind="function")
    assert [j.id for j in listed.data] == [tj.id]
    assert listed.data[0].trials_count.completed == 12 and listed.data[0].trials is None


def test_intermediate_values_feed_asha_and_become_the_metric_history(sy) -> None:  # type: ignore[no-untyped-def]
    def curve(params: dict, trial: tuning.Trial) -> float:
        q = params["q"]
        for step in range(9):
            loss = q + 1.0 / (step + 1)
            trial.report(loss, step)
            if trial.should_prune():
                raise tuning.TrialPruned()
        return loss

    tj = tuning.tune(
        curve,
        space={"q": tuning.uniform(0.0, 10.0)},
        max_trials=20,
        strategy="asha",
        metric="loss",
        seed=1,
    )
    assert tj.info.early_stopping.value == "asha"
    states = [t.state for t in tj.trials]
    assert TrialState.pruned in states and TrialState.completed in states
    pruned = [t for t in tj.trials if t.state == TrialState.pruned]
    assert all(len(t.intermediate_values) < 9 for t in pruned)
    # A pruned trial's run is KILLED and holds the values it reported, step by step.
    t = pruned[0]
    c = sy.get_client()
    assert c.get_run(t.run_id).status.value == "KILLED"
    history = c.get_metric_history(t.run_id, "loss")
    assert history.steps == sorted(t.intermediate_values)
    assert history.values == pytest.approx([t.intermediate_values[s] for s in history.steps])
    assert tj.info.trials_count.pruned == len(pruned)


def test_warm_start_through_the_sdk_reuses_earlier_trials(sy) -> None:  # type: ignore[no-untyped-def]
    space = {"x": tuning.uniform(-10.0, 10.0)}

    def f(p: dict, t: tuning.Trial) -> float:
        return (p["x"] - 3) ** 2

    first = tuning.tune(f, space=space, max_trials=30, strategy="random", seed=2)
    second = tuning.tune(
        f, space=space, max_trials=5, strategy="bayesian", warm_start_from=[first], seed=2
    )
    assert second.info.warm_start_from == [first.id]
    assert len(second.trials) == 5  # its own trials only
    cold = tuning.tune(f, space=space, max_trials=5, strategy="bayesian", seed=2)
    warm_best, cold_best = second.best.value, cold.best.value
    assert warm_best < cold_best


def test_a_failing_objective_fails_the_job_with_its_error(sy) -> None:  # type: ignore[no-untyped-def]
    def broken(p: dict, t: tuning.Trial) -> float:
        if t.number == 2:
            raise ValueError("diverged")
        return p["x"]

    with pytest.raises(ValueError, match="diverged"):
        tuning.tune(broken, space={"x": tuning.uniform(0, 1)}, max_trials=5, name="broken")
    job = tuning.list_jobs().data[0]
    assert job.name == "broken" and job.status.value == "failed"
    assert "ValueError: diverged" in (job.failure_reason or "")
    info = tuning.get(job.id).trials
    assert [t.state for t in info] == [TrialState.completed] * 2 + [TrialState.failed]
    assert "diverged" in (info[2].error or "")
    # With catch, a failed trial is recorded and the search goes on.
    tj = tuning.tune(broken, space={"x": tuning.uniform(0, 1)}, max_trials=5, catch=True)
    assert tj.status.value == "completed" and tj.info.trials_count.failed == 1
    nan = tuning.tune(lambda p: float("nan"), space={"x": tuning.uniform(0, 1)}, max_trials=2)
    assert nan.status.value == "failed" and nan.best is None
    assert "expected a finite number" in (nan.trials[0].error or "")


def test_bad_space_and_arguments_name_the_field(sy) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as err:
        tuning.tune(quadratic, space={"lr": {"type": "float", "low": 1, "high": 0.1}})
    assert err.value.details["field"] == "space.lr"
    with pytest.raises(InvalidArgument) as err:
        tuning.tune(quadratic, space={"lr": {"type": "floaty", "low": 1}})
    assert err.value.details["field"].startswith("space.lr")
    with pytest.raises(InvalidArgument) as err:
        tuning.tune(quadratic, space=SPACE, strategy="annealing")
    assert err.value.details["field"] == "strategy"
    with pytest.raises(InvalidArgument) as err:
        tuning.tune(quadratic, space=SPACE, max_trials=0)
    assert err.value.details["field"] == "max_trials"
    with pytest.raises(NotFound):
        tuning.tune(quadratic, space=SPACE, warm_start_from=["nosuchjob"])
    with pytest.raises(NotFound):
        tuning.get("nosuchjob")


def test_stopping_a_function_job_ends_its_loop_at_the_next_report(sy) -> None:  # type: ignore[no-untyped-def]
    seen = []

    def f(p: dict, t: tuning.Trial) -> float:
        seen.append(t.number)
        if t.number == 3:
            running = tuning.list_jobs(status="running").data[0]
            tuning.stop(running.id)
        return p["x"]

    tj = tuning.tune(f, space={"x": tuning.uniform(0, 1)}, max_trials=50, report_every=2)
    assert tj.status.value == "stopped"
    assert len(seen) < 50
    with pytest.raises(NotFound, match="'model' not found"):
        tj.register_best("never")  # these trials logged no model


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_long_objective_keeps_its_job_alive_with_heartbeats(sy, services) -> None:  # type: ignore[no-untyped-def]
    import time

    services.tuning.lease_ms = 400

    def slow(p: dict, t: tuning.Trial) -> float:
        time.sleep(1.0)  # longer than the lease: only the heartbeat keeps the job running
        return p["x"]

    tj = tuning.tune(slow, space={"x": tuning.uniform(0, 1)}, max_trials=2, heartbeat_s=0.1)
    assert tj.status.value == "completed" and len(tj.trials) == 2
