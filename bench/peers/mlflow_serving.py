"""MLflow's side of ``bench/serving.py``; runs inside MLflow's environment and prints JSON.

    python mlflow_serving.py save --model model.joblib --example example.json --out DIR
    python mlflow_serving.py log --tracking-uri URL --model model.joblib --example example.json \
        --name NAME --reps N

``save`` writes the MLflow model folder that ``mlflow models serve`` loads (cloudpickle: MLflow
3.17's default skops format refuses a RandomForest unless its tree class is trusted by hand).
``log`` times ``mlflow.sklearn.log_model`` with ``registered_model_name`` in a fresh run, through
a tracking server, ``--reps`` times (each a new run and a new version).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import joblib
import pandas as pd

warnings.filterwarnings("ignore")


def _example(path: str) -> pd.DataFrame:
    with open(path) as f:
        d = json.load(f)
    return pd.DataFrame(d["data"], columns=d["columns"])


def save(args: argparse.Namespace) -> dict:
    import mlflow.sklearn

    t0 = time.perf_counter()
    mlflow.sklearn.save_model(
        joblib.load(args.model),
        args.out,
        serialization_format="cloudpickle",
        input_example=_example(args.example),
    )
    return {"save_s": time.perf_counter() - t0}


def log(args: argparse.Namespace) -> dict:
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("serving-bench")
    model = joblib.load(args.model)
    example = _example(args.example)
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="cloudpickle",
                input_example=example,
                registered_model_name=args.name,
            )
        times.append(time.perf_counter() - t0)
    return {"times_s": times, "version": str(info.registered_model_version)}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("save")
    p.add_argument("--model", required=True)
    p.add_argument("--example", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("log")
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--example", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    out = save(args) if args.cmd == "save" else log(args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
