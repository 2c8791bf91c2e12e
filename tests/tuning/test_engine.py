"""The search engine alone: the search space's checks, what each strategy proposes, grid
enumeration, warm starts, early stopping, and a study rebuilt from trial rows."""

from __future__ import annotations

import math

import pytest

from shipyard.core.errors import InvalidArgument
from shipyard.tuning import engine
from shipyard.tuning.schemas import (
    Direction,
    EarlyStopping,
    ParamSpec,
    Strategy,
    TrialState,
)

SPACE = {
    "lr": ParamSpec(type="float", low=1e-4, high=1.0, log=True),
    "dropout": ParamSpec(type="float", low=0.0, high=0.5),
    "depth": ParamSpec(type="int", low=2, high=8),
    "leaves": ParamSpec(type="int", low=8, high=256, log=True),
    "booster": ParamSpec(type="categorical", choices=["gbdt", "dart", "goss"]),
}


def cfg(
    strategy: Strategy,
    space: dict[str, ParamSpec] = SPACE,
    direction: Direction = Direction.minimize,
    **kw: object,
) -> engine.SearchConfig:
    return engine.SearchConfig(
        space=space,
        direction=direction,
        strategy=strategy,
        early_stopping=engine.effective_early_stopping(strategy, None),
        seed=3,
        **kw,  # type: ignore[arg-type]
    )


def in_space(params: dict[str, object]) -> None:
    assert set(params) == set(SPACE)
    lr, dropout = params["lr"], params["dropout"]
    assert isinstance(lr, float) and 1e-4 <= lr <= 1.0
    assert isinstance(dropout, float) and 0.0 <= dropout <= 0.5
    assert isinstance(params["depth"], int) and 2 <= params["depth"] <= 8
    assert isinstance(params["leaves"], int) and 8 <= params["leaves"] <= 256
    assert params["booster"] in ("gbdt", "dart", "goss")


