"""A scikit-learn model server on the standard library's http.server, with no otel-ml code.

Run it under OpenTelemetry's launcher and every prediction is monitored:

    OTEL_SERVICE_NAME=churn-api OTEL_ML_MODEL_NAME=churn OTEL_ML_MODEL_VERSION=1 \\
        opentelemetry-instrument python examples/sklearn_server.py --port 8080

    curl -s localhost:8080/predict -d '{"rows": [{"age": 42, "income": 3.5, "visits": 2}]}'
    curl -s localhost:8080/label -d '{"id": "<prediction id>", "value": "yes"}'

``/predict`` answers the predicted label, its score, the prediction id (to send the true
label later) and the trace id of the request. The only otel-ml calls are the optional
``last_prediction_ids`` / ``record_label`` for labels; the request span is plain OTel API.
SIGTERM ends the server cleanly, so buffered records are shipped (or kept on disk).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
from opentelemetry import trace
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_ml

FEATURES = ["age", "income", "visits"]
tracer = trace.get_tracer("example.sklearn_server")


def train() -> object:
    """A small churn model on synthetic data (deterministic)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(40, 12, 2000), "income": rng.gamma(2.0, 2.0, 2000),
                      "visits": rng.integers(0, 20, 2000)})
    y = np.where(0.08 * (X["age"] - 40) - 0.3 * X["income"] + 0.1 * X["visits"] + rng.normal(0, 1, 2000) > 0,
                 "yes", "no")
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)


MODEL = train()


class Handler(BaseHTTPRequestHandler):
    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # http.server's naming
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/predict":
            with tracer.start_as_current_span("POST /predict") as span:
                rows = pd.DataFrame(body["rows"], columns=FEATURES)
                proba = MODEL.predict_proba(rows)                 # instrumented: no code needed
                ids = otel_ml.last_prediction_ids()
                trace_id = format(span.get_span_context().trace_id, "032x")
            classes = [str(c) for c in MODEL.classes_]
            out = [{"id": ids[i] if i < len(ids) else None, "label": classes[int(np.argmax(p))],
                    "score": float(p.max())} for i, p in enumerate(proba)]
            self._json(200, {"predictions": out, "trace_id": trace_id})
        elif self.path == "/label":
            otel_ml.record_label(body.get("model", "churn"), body["id"], body["value"])
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": "not found"})

    def do_GET(self) -> None:
        self._json(200, {"ok": True}) if self.path == "/health" else self._json(404, {"error": "not found"})

    def log_message(self, fmt: str, *args) -> None:
        pass                                               # keep the console quiet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    # Plain Python logging: bridged to OTel logs (same trace context, same OTLP target).
    logging.getLogger("churn-api").info("serving %s on port %d", type(MODEL).__name__, args.port)
    # SIGTERM -> normal exit: atexit handlers run, otel-ml ships within OTEL_ML_SHUTDOWN_TIMEOUT.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
