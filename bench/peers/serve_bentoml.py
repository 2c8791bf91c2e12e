"""A BentoML service with adaptive batching, for ``bench/serving.py``.

    BENCH_MODEL=model.joblib bentoml serve serve_bentoml:SklearnService --host 127.0.0.1 --port N

``POST /predict`` with ``{"x": [[f0, ..., f19]]}`` answers the predictions as a JSON list. The
API is batchable: BentoML's adaptive batcher merges concurrent requests along the first axis
(at most 64 rows).
"""

from __future__ import annotations

import os
import warnings

import bentoml
import joblib
import numpy as np

warnings.filterwarnings("ignore", message="X does not have valid feature names")


@bentoml.service(workers=1)
class SklearnService:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=10_000)
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)
