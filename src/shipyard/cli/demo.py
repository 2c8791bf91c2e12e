"""``shipyard demo``: a few small models trained and tracked on the embedded defaults.

Pure Python (no ML libraries needed): logistic regression by gradient descent on a synthetic
churn-like data set, one run per learning rate, with params, per-epoch metrics, system metrics,
a dataset input and the model's weights as an artifact.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import tempfile
from pathlib import Path


def _data(n: int, seed: int = 7) -> tuple[list[list[float]], list[int]]:
    rng = random.Random(seed)
    true_w = [1.5, -2.0, 0.7, 0.0, 1.1]
    xs, ys = [], []
    for _ in range(n):
        x = [rng.gauss(0, 1) for _ in true_w]
        p = 1 / (1 + math.exp(-sum(w * v for w, v in zip(true_w, x, strict=True))))
        xs.append(x)
        ys.append(1 if rng.random() < p else 0)
    return xs, ys


def _train(xs, ys, lr: float, epochs: int, log) -> list[float]:  # type: ignore[no-untyped-def]
    w = [0.0] * len(xs[0])
    split = int(len(xs) * 0.8)
    for epoch in range(epochs):
        grad = [0.0] * len(w)
        loss = 0.0
        for x, y in zip(xs[:split], ys[:split], strict=True):
            p = 1 / (1 + math.exp(-sum(a * b for a, b in zip(w, x, strict=True))))
            loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
            for i, v in enumerate(x):
                grad[i] += (p - y) * v
        w = [a - lr * g / split for a, g in zip(w, grad, strict=True)]
        correct = sum(
            (sum(a * b for a, b in zip(w, x, strict=True)) > 0) == bool(y)
            for x, y in zip(xs[split:], ys[split:], strict=True)
        )
        log({"train_loss": loss / split, "val_accuracy": correct / (len(xs) - split)}, epoch)
    return w


def run_demo(project: str = "demo", n_runs: int = 4) -> None:
    import shipyard as sy
    from shipyard.cli.common import console

    client = sy.init(project=project)
    xs, ys = _data(2000)
    digest = hashlib.sha256(json.dumps([xs, ys]).encode()).hexdigest()
    rates = [round(0.03 * 3**i, 6) for i in range(n_runs)]
    with sy.start_run(experiment="churn", name="sweep") as parent:
        parent.set_tag("kind", "learning-rate sweep")
        for lr in rates:
            with sy.start_run(
                name=f"lr-{lr:g}",
                nested=True,
                log_system_metrics=True,
                system_metrics_interval_s=1.0,
            ) as run:
                run.log_params({"model": "logistic-regression", "lr": lr, "epochs": 30})
                run.log_input(
                    "churn-synthetic",
                    digest,
                    source="shipyard.demo",
                    schema={"features": 5, "target": "churned"},
                    context="training",
                )
                w = _train(xs, ys, lr, 30, lambda m, step, r=run: r.log_metrics(m, step=step))
                with tempfile.TemporaryDirectory() as d:
                    p = Path(d, "weights.json")
                    p.write_text(json.dumps({"weights": w}))
                    run.log_artifact(p, "model/weights.json")
                console.print(f"  run {run.id}  lr={lr:<6g} logged", highlight=False)
    best = client.search_runs(
        ["churn"],
        "params.model = 'logistic-regression'",
        ["metrics.val_accuracy DESC"],
        page_size=1,
    ).data
    console.print(f"\nTracked {n_runs} runs in project '{project}', experiment 'churn'.")
    if best:
        console.print(
            f"Best: {best[0].name} ({best[0].id}) "
            f"val_accuracy={best[0].metrics['val_accuracy'].value:.3f}",
            highlight=False,
        )
    console.print(
        "\nLook at them:\n"
        f"  shipyard runs list -p {project} -e churn -o 'metrics.val_accuracy DESC'\n"
        f"  shipyard runs compare -p {project} <run id> <run id>\n"
        "  shipyard server            # then open http://127.0.0.1:8080 (Studio; API at /docs)",
        highlight=False,
    )
