"""Job code the tests run (``function="tests.jobs.fixtures_jobs:..."``), and a stand-in for the
launcher while ``shipyard.jobs.launcher`` is not there (same arguments, same return shape).

The functions read the job contract's environment (SHIPYARD_CHECKPOINT_DIR, SHIPYARD_RANK, ...)
as any user's code would.
"""

from __future__ import annotations

import base64
import importlib
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_job(
    *,
    job_id: str,
    run_id: str,
    project: str,
    attempt: int,
    rank: int,
    world_size: int,
    master_addr: str,
    master_port: int,
    spec: dict[str, Any],
    job_dir: str,
) -> dict[str, Any]:
    """The contract's launcher, reduced to what these tests need."""
    root = Path(job_dir)
    rank_dir = root / f"attempt-{attempt}" / f"rank-{rank}"
    ckpt = root / "checkpoints" / f"rank-{rank}"
    for d in (rank_dir / "model", rank_dir / "output", ckpt):
        d.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        SHIPYARD_JOB_ID=job_id,
        SHIPYARD_RUN_ID=run_id,
        SHIPYARD_ATTEMPT=str(attempt),
        SHIPYARD_RANK=str(rank),
        SHIPYARD_WORLD_SIZE=str(world_size),
        SHIPYARD_MASTER_ADDR=master_addr,
        SHIPYARD_MASTER_PORT=str(master_port),
        SHIPYARD_CHECKPOINT_DIR=str(ckpt),
        SHIPYARD_MODEL_DIR=str(rank_dir / "model"),
        SHIPYARD_OUTPUT_DIR=str(rank_dir / "output"),
    )
    hp = spec.get("hyperparameters") or {}
    entry = spec.get("entry_point") or spec.get("function") or "function"
    print(f"shipyard: starting {entry} (attempt {attempt}, rank {rank}/{world_size})", flush=True)
    if spec.get("function"):
        mod, _, name = spec["function"].partition(":")
        getattr(importlib.import_module(mod), name)(**hp)
    elif spec.get("function_pickle"):
        import cloudpickle

        cloudpickle.loads(base64.b64decode(spec["function_pickle"]))(**hp)
    elif isinstance(spec.get("entry_point"), list):
        subprocess.run(spec["entry_point"], check=True, cwd=spec.get("source_dir"))
    else:
        script = str(Path(spec.get("source_dir") or ".") / spec["entry_point"])
        sys.argv = [script, *[a for k, v in hp.items() for a in (f"--{k}", str(v))]]
        runpy.run_path(script, run_name="__main__")
    return {"report": {"findings": [], "summary": {"stand_in": True}}, "model_artifact_path": None}


# -- user code -----------------------------------------------------------------------------------


def train(epochs: int = 3, lr: float = 0.1) -> None:
    """Prints a loss per epoch in a form the tests' metric definitions parse."""
    for epoch in range(epochs):
        print(f"epoch={epoch} loss={1.0 / (epoch + 1) * lr:.4f} acc={0.5 + epoch / 10:.2f}")
    sys.stdout.flush()


def show_rank() -> None:
    keys = ("SHIPYARD_RANK", "SHIPYARD_WORLD_SIZE", "SHIPYARD_MASTER_ADDR", "SHIPYARD_MASTER_PORT")
    print("contract " + " ".join(f"{k}={os.environ.get(k)}" for k in keys), flush=True)


def sleep(seconds: float = 60.0) -> None:
    print("sleeping", flush=True)
    time.sleep(seconds)


def fail(message: str = "boom") -> None:
    print("about to fail", flush=True)
    raise ValueError(message)


def fail_once() -> None:
    """Fails on its first attempt after writing a checkpoint; resumes from it on the next."""
    ckpt = Path(os.environ["SHIPYARD_CHECKPOINT_DIR"]) / "state.txt"
    attempt = os.environ["SHIPYARD_ATTEMPT"]
    if ckpt.exists():
        print(f"resumed from {ckpt.read_text()} in attempt {attempt}", flush=True)
        return
    ckpt.write_text(f"checkpoint-of-attempt-{attempt}")
    print("wrote a checkpoint, now crashing", flush=True)
    raise RuntimeError("simulated crash")


def slow_first_attempt(seconds: float = 60.0) -> None:
    """Runs long on attempt 1 (for a worker to be killed under it), finishes at once later."""
    attempt = int(os.environ["SHIPYARD_ATTEMPT"])
    print(f"attempt {attempt} running", flush=True)
    if attempt == 1:
        time.sleep(seconds)
    print("done", flush=True)
