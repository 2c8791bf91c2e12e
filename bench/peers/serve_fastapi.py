"""The reference for ``bench/serving.py``: a bare FastAPI app holding the model, as a user would
write one, on ``uvicorn[standard]`` (uvloop and httptools), one process.

    python serve_fastapi.py --model model.joblib --port 8000

``POST /predict`` with ``{"x": [[f0, ..., f19], ...]}`` answers ``{"predictions": [...]}``. The
route is a plain ``def``, so FastAPI runs ``predict`` in its thread pool and a slow model does not
block the event loop. Access logs are off, as in every server of the bench.
"""

from __future__ import annotations

import argparse
import warnings

import joblib
import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

# Fitted on a DataFrame, predicted on an array: the same numbers, without a warning per call.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


class Rows(BaseModel):
    x: list[list[float]]


def make_app(model_path: str) -> FastAPI:
    model = joblib.load(model_path)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/predict")
    def predict(rows: Rows) -> dict[str, list[int]]:
        return {"predictions": model.predict(np.asarray(rows.x)).tolist()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.model),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
