"""A model whose predict sleeps for as long as its ``delay`` column says: slow requests on
demand, for the worker crash, scaling and reload tests. Saved as a python_function model
(cloudpickle, by value, so a worker loads it without importing the tests)."""

from __future__ import annotations

import os
import time
from typing import Any


class SleepyModel:
    def predict(self, X: Any) -> Any:
        delay = float(X["delay"].max())
        if delay > 0:
            time.sleep(delay)
        out = X["x"].to_numpy() * 2.0
        if float(X["x"].max()) == -1.0:  # lets a test ask which process answered
            out[:] = os.getpid()
        return out
