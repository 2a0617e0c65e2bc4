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
from typing import Dict, List, Optional, Union

import numpy as np
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

import otel_ml

otel_ml.configure(service_name="churn-api", model_name="churn", model_version="1")   # line 2

from examples.sklearn_server import FEATURES, train  # noqa: E402 - after configure, like any app import

MODEL = train()
app = FastAPI(title="churn model")


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


@app.post("/label")
def label(req: LabelRequest) -> dict:
    otel_ml.record_label("churn", req.id, req.value)
    return {"ok": True}


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8000)
    uvicorn.run(app, host="127.0.0.1", port=ap.parse_args().port)
