"""A FastAPI model server monitored by otel-ml with two lines of code.

    pip install fastapi uvicorn
    OTEL_SERVICE_NAME=churn-api python examples/fastapi_server.py --port 8000
    curl -s localhost:8000/predict -H 'content-type: application/json' \\
        -d '{"rows": [{"age": 42, "income": 3.5, "visits": 2}], "segments": [{"gender": "f"}]}'

or with no otel-ml line at all: ``opentelemetry-instrument uvicorn examples.fastapi_server:app``
(then ``configure()`` below sees the SDK already set up and only adds what is missing).
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from typing import Dict, List, Optional, Union

import numpy as np
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

import otel_ml

otel_ml.configure(service_name="churn-api", model_name="churn", model_version="1")   # line 2

from sklearn.linear_model import LogisticRegression  # noqa: E402 - after configure, like any app import
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

FEATURES = ["age", "income", "visits"]


def train():
    """The same synthetic churn model as examples/sklearn_server.py (deterministic)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(40, 12, 2000), "income": rng.gamma(2.0, 2.0, 2000),
                      "visits": rng.integers(0, 20, 2000)})
    y = np.where(0.08 * (X["age"] - 40) - 0.3 * X["income"] + 0.1 * X["visits"] + rng.normal(0, 1, 2000) > 0,
                 "yes", "no")
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)


MODEL = train()


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    otel_ml.shutdown()       # uvicorn re-raises SIGTERM after shutdown, skipping atexit: ship now


app = FastAPI(title="churn model", lifespan=lifespan)


class PredictRequest(BaseModel):
    rows: List[Dict[str, float]]
    segments: Optional[List[Dict[str, Union[str, int, float, bool]]]] = None


class LabelRequest(BaseModel):
    id: str
    value: str


@app.post("/predict")
def predict(req: PredictRequest) -> dict:
    X = pd.DataFrame(req.rows, columns=FEATURES)
    with otel_ml.prediction_context(segments=req.segments):      # fairness groups, optional
        proba = MODEL.predict_proba(X)
    ids = otel_ml.last_prediction_ids()
    classes = [str(c) for c in MODEL.classes_]
    return {"predictions": [{"id": i, "label": classes[int(np.argmax(p))], "score": float(p.max())}
                            for i, p in zip(ids, proba)]}


@app.get("/health")
def health() -> dict:
    return {"ok": True}


@app.post("/label")
def label(req: LabelRequest) -> dict:
    otel_ml.record_label("churn", req.id, req.value)
    return {"ok": True}


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8000)
    uvicorn.run(app, host="127.0.0.1", port=ap.parse_args().port)
