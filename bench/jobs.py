"""Training jobs and tuning, measured side by side in one run (issue 6's speed goals).

    .venv/bin/python bench/jobs.py            # full counts
    .venv/bin/python bench/jobs.py --quick    # a smoke run (fewer jobs and trials)
    .venv/bin/python bench/jobs.py --no-ray   # skip the Ray rows

Every scenario runs in a fresh process on a fresh SHIPYARD_HOME (SQLite, a local artifact folder),
as a notebook would: the SDK in-process, its embedded worker running the jobs.

1. Submit to the first line of user code, locally: a script whose first line notes the time,
   submitted N times one after another; beside it the floor, a bare ``subprocess.Popen`` of the
   same script (what starting Python costs), and the same job on a local Ray.
2. Tuning overhead against plain Optuna, same sampler (TPE, same seed): 200 trials of a trivial
   objective as in-process functions (``sy.tune`` against ``study.optimize`` with in-memory and
   with SQLite storage); and trials as script jobs (``sy.tuning.create``) against Optuna running
   the same script with ``subprocess.run``, one trial at a time.
3. Early stopping on a real LightGBM task: a 40-trial random search, then ASHA on the same
   sampled configurations; the training time ASHA needs to reach the random search's best score.
4. Parallel speed-up: LightGBM trials as script jobs on 1 slot and 2 slots locally, and on a
   local Ray with 2 CPUs.

Prints a table and writes every number to bench/results/jobs-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ASSETS = BENCH / "jobs_assets"
RESULTS = BENCH / "results"


# -- scenarios, each run in a child process (``--scenario NAME``) --------------------------------


def _init(project: str = "bench") -> Any:
    import shipyard as sy

    sy.init(project=project)
    return sy


def scenario_first_line(n: int) -> dict[str, Any]:
    sy = _init()
    out_dir = Path(tempfile.mkdtemp(prefix="first-line-"))
    # Warm up: the first job starts the executor's fork server (paid once per process).
    warm = out_dir / "warm.txt"
    sy.jobs.submit(
        "first_line.py",
        source_dir=str(ASSETS),
        hyperparameters={"out": str(warm)},
        wait=True,
        timeout_s=120,
    )
    lat = []
    for i in range(n):
        out = out_dir / f"{i}.txt"
        t0 = time.time()
        job = sy.jobs.submit(
            "first_line.py",
            source_dir=str(ASSETS),
            hyperparameters={"out": str(out)},
            wait=True,
            timeout_s=120,
        )
        assert job.status.value == "completed", job
        lat.append(float(out.read_text()) - t0)
    return {"latencies_s": lat}


def scenario_popen(n: int) -> dict[str, Any]:
    out_dir = Path(tempfile.mkdtemp(prefix="popen-"))
    lat = []
    for i in range(n):
        out = out_dir / f"{i}.txt"
        t0 = time.time()
        subprocess.run(
            [sys.executable, str(ASSETS / "first_line.py"), "--out", str(out)], check=True
        )
        lat.append(float(out.read_text()) - t0)
    return {"latencies_s": lat}


def _quadratic(params: dict[str, Any], trial: Any = None) -> float:
    return float((params["x"] - 2.0) ** 2)


def scenario_tune_functions(n: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sy = _init()

    def optuna_obj(trial: Any) -> float:
        return _quadratic({"x": trial.suggest_float("x", -10, 10)})

    out: dict[str, Any] = {}
    space = {"x": sy.tuning.uniform(-10, 10)}
    # Both warmed up first (imports, TPE's first fit, the store opened), then timed.
    optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1)).optimize(optuna_obj, 15)
    sy.tune(_quadratic, space=space, max_trials=15, strategy="bayesian", seed=1)
    t0 = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(optuna_obj, n_trials=n)
    out["optuna_memory_s"] = time.perf_counter() - t0
    out["optuna_best"] = study.best_value
    db = Path(tempfile.mkdtemp(prefix="optuna-")) / "optuna.db"
    t0 = time.perf_counter()
    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=0), storage=f"sqlite:///{db}"
    )
    study.optimize(optuna_obj, n_trials=n)
    out["optuna_sqlite_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    job = sy.tune(_quadratic, space=space, max_trials=n, strategy="bayesian", seed=0)
    out["shipyard_s"] = time.perf_counter() - t0
    out["shipyard_trials"] = len(job.trials)
    out["shipyard_best"] = job.best.value if job.best else None
    return out


def _tree_cpu() -> dict[str, float]:
    """CPU seconds so far: this process's, and its children's that have ended (a subprocess's,
    or, through the executor's fork server, every job process it forked), user and kernel."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    out = {
        "here": t.user + t.system,
        "children_user": t.children_user,
        "children_system": t.children_system,
    }
    for c in me.children():
        if "--fork-server" in " ".join(c.cmdline()):
            ct = c.cpu_times()
            out["children_user"] += ct.children_user
            out["children_system"] += ct.children_system
    return out


