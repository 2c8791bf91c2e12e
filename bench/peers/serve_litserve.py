"""LitServe with batching, for ``bench/serving.py``.

    python serve_litserve.py --model model.joblib --port 8000 [--max-batch 64] [--timeout-ms 1]

``POST /predict`` with ``{"x": [f0, ..., f19]}`` (one row) answers ``{"prediction": n}``; LitServe
gathers up to ``--max-batch`` concurrent requests, waiting at most ``--timeout-ms``.
"""

from __future__ import annotations

import argparse
import warnings

import joblib
import litserve as ls
import numpy as np

warnings.filterwarnings("ignore", message="X does not have valid feature names")


class SklearnAPI(ls.LitAPI):
    def __init__(self, model_path: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.model_path = model_path

    def setup(self, device: str) -> None:
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self.model = joblib.load(self.model_path)

    def decode_request(self, request: dict) -> list[float]:
        return request["x"]

    def batch(self, inputs: list[list[float]]) -> np.ndarray:
        return np.asarray(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 1:
            x = x[None, :]
        return self.model.predict(x)

    def unbatch(self, output: np.ndarray) -> list[int]:
        return output.tolist()

    def encode_response(self, output: object) -> dict:
        if isinstance(output, np.ndarray):
            output = output.tolist()[0]
        return {"prediction": output}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--timeout-ms", type=float, default=1.0)
    args = parser.parse_args()
    api = SklearnAPI(
        args.model, max_batch_size=args.max_batch, batch_timeout=args.timeout_ms / 1000
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
