"""A script that predicts and exits, with no otel-ml code (run under ``opentelemetry-instrument``
by tests/reliability/test_shutdown_delivery.py): ``--calls`` one-row ``predict_proba`` calls,
the prediction ids written to ``--ids`` (JSON), then a normal exit, where otel-ml ships what it
holds within ``OTEL_ML_SHUTDOWN_TIMEOUT``."""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.linear_model import LogisticRegression

import otel_ml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--ids", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    ids = []
    for i in range(args.calls):
        model.predict_proba(X[i:i + 1])
        ids += otel_ml.last_prediction_ids()
    with open(args.ids, "w") as f:
        json.dump(ids, f)


if __name__ == "__main__":
    main()