def _fsync_ms(n: int = 30) -> float:
    """This disk's median fsync of a small write, in ms: a Shipyard trial waits for four (its
    submit, claim and end commit, and its report's bytes), Optuna's in-memory study for none."""
    with tempfile.NamedTemporaryFile(dir=RESULTS.parent) as f:
        times = []
        for _ in range(n):
            f.write(b"x" * 128)
            f.flush()
            t0 = time.perf_counter()
            os.fsync(f.fileno())
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _cpu_per_trial(a: dict[str, float], b: dict[str, float], n: int) -> dict[str, float]:
    """Milliseconds of CPU per trial between two ``_tree_cpu`` readings: robust to the load,
    which moves wall time far more."""
    return {k: round((b[k] - a[k]) * 1000 / n, 1) for k in a}


def _cpu_text(c: dict[str, float]) -> str:
    return (
        f"{c['here']:.1f} in the tuning process, {c['children_user']:.1f} user + "
        f"{c['children_system']:.1f} kernel in the trials' processes"
    )


def scenario_tune_scripts(n: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sy = _init()

    def optuna_obj(trial: Any) -> float:
        x = trial.suggest_float("x", -10, 10)
        p = subprocess.run(
            [sys.executable, str(ASSETS / "quadratic.py"), "--x", str(x)],
            check=True,
            capture_output=True,
            text=True,
        )
        return float(p.stdout.strip().split("=")[1])

    out: dict[str, Any] = {"fsync_ms": _fsync_ms()}
    t0 = time.perf_counter()
    cpu0 = _tree_cpu()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(optuna_obj, n_trials=n)
    out["optuna_subprocess_s"] = time.perf_counter() - t0
    out["optuna_cpu_ms_per_trial"] = _cpu_per_trial(cpu0, _tree_cpu(), n)
    # Warm the fork server, as scenario 1 does.
    sy.jobs.submit(
        "quadratic.py", source_dir=str(ASSETS), hyperparameters={"x": 0}, wait=True, timeout_s=120
    )
    t0 = time.perf_counter()
    cpu0 = _tree_cpu()
    tj = sy.tuning.create(
        space={"x": sy.tuning.uniform(-10, 10)},
        objective="objective",
        strategy="bayesian",
        max_trials=n,
        max_parallel=1,
        seed=0,
        entry_point="quadratic.py",
        source_dir=str(ASSETS),
        hyperparameters={"shipyard": ""},
        wait=True,
        timeout_s=3600,
    )
    out["shipyard_s"] = time.perf_counter() - t0
    out["shipyard_cpu_ms_per_trial"] = _cpu_per_trial(cpu0, _tree_cpu(), n)
    out["shipyard_status"] = tj.status.value
    out["shipyard_trials"] = len(tj.trials)
    out["failed_trials"] = sum(1 for t in tj.trials if t.state.value == "failed")
    return out


def _lgbm_data(tmp: Path) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=12_000, n_features=20, n_informative=8, flip_y=0.05, random_state=0
    )
    cols = [f"f{i}" for i in range(20)]
    df = pd.DataFrame(X, columns=cols).assign(y=y.astype(np.int64))
    train, valid = tmp / "train", tmp / "validation"
    train.mkdir(parents=True, exist_ok=True)
    valid.mkdir(parents=True, exist_ok=True)
    df.iloc[:9000].to_parquet(train / "train.parquet")
    df.iloc[9000:].to_parquet(valid / "validation.parquet")
    return train, valid