@pytest.mark.parametrize(
    ("space", "field", "words"),
    [
        ({"lr": ParamSpec(type="float", low=1.0, high=0.1)}, "space.lr", "above high"),
        ({"lr": ParamSpec(type="float", low=0.0, high=1.0, log=True)}, "space.lr.low", "low > 0"),
        ({"lr": ParamSpec(type="float", high=1.0)}, "space.lr.low", "required"),
        ({"n": ParamSpec(type="int", low=1.5, high=4)}, "space.n", "whole bounds"),
        (
            {"n": ParamSpec(type="int", low=1, high=4, choices=[1])},
            "space.n.choices",
            "categorical",
        ),
        ({"c": ParamSpec(type="categorical", choices=["a", "a"])}, "space.c.choices", "twice"),
        ({"c": ParamSpec(type="categorical", choices=["a"], low=1)}, "space.c", "only 'choices'"),
        ({"x": ParamSpec(type="float", low=0, high=math.inf)}, "space.x.high", "finite"),
    ],
)
def test_a_bad_space_is_refused_naming_the_parameter(
    space: dict[str, ParamSpec], field: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        engine.check_space(space)
    assert err.value.details["field"] == field
    assert words in err.value.message and field in err.value.message


def test_grid_search_needs_a_step_for_floats_and_a_bounded_grid() -> None:
    with pytest.raises(InvalidArgument) as err:
        engine.check_space({"lr": ParamSpec(type="float", low=0.1, high=1.0)}, Strategy.grid)
    assert err.value.details["field"] == "space.lr.step"
    huge = {f"p{i}": ParamSpec(type="int", low=0, high=99) for i in range(4)}
    with pytest.raises(InvalidArgument, match="more than 1,000,000 points"):
        engine.check_space(huge, Strategy.grid)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_proposes_params_inside_the_space(strategy: Strategy) -> None:
    space = SPACE
    if strategy == Strategy.grid:
        space = {**SPACE, "lr": ParamSpec(type="float", low=0.1, high=0.5, step=0.1)}
        space["dropout"] = ParamSpec(type="float", low=0.0, high=0.5, step=0.25)
    search = engine.Search(cfg(strategy, space))
    for i in range(15):  # past TPE's 10 random start-up trials
        number, params = search.ask()
        assert number == i
        if strategy == Strategy.grid:
            assert params["lr"] in (0.1, 0.2, 0.3, 0.4, 0.5)
            assert params["dropout"] in (0.0, 0.25, 0.5)
        else:
            in_space(params)
        search.tell(number, TrialState.completed, float(params["depth"]))


def test_bayesian_search_concentrates_near_the_optimum() -> None:
    space = {"x": ParamSpec(type="float", low=-10, high=10)}
    tpe, rnd = (
        engine.Search(cfg(Strategy.bayesian, space)),
        engine.Search(cfg(Strategy.random, space)),
    )
    for s in (tpe, rnd):
        for _ in range(40):
            n, p = s.ask()
            s.tell(n, TrialState.completed, (p["x"] - 3) ** 2)

    def late_median(s: engine.Search) -> float:
        late = sorted(abs(t.params["x"] - 3) for t in s.study.trials[-20:])
        return late[len(late) // 2]

    assert late_median(tpe) < late_median(rnd) / 2
    assert min(t.value for t in tpe.study.trials if t.value is not None) < 0.5


def test_grid_enumerates_every_point_once_and_resumes_where_it_left() -> None:
    space = {
        "x": ParamSpec(type="float", low=0.0, high=1.0, step=0.25),
        "k": ParamSpec(type="categorical", choices=["a", "b"]),
        "n": ParamSpec(type="int", low=1, high=3),
    }
    c = cfg(Strategy.grid, space)
    assert engine.grid_size(space) == 30
    assert engine.trial_budget(c, 100) == 30
    search = engine.Search(c)
    first = []
    for _ in range(12):
        n, p = search.ask()
        first.append(p)
        search.tell(n, TrialState.completed, 1.0)
    # A new process rebuilds the study from the rows and finishes the grid.
    rows = [engine.TrialRow(i, p, TrialState.completed, 1.0) for i, p in enumerate(first)]
    again = engine.Search(c, rows)
    rest = []
    for _ in range(18):
        n, p = again.ask()
        rest.append(p)
        again.tell(n, TrialState.completed, 1.0)
    assert n == 29
    seen = {tuple(sorted(p.items())) for p in first + rest}
    assert seen == {tuple(sorted(p.items())) for p in engine.grid_points(space)}


def test_warm_start_adds_earlier_completed_trials_to_the_study() -> None:
    space = {"x": ParamSpec(type="float", low=-10, high=10)}
    earlier_search = engine.Search(cfg(Strategy.random, space))
    earlier = []
    for _ in range(40):
        n, p = earlier_search.ask()
        earlier.append(engine.TrialRow(n, p, TrialState.completed, (p["x"] - 3) ** 2))
    earlier.append(engine.TrialRow(40, {"x": 1.0}, TrialState.failed))
    earlier.append(engine.TrialRow(41, {"y": 1.0}, TrialState.completed, 0.0))  # another space
    warm = engine.Search(cfg(Strategy.bayesian, space), warm=earlier)
    cold = engine.Search(cfg(Strategy.bayesian, space))
    assert warm.warm_count == 40  # completed, and in this space
    assert len(warm.study.trials) == 40

    def first_ten(s: engine.Search) -> float:
        dist = []
        for i in range(10):
            n, p = s.ask()
            assert n == i  # our numbering starts afresh: warm trials are not this job's
            s.tell(n, TrialState.completed, (p["x"] - 3) ** 2)
            dist.append(abs(p["x"] - 3))
        return sorted(dist)[5]

    # Cold, TPE starts with random proposals; warm, it already knows where the optimum is.
    assert first_ten(warm) < first_ten(cold) / 2


def _curve(quality: float, step: int) -> float:
    """A loss curve: bad configurations (high quality number) plateau high."""
    return quality + 1.0 / (step + 1)


@pytest.mark.parametrize("strategy", [Strategy.asha, Strategy.hyperband])
def test_early_stopping_prunes_clearly_bad_trials(strategy: Strategy) -> None:
    space = {"q": ParamSpec(type="float", low=0.0, high=10.0)}
    search = engine.Search(cfg(strategy, space, min_resource=1, reduction_factor=3))
    pruned, steps_run = {}, {}
    for _ in range(30):
        n, p = search.ask()
        stopped = False
        for step in range(27):
            if search.report(n, {step: _curve(p["q"], step)}):
                stopped = True
                break
        steps_run[n] = step + 1
        pruned[n] = p["q"]
        search.tell(n, TrialState.pruned if stopped else TrialState.completed, _curve(p["q"], step))
        if not stopped:
            del pruned[n]
    assert pruned, "no trial was pruned"
    kept = [t.params["q"] for t in search.study.trials if t.state.name == "COMPLETE"]
    # Pruned trials are the bad ones, and pruning saved most of the budget.
    assert sorted(pruned.values())[len(pruned) // 2] > min(kept)
    assert sum(steps_run.values()) < 0.75 * 30 * 27


def test_no_early_stopping_never_prunes() -> None:
    space = {"q": ParamSpec(type="float", low=0.0, high=10.0)}
    search = engine.Search(cfg(Strategy.random, space))
    assert search.cfg.early_stopping == EarlyStopping.none
    for _ in range(10):
        n, p = search.ask()
        assert not any(search.report(n, {s: _curve(p["q"], s)}) for s in range(10))
        search.tell(n, TrialState.completed, 1.0)


def test_a_rebuilt_study_reopens_running_trials_and_keeps_their_values() -> None:
    space = {"q": ParamSpec(type="float", low=0.0, high=10.0)}
    c = cfg(Strategy.asha, space, min_resource=1, reduction_factor=3)
    rows = [
        engine.TrialRow(
            i,
            {"q": float(i)},
            TrialState.completed,
            float(i),
            {s: _curve(float(i), s) for s in range(9)},
        )
        for i in range(6)
    ]
    rows.append(engine.TrialRow(6, {"q": 9.5}, TrialState.running, None, {0: _curve(9.5, 0)}))
    search = engine.Search(c, rows)
    assert search.open_numbers == [6]
    assert search.next_number == 7
    # The running trial goes on from its stored steps and is judged against the finished ones.
    assert search.report(6, {0: _curve(9.5, 0), 1: _curve(9.5, 1), 2: _curve(9.5, 2)})
    search.tell(6, TrialState.pruned)
    best = engine.best_of(rows, Direction.minimize)
    assert best is not None and best.number == 0
    assert engine.best_of(rows, Direction.maximize).number == 5  # type: ignore[union-attr]
