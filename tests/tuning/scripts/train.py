"""A training script for tuning tests: a loss curve set by ``--q`` (lower is better), logged
step by step (through the SDK, or printed for a metric definition to read with
``--report print``), and a small model written to the model folder."""

import argparse
import os
import time

from shipyard.models.format import save_model


class Shift:
    def __init__(self, q: float) -> None:
        self.q = q

    def predict(self, X):  # type: ignore[no-untyped-def]
        return [self.q for _ in range(len(X))]


parser = argparse.ArgumentParser()
parser.add_argument("--q", type=float, required=True)
parser.add_argument("--kind", default="a")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--step_s", type=float, default=0.0)
parser.add_argument("--report", choices=["sdk", "print"], default="sdk")
args = parser.parse_args()

print(f"started q={args.q} pid={os.getpid()} t={time.time():.3f}", flush=True)
for step in range(args.epochs):
    loss = args.q + 1.0 / (step + 1)
    if args.report == "sdk":
        import shipyard as sy

        sy.log_metric("loss", loss, step=step)
        sy.flush()
    else:
        print(f"epoch {step}: loss={loss:.6f}", flush=True)
    time.sleep(args.step_s)
save_model(Shift(args.q), os.environ["SHIPYARD_MODEL_DIR"], flavor="python_function")
print(f"ended q={args.q} t={time.time():.3f}", flush=True)