def _lgbm_space(sy: Any) -> dict[str, Any]:
    return {
        "learning_rate": sy.tuning.loguniform(0.005, 0.3),
        "num_leaves": sy.tuning.integer(4, 128, log=True),
        "min_child_samples": sy.tuning.integer(5, 200, log=True),
        "feature_fraction": sy.tuning.uniform(0.3, 1.0),
    }


def scenario_early_stopping(n: int, rounds: int) -> dict[str, Any]:
    import lightgbm as lgb
    import pandas as pd

    sy = _init()
    tmp = Path(tempfile.mkdtemp(prefix="lgbm-"))
    train_dir, valid_dir = _lgbm_data(tmp)
    train = pd.read_parquet(train_dir / "train.parquet")
    valid = pd.read_parquet(valid_dir / "validation.parquet")
    # feature_pre_filter off: each trial sets its own min_child_samples on the shared Dataset.
    dtrain = lgb.Dataset(
        train.drop(columns="y"),
        train["y"],
        free_raw_data=False,
        params={"feature_pre_filter": False},
    )
    dvalid = lgb.Dataset(valid.drop(columns="y"), valid["y"], reference=dtrain, free_raw_data=False)
    spent: list[tuple[float, float | None]] = []  # (training seconds, final value or None)

    def objective(params: dict[str, Any], trial: Any) -> float:
        t0 = time.perf_counter()
        last = {"loss": float("inf")}

        def report(env: Any) -> None:
            it = env.iteration + 1
            if it % 10 == 0:
                loss = env.evaluation_result_list[0][2]
                last["loss"] = loss
                trial.report(loss, it)
                if trial.should_prune():
                    spent.append((time.perf_counter() - t0, None))
                    raise sy.tuning.TrialPruned()

        lgb.train(
            {**params, "objective": "binary", "num_threads": 1, "verbose": -1, "seed": 0},
            dtrain,
            num_boost_round=rounds,
            valid_sets=[dvalid],
            callbacks=[report],
        )
        spent.append((time.perf_counter() - t0, last["loss"]))
        return last["loss"]

    space = _lgbm_space(sy)
    sy.tune(objective, space=space, max_trials=n, strategy="random", seed=0)
    random_spent = list(spent)
    best = min(v for _, v in random_spent if v is not None)
    random_total = sum(s for s, _ in random_spent)
    spent.clear()

    class Reached(Exception):
        """ASHA has seen the random search's configurations and scored as well as its best."""

    first_reached: list[int] = []

    def asha_objective(params: dict[str, Any], trial: Any) -> float:
        try:
            value = objective(params, trial)
        finally:
            if not first_reached and any(v is not None and v <= best for _, v in spent):
                first_reached.append(len(spent))
            if first_reached and len(spent) >= n:
                raise Reached()
        return value

    # ASHA runs the same n configurations (same sampler, same seed) with pruning; if it pruned
    # the one that won the random search, it goes on with new ones (up to 4x n) until one
    # scores as well. Its cost is all the training it did until then.
    try:
        sy.tune(
            asha_objective,
            space=space,
            max_trials=4 * n,
            strategy="random",
            early_stopping="asha",
            seed=0,
            min_resource=10,
            max_resource=rounds,
            reduction_factor=3,
        )
        reached = None
    except Reached:
        reached = first_reached[0]
    asha_spent = list(spent)
    to_best = sum(s for s, _ in asha_spent)
    asha_best = min((v for _, v in asha_spent if v is not None), default=None)
    return {
        "random_total_s": random_total,
        "random_best": best,
        "asha_trials": len(asha_spent),
        "asha_best": asha_best,
        "asha_pruned": sum(1 for _, v in asha_spent if v is None),
        "asha_to_best_s": to_best if reached else None,
        "asha_reached_at_trial": reached,
    }


