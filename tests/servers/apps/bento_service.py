"""A BentoML service as users write one: a scikit-learn model from the BentoML model store.

    BENTO_MODEL_TAG=iris_clf:latest opentelemetry-instrument bentoml serve bento_service:Classifier

``POST /predict`` ``{"rows": [[...], ...]}`` answers each row's label and class probabilities
and the worker's pid. The rows carry the model store tag's name and version (otel-ml's BentoML
integration), with no ``OTEL_ML_MODEL_NAME`` set.
"""

from __future__ import annotations

import os
from typing import List

import bentoml
import numpy as np


# BentoML traces with a TracerProvider of its own that samples nothing unless configured: with
# BENTO_TRACES_ENDPOINT set, every span goes there over OTLP/HTTP (its documented service options).
_TRACES = os.environ.get("BENTO_TRACES_ENDPOINT")
_OPTIONS = {"tracing": {"sample_rate": 1.0, "exporter_type": "otlp",
                        "otlp": {"protocol": "http", "endpoint": _TRACES}}} if _TRACES else {}


@bentoml.service(workers=int(os.environ.get("BENTO_WORKERS", "1")), **_OPTIONS)
class Classifier:
    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(os.environ.get("BENTO_MODEL_TAG", "iris_clf:latest"))

    @bentoml.api
    def predict(self, rows: List[List[float]]) -> dict:
        X = np.asarray(rows, dtype=float)
        labels = self.model.predict(X)
        proba = self.model.predict_proba(X)
        return {"labels": [str(v) for v in labels.tolist()], "probabilities": proba.tolist(),
                "classes": [str(c) for c in self.model.classes_.tolist()], "pid": os.getpid()}
