"""A real LightGBM trial as a job: reads the train/validation channels, logs validation log loss
every 10 rounds (so ASHA can stop it early), and writes the model to the model folder."""

import json
import os
import time

import lightgbm as lgb
import pandas as pd

import shipyard as sy

with open(os.environ["SHIPYARD_HYPERPARAMETERS"]) as f:
    hp = json.load(f)
train = pd.read_parquet(os.path.join(os.environ["SHIPYARD_CHANNEL_TRAIN"], "train.parquet"))
valid = pd.read_parquet(
    os.path.join(os.environ["SHIPYARD_CHANNEL_VALIDATION"], "validation.parquet")
)
params = {
    "objective": "binary",
    "learning_rate": float(hp["learning_rate"]),
    "num_leaves": int(hp["num_leaves"]),
    "min_child_samples": int(hp["min_child_samples"]),
    "feature_fraction": float(hp["feature_fraction"]),
    "num_threads": 1,
    "verbose": -1,
    "seed": 0,
}
dtrain = lgb.Dataset(train.drop(columns="y"), train["y"])
dvalid = lgb.Dataset(valid.drop(columns="y"), valid["y"], reference=dtrain)


def report(env):  # every 10 rounds: the intermediate objective ASHA reads
    it = env.iteration + 1
    if it % 10 == 0:
        sy.log_metric("val_logloss", env.evaluation_result_list[0][2], step=it)


t0 = time.perf_counter()
booster = lgb.train(
    params,
    dtrain,
    num_boost_round=int(hp.get("rounds", 200)),
    valid_sets=[dvalid],
    callbacks=[report],
)
sy.log_metric("train_seconds", time.perf_counter() - t0)
booster.save_model(os.path.join(os.environ["SHIPYARD_MODEL_DIR"], "model.txt"))