def scenario_parallel(n: int, parallel: int, rounds: int) -> dict[str, Any]:
    sy = _init()
    tmp = Path(tempfile.mkdtemp(prefix="lgbm-par-"))
    train_dir, valid_dir = _lgbm_data(tmp)
    # Warm: the executor (fork server, or Ray's workers) starts once.
    sy.jobs.submit(
        "first_line.py",
        source_dir=str(ASSETS),
        hyperparameters={"out": str(tmp / "warm")},
        wait=True,
        timeout_s=300,
    )
    t0 = time.perf_counter()
    tj = sy.tuning.create(
        space=_lgbm_space(sy),
        objective="val_logloss",
        strategy="random",
        max_trials=n,
        max_parallel=parallel,
        seed=0,
        entry_point="train_lgbm.py",
        source_dir=str(ASSETS),
        hyperparameters={"rounds": rounds},
        inputs={"train": str(train_dir), "validation": str(valid_dir)},
        wait=True,
        timeout_s=3600,
    )
    return {
        "wall_s": time.perf_counter() - t0,
        "status": tj.status.value,
        "trials": len(tj.trials),
        "failed_trials": sum(1 for t in tj.trials if t.state.value == "failed"),
        "best": tj.best.value if tj.best else None,
    }


SCENARIOS = {
    "first_line": scenario_first_line,
    "popen": scenario_popen,
    "tune_functions": scenario_tune_functions,
    "tune_scripts": scenario_tune_scripts,
    "early_stopping": scenario_early_stopping,
    "parallel": scenario_parallel,
}


# -- the driver ---------------------------------------------------------------------------------


