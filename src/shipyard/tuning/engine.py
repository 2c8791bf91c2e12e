"""The search engine: a search space checked once, and an Optuna study rebuilt from trial rows.

Our tables are the one source of truth for trials. The Optuna study lives in memory and is
rebuilt from them whenever a process takes a tuning job over (a restart resumes where the rows
say), so nothing here writes to a database. Optuna is imported lazily: ``import shipyard`` and
the CLI stay light.

Numbers: a trial's ``number`` is ours (0, 1, ... within its tuning job). Trials warm-started from
earlier tuning jobs are added to the study first, so Optuna's own numbering differs; ``Search``
keeps the mapping.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.core.errors import InvalidArgument
from shipyard.tuning.schemas import (
    Direction,
    EarlyStopping,
    ParamKind,
    ParamSpec,
    Strategy,
    TrialState,
)

if TYPE_CHECKING:
    import optuna

# A grid bigger than this is refused: enumerating it would take longer than any search.
MAX_GRID = 1_000_000


@dataclass
class TrialRow:
    """A trial as our tables keep it (and as ``Search`` needs it to rebuild a study)."""

    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None = None
    intermediate_values: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchConfig:
    space: dict[str, ParamSpec]
    direction: Direction
    strategy: Strategy
    early_stopping: EarlyStopping
    min_resource: int = 1
    max_resource: int | None = None
    reduction_factor: int = 3
    seed: int | None = None


def effective_early_stopping(
    strategy: Strategy, early_stopping: EarlyStopping | None
) -> EarlyStopping:
    """``strategy=hyperband|asha`` implies that early stopping unless one is named."""
    if early_stopping is not None:
        return early_stopping
    if strategy == Strategy.hyperband:
        return EarlyStopping.hyperband
    if strategy == Strategy.asha:
        return EarlyStopping.asha
    return EarlyStopping.none


# -- the search space ---------------------------------------------------------------------------


def _finite(name: str, key: str, v: float | None) -> float:
    if v is None:
        raise InvalidArgument.for_field(f"space.{name}.{key}", f"required for a {key} bound")
    if not math.isfinite(v):
        raise InvalidArgument.for_field(f"space.{name}.{key}", f"expected a finite number, got {v}")
    return float(v)


def check_space(space: Mapping[str, ParamSpec], strategy: Strategy | None = None) -> None:
    """Refuse a space Optuna could not sample, naming the parameter: ``low`` above ``high``,
    ``log`` with a bound at or below zero, an ``int`` with fractional bounds, ``choices`` on a
    numeric parameter, and (for grid search) a float parameter with no ``step``."""
    if not space:
        raise InvalidArgument.for_field("space", "expected at least one parameter")
    for name, p in space.items():
        f = f"space.{name}"
        if p.type == ParamKind.categorical:
            if not p.choices:
                raise InvalidArgument.for_field(f"{f}.choices", "expected a non-empty list")
            if p.low is not None or p.high is not None or p.log or p.step is not None:
                raise InvalidArgument.for_field(
                    f, "a categorical parameter takes only 'choices' (no low, high, log, step)"
                )
            seen: set[str] = set()
            for c in p.choices:
                k = repr(c)
                if k in seen:
                    raise InvalidArgument.for_field(f"{f}.choices", f"{c!r} is listed twice")
                seen.add(k)
            continue
        if p.choices is not None:
            raise InvalidArgument.for_field(
                f"{f}.choices", f"only a categorical parameter takes choices, not {p.type.value}"
            )
        low, high = _finite(name, "low", p.low), _finite(name, "high", p.high)
        if low > high:
            raise InvalidArgument.for_field(f, f"low ({low:g}) is above high ({high:g})")
        if p.log and low <= 0:
            raise InvalidArgument.for_field(
                f"{f}.low", f"a log-scaled parameter needs low > 0, got {low:g}"
            )
        if p.log and p.step is not None and p.type == ParamKind.float:
            raise InvalidArgument.for_field(f, "give 'log' or 'step', not both")
        if p.type == ParamKind.int:
            if low != int(low) or high != int(high):
                raise InvalidArgument.for_field(
                    f, f"an int parameter needs whole bounds, got {low:g}..{high:g}"
                )
            if p.step is not None and p.step != int(p.step):
                raise InvalidArgument.for_field(f"{f}.step", f"expected a whole step, got {p.step}")
            if p.log and p.step not in (None, 1):
                raise InvalidArgument.for_field(f, "a log-scaled int parameter takes step 1 only")
        if strategy == Strategy.grid and p.type == ParamKind.float and p.step is None:
            raise InvalidArgument.for_field(
                f"{f}.step",
                "grid search enumerates values: give a float parameter a 'step', "
                "or make it categorical",
            )
    if strategy == Strategy.grid:
        grid_size(space)


def distributions(space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Optuna distributions for a checked space."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for name, p in space.items():
        if p.type == ParamKind.categorical:
            out[name] = CategoricalDistribution(list(p.choices or []))
        elif p.type == ParamKind.int:
            assert p.low is not None and p.high is not None
            out[name] = IntDistribution(
                int(p.low), int(p.high), log=p.log, step=int(p.step or 1) if not p.log else 1
            )
        else:
            assert p.low is not None and p.high is not None
            out[name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def _grid_values(p: ParamSpec) -> list[Any]:
    if p.type == ParamKind.categorical:
        return list(p.choices or [])
    assert p.low is not None and p.high is not None
    if p.type == ParamKind.int:
        step = int(p.step or 1)
        return list(range(int(p.low), int(p.high) + 1, step))
    assert p.step is not None
    n = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
    # Rounded so 0.1 + 2 * 0.1 is 0.3 and matches what Optuna's stepped distribution yields.
    return [round(p.low + i * p.step, 12) for i in range(n)]


def grid(space: Mapping[str, ParamSpec]) -> dict[str, list[Any]]:
    return {name: _grid_values(p) for name, p in space.items()}


def grid_size(space: Mapping[str, ParamSpec]) -> int:
    n = 1
    for name, values in grid(space).items():
        n *= max(1, len(values))
        if n > MAX_GRID:
            raise InvalidArgument.for_field(
                f"space.{name}",
                f"the grid has more than {MAX_GRID:,} points; use a coarser step or another "
                "strategy",
            )
    return n


def grid_points(space: Mapping[str, ParamSpec]) -> list[dict[str, Any]]:
    """Every combination of the grid, in a stable order."""
    g = grid(space)
    names = list(g)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*g.values())]


def params_in_space(params: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> bool:
    """Whether an earlier trial's params fit this space (a warm start skips those that don't)."""
    if set(params) != set(space):
        return False
    dists = distributions(space)
    for name, value in params.items():
        try:
            internal = dists[name].to_internal_repr(value)
        except (ValueError, TypeError):
            return False
        if not dists[name]._contains(internal):
            return False
    return True


# -- the study ----------------------------------------------------------------------------------

_STATE_TO_OPTUNA = {
    TrialState.completed: "COMPLETE",
    TrialState.pruned: "PRUNED",
    TrialState.failed: "FAIL",
    TrialState.stopped: "FAIL",
    TrialState.running: "RUNNING",
}


def _sampler(cfg: SearchConfig) -> Any:
    import optuna

    if cfg.strategy == Strategy.bayesian:
        return optuna.samplers.TPESampler(seed=cfg.seed)
    return optuna.samplers.RandomSampler(seed=cfg.seed)


def _pruner(cfg: SearchConfig) -> Any:
    import optuna

    es = cfg.early_stopping
    if es == EarlyStopping.asha:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=cfg.min_resource, reduction_factor=cfg.reduction_factor
        )
    if es == EarlyStopping.hyperband:
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.min_resource,
            max_resource=cfg.max_resource or "auto",
            reduction_factor=cfg.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def _quiet() -> None:
    import optuna

    # Optuna logs a line per trial at INFO: a tuning job of 200 trials would flood the log.
    optuna.logging.set_verbosity(optuna.logging.WARNING)


class Search:
    """One tuning job's Optuna study, in memory, rebuilt from trial rows.

    ``warm`` trials (from earlier tuning jobs) inform the sampler but are not this job's trials.
    ``rows`` are this job's trials so far: finished ones are replayed as finished; running ones
    are re-opened so their intermediate values can be reported and judged by the pruner.
    """

    def __init__(
        self,
        cfg: SearchConfig,
        rows: Iterable[TrialRow] = (),
        warm: Iterable[TrialRow] = (),
        name: str = "shipyard-tuning",
    ) -> None:
        import optuna

        _quiet()
        self.cfg = cfg
        self.dists = distributions(cfg.space)
        # A stable name: Hyperband assigns a trial to a bracket by hashing it with the number.
        self.study = optuna.create_study(
            study_name=name,
            direction=cfg.direction.value,
            sampler=_sampler(cfg),
            pruner=_pruner(cfg),
        )
        self._open: dict[int, optuna.trial.Trial] = {}  # our number -> Optuna trial
        self._reported: dict[int, set[int]] = {}
        self._prune: dict[int, bool] = {}
        self.next_number = 0
        self.warm_count = 0
        # Grid search walks the grid itself, in a seeded shuffled order, skipping the points
        # this job already tried: that survives a rebuild, which Optuna's GridSampler (keeping
        # its visited points in trial attributes we do not store) would not.
        self._grid: list[dict[str, Any]] = []
        self._tried: set[str] = set()
        if cfg.strategy == Strategy.grid:
            import random

            self._grid = grid_points(cfg.space)
            random.Random(cfg.seed).shuffle(self._grid)
        for w in warm:
            if w.state == TrialState.completed and w.value is not None:
                if not params_in_space(w.params, cfg.space):
                    continue
                self._add(w)
                self.warm_count += 1
        for r in sorted(rows, key=lambda r: r.number):
            self.next_number = max(self.next_number, r.number + 1)
            self._tried.add(_key(r.params))
            if r.state == TrialState.running:
                tid = self._add(r)
                self._open[r.number] = optuna.trial.Trial(self.study, tid)
                self._reported[r.number] = set(r.intermediate_values)
            elif params_in_space(r.params, cfg.space):
                self._add(r)

    def _add(self, r: TrialRow) -> int:
        """Add a trial from a row; returns Optuna's trial id.

        The pruners keep what they decided in the trials' system attributes (the value each
        trial had at each rung), which our rows do not store. So a trial with intermediate
        values is replayed: opened, its values reported step by step with the pruner consulted
        as it was when it ran, then closed in its final state. Optuna's storage API is used
        directly for that, since a trial cannot be reopened through the study.
        """
        import optuna

        if self.cfg.early_stopping == EarlyStopping.none or not r.intermediate_values:
            self.study.add_trial(self._frozen(r))
            return int(self.study.get_trials(deepcopy=False)[-1]._trial_id)
        done = self._frozen(r)
        self.study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING,
                params=done.params,
                distributions=done.distributions,
            )
        )
        storage = self.study._storage
        tid = self.study.get_trials(deepcopy=False)[-1]._trial_id
        pruner = self.study.pruner
        for step in sorted(done.intermediate_values):
            storage.set_trial_intermediate_value(tid, step, done.intermediate_values[step])
            pruner.prune(self.study, storage.get_trial(tid))
        if done.state != optuna.trial.TrialState.RUNNING:
            storage.set_trial_state_values(
                tid, done.state, [done.value] if done.value is not None else None
            )
        return int(tid)

    def _frozen(self, r: TrialRow) -> Any:
        import optuna

        state = getattr(optuna.trial.TrialState, _STATE_TO_OPTUNA[r.state])
        value = r.value if state == optuna.trial.TrialState.COMPLETE else None
        if state == optuna.trial.TrialState.COMPLETE and (
            value is None or not math.isfinite(value)
        ):
            state, value = optuna.trial.TrialState.FAIL, None
        return optuna.trial.create_trial(
            state=state,
            value=value,
            params=dict(r.params),
            distributions={k: self.dists[k] for k in r.params if k in self.dists},
            intermediate_values={
                int(k): float(v) for k, v in r.intermediate_values.items() if math.isfinite(v)
            },
        )

    # -- proposing and finishing trials --------------------------------------------------------

    def ask(self) -> tuple[int, dict[str, Any]]:
        """Open a new trial: its number and its sampled params."""
        if self._grid:
            while self._grid and _key(self._grid[0]) in self._tried:
                self._grid.pop(0)
            if self._grid:
                point = self._grid.pop(0)
                self.study.enqueue_trial(point, skip_if_exists=False)
        t = self.study.ask(self.dists)
        number = self.next_number
        self.next_number += 1
        self._tried.add(_key(t.params))
        self._open[number] = t
        self._reported[number] = set()
        return number, dict(t.params)

    def trial(self, number: int) -> optuna.trial.Trial:
        return self._open[number]

    def report(self, number: int, values: Mapping[int, float]) -> bool:
        """Report intermediate values (step -> value) not reported yet; True when the pruner
        says the trial should stop."""
        t = self._open[number]
        seen = self._reported[number]
        new = False
        for step in sorted(values):
            v = values[step]
            if step in seen or v is None or not math.isfinite(v):
                continue
            t.report(float(v), int(step))
            seen.add(step)
            new = True
        if not new or self.cfg.early_stopping == EarlyStopping.none:
            return self._prune.get(number, False)
        # Asked once per report and remembered: Optuna's successive halving records the rung a
        # trial reached when asked, so asking twice at one step would judge the next rung.
        self._prune[number] = bool(t.should_prune())
        return self._prune[number]

    def should_prune(self, number: int) -> bool:
        """What the pruner said at the trial's last report."""
        return self._prune.get(number, False)

    def tell(self, number: int, state: TrialState, value: float | None = None) -> None:
        import optuna

        t = self._open.pop(number)
        self._reported.pop(number, None)
        self._prune.pop(number, None)
        if state == TrialState.completed and value is not None and math.isfinite(value):
            self.study.tell(t, value)
        elif state == TrialState.pruned:
            self.study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(t, state=optuna.trial.TrialState.FAIL)

    @property
    def open_numbers(self) -> list[int]:
        return sorted(self._open)


def _key(params: Mapping[str, Any]) -> str:
    return repr(sorted((k, params[k]) for k in params))


def best_of(rows: Iterable[TrialRow], direction: Direction) -> TrialRow | None:
    """The completed trial with the best value (the earliest on a tie)."""
    best: TrialRow | None = None
    for r in sorted(rows, key=lambda r: r.number):
        if r.state != TrialState.completed or r.value is None or not math.isfinite(r.value):
            continue
        if (
            best is None
            or best.value is None
            or (direction == Direction.minimize and r.value < best.value)
            or (direction == Direction.maximize and r.value > best.value)
        ):
            best = r
    return best


def trial_budget(cfg: SearchConfig, max_trials: int) -> int:
    """How many trials the job runs: ``max_trials``, or fewer when the grid is smaller."""
    if cfg.strategy == Strategy.grid:
        return min(max_trials, grid_size(cfg.space))
    return max_trials
