"""A FastAPI model server as users write one: a scikit-learn model loaded at start, one endpoint.

    MODEL_PATH=iris.joblib opentelemetry-instrument uvicorn fastapi_app:app --workers 2
    MODEL_PATH=iris.joblib opentelemetry-instrument gunicorn -k uvicorn.workers.UvicornWorker -w 2 fastapi_app:app

``POST /predict`` ``{"rows": [[...], ...]}`` answers each row's label and class probabilities
(``predict`` and ``predict_proba`` on the same rows, as many servers do) and the worker's pid.
"""

from __future__ import annotations

import os
from typing import List

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

model = joblib.load(os.environ["MODEL_PATH"])
app = FastAPI()


class Rows(BaseModel):
    rows: List[List[float]]


@app.get("/health")
def health() -> dict:
    return {"ok": True}


@app.post("/predict")
def predict(request: Rows) -> dict:
    X = np.asarray(request.rows, dtype=float)
    labels = model.predict(X)
    proba = model.predict_proba(X)
    return {"labels": [str(v) for v in labels.tolist()], "probabilities": proba.tolist(),
            "classes": [str(c) for c in model.classes_.tolist()], "pid": os.getpid()}