def run_scenario(name: str, env: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    """Run one scenario in a fresh process on a fresh SHIPYARD_HOME; return its JSON."""
    home = tempfile.mkdtemp(prefix=f"bench-jobs-{name}-")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    full_env.update({"SHIPYARD_HOME": home, "PYTHONUNBUFFERED": "1", **(env or {})})
    argv = [sys.executable, __file__, "--scenario", name, "--kw", json.dumps(kw)]
    print(
        f"  {name} {kw} {'(ray)' if (env or {}).get('SHIPYARD_EXECUTOR') == 'ray' else ''}",
        flush=True,
    )
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=3600)
    lines = p.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(
            f"scenario {name} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        ) from None
    # A scenario's jobs must all have completed, or its numbers mean nothing.
    bad = [v for k, v in out.items() if k.endswith("status") and v != "completed"]
    bad += [f"with {n} failed trials" for n in [out.get("failed_trials", 0)] if n]
    if bad:
        raise RuntimeError(f"scenario {name}: a tuning job ended {bad[0]}:\n{p.stderr[-3000:]}")
    print(f"    done in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        s = f"{x:.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    elif abs(x) >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.3f}"
    return s + unit


def table(rows: list[list[str]]) -> str:
    head = ["", "reference", "Shipyard", "ratio / added", "goal", "met?"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i in (0, 4) else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer jobs and trials (a smoke run)")
    ap.add_argument("--no-ray", action="store_true", help="skip the rows on a local Ray")
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--kw", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scenario:
        print(json.dumps(SCENARIOS[args.scenario](**json.loads(args.kw))))
        return 0

    q = args.quick
    n_first = 8 if q else 25
    n_fn = 200
    n_scripts = 30 if q else 200
    n_es, rounds = (20, 100) if q else (40, 200)
    n_par = 4 if q else 8
    ray_env = {"SHIPYARD_EXECUTOR": "ray"}
    res: dict[str, Any] = {"quick": q, "load_before": os.getloadavg()}
    print("bench/jobs.py: running scenarios (each in a fresh process and SHIPYARD_HOME)")
    res["first_line"] = run_scenario("first_line", n=n_first)
    res["popen"] = run_scenario("popen", n=n_first)
    if not args.no_ray:
        res["first_line_ray"] = run_scenario("first_line", env=ray_env, n=max(5, n_first // 2))
    res["tune_functions"] = run_scenario("tune_functions", n=n_fn)
    res["tune_scripts"] = run_scenario("tune_scripts", n=n_scripts)
    res["early_stopping"] = run_scenario("early_stopping", n=n_es, rounds=rounds)
    res["parallel_1"] = run_scenario("parallel", n=n_par, parallel=1, rounds=rounds)
    res["parallel_2"] = run_scenario("parallel", n=n_par, parallel=2, rounds=rounds)
    if not args.no_ray:
        for par in (1, 2):
            res[f"parallel_ray_{par}"] = run_scenario(
                "parallel", env=ray_env, n=n_par, parallel=par, rounds=rounds
            )
    res["load_after"] = os.getloadavg()

    rows: list[list[str]] = []
    first = statistics.median(res["first_line"]["latencies_s"])
    floor = statistics.median(res["popen"]["latencies_s"])
    rows.append(
        [
            f"submit -> first line, local, median of {n_first} (s)",
            fmt(floor),
            fmt(first),
            f"+{fmt(first - floor)} s",
            "<= 0.5 s",
            "yes" if first <= 0.5 else "NO",
        ]
    )
    if "first_line_ray" in res:
        fr = statistics.median(res["first_line_ray"]["latencies_s"])
        rows.append(
            [
                "submit -> first line, local Ray, median (s)",
                fmt(floor),
                fmt(fr),
                f"+{fmt(fr - floor)} s",
                "",
                "",
            ]
        )
    tf = res["tune_functions"]
    for ref_key, label in (("optuna_sqlite_s", "SQLite"), ("optuna_memory_s", "in-memory")):
        added = (tf["shipyard_s"] - tf[ref_key]) / n_fn * 1000
        rows.append(
            [
                f"{n_fn} function trials vs Optuna {label} (s)",
                fmt(tf[ref_key]),
                fmt(tf["shipyard_s"]),
                f"{added:+.2f} ms/trial",
                "<= 5 ms/trial",
                "yes" if added <= 5 else "NO",
            ]
        )
    ts = res["tune_scripts"]
    added_s = (ts["shipyard_s"] - ts["optuna_subprocess_s"]) / n_scripts
    cpu_sy, cpu_op = ts.get("shipyard_cpu_ms_per_trial"), ts.get("optuna_cpu_ms_per_trial")
    rows.append(
        [
            f"{n_scripts} script trials vs Optuna + subprocess (s)",
            fmt(ts["optuna_subprocess_s"]),
            fmt(ts["shipyard_s"]),
            f"{added_s * 1000:+.0f} ms/trial",
            f"<= submit->first line ({fmt(first)} s)",
            "yes" if added_s <= first else "NO",
        ]
    )
    es = res["early_stopping"]
    half = es["random_total_s"] / 2
    to_best = es["asha_to_best_s"]
    rows.append(
        [
            f"ASHA to the best of {n_es} random trials, LightGBM (s of training)",
            fmt(es["random_total_s"]),
            fmt(to_best),
            f"{to_best / es['random_total_s']:.2f}x" if to_best else "not reached",
            "<= 0.5x random's",
            "yes" if to_best is not None and to_best <= half else "NO",
        ]
    )
    p1, p2 = res["parallel_1"]["wall_s"], res["parallel_2"]["wall_s"]
    rows.append(
        [
            f"{n_par} LightGBM script trials, 1 vs 2 local slots (s)",
            fmt(p1),
            fmt(p2),
            f"{p1 / p2:.2f}x speed-up",
            "",
            "",
        ]
    )
    if "parallel_ray_1" in res:
        r1, r2 = res["parallel_ray_1"]["wall_s"], res["parallel_ray_2"]["wall_s"]
        rows.append(
            [
                f"{n_par} LightGBM script trials on a local Ray, 1 vs 2 at once (s)",
                fmt(r1),
                fmt(r2),
                f"{r1 / r2:.2f}x speed-up",
                "",
                "",
            ]
        )
    text = table(rows)
    load = ", ".join(f"{x:.1f}" for x in res["load_before"])
    print()
    print(
        f"Jobs and tuning ({'quick' if q else 'full'}; load average before: {load}; "
        f"{os.cpu_count()} CPUs)"
    )
    print()
    print(text)
    print()
    print(
        f"Early stopping: ASHA's best {fmt(es['asha_best'])} vs random search's "
        f"{fmt(es['random_best'])} ({n_es} trials). "
        f"ASHA pruned {es['asha_pruned']} of its {es['asha_trials']} trials and reached the "
        f"random search's best at trial {es['asha_reached_at_trial']} (of up to {4 * n_es})"
    )
    if cpu_sy and cpu_op:
        print(
            f"Script trials, CPU per trial (ms; load-proof): Shipyard {_cpu_text(cpu_sy)}; "
            f"Optuna + subprocess {_cpu_text(cpu_op)}"
        )
    if "fsync_ms" in ts:
        print(
            f"Script trials: each waits for 4 durable writes (submit, claim, end, its report); "
            f"an fsync took {ts['fsync_ms']:.2f} ms on this disk (median of 30)"
        )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"jobs-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({**res, "table": text}, indent=2))
    print(f"\nresults: {path.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
