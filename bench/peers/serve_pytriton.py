"""NVIDIA PyTriton (Triton Inference Server, bundled) with its dynamic batcher, for
``bench/serving.py``. Runs on CPU.

    python serve_pytriton.py --model model.joblib --port 8000 --grpc-port N --metrics-port M

Open Inference Protocol v2: ``POST /v2/models/model/infer`` with one input ``x`` (FP64,
``[rows, 20]``) answers output ``y`` (INT64, ``[rows, 1]``). Triton's dynamic batcher merges
concurrent requests up to 64 rows (its default queue delay: it takes what is queued).
"""

from __future__ import annotations

import argparse
import warnings

import joblib
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

warnings.filterwarnings("ignore", message="X does not have valid feature names")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--queue-delay-us", type=int, default=0)
    args = parser.parse_args()
    model = joblib.load(args.model)

    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": model.predict(x).astype(np.int64).reshape(-1, 1)}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_metrics=False,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="model",
            infer_func=infer,
            inputs=[Tensor(name="x", dtype=np.float64, shape=(20,))],
            outputs=[Tensor(name="y", dtype=np.int64, shape=(1,))],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us),
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
