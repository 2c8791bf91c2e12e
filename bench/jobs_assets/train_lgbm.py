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
t0 = time.perf_counter()
booster = None
rounds = int(hp.get("rounds", 200))
for chunk in range(rounds // 10):
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=10,
        init_model=booster,
        valid_sets=[dvalid],
        keep_training_booster=True,
    )
    loss = booster.best_score["valid_0"]["binary_logloss"]
    sy.log_metric("val_logloss", loss, step=(chunk + 1) * 10)
sy.log_metric("train_seconds", time.perf_counter() - t0)
booster.save_model(os.path.join(os.environ["SHIPYARD_MODEL_DIR"], "model.txt"))
