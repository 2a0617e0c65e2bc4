"""The two windows through a real processor (DESIGN.md, "Statistics": "Window", "Labeled window").

A busy model (window of 100, ``first_n`` reference of 50) gets 400 predictions over OTLP/gRPC,
then labels only for predictions that have long left its window. The window is the last 100
predictions after the reference (KS against the reference equals scipy's on those rows); the
labeled window is the last 100 labeled predictions (here all after the reference), read back from the
database (accuracy equals scikit-learn's on exactly those rows).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import accuracy_score

from tests.support import ProcessorProcess, grpc_export, label, otlp_logs_request, prediction, wait_for

pytestmark = pytest.mark.e2e

N, FIRST_N, SIZE = 400, 50, 100
LABELED = range(20, 261)          # labels for these: the first 30 are reference rows, none is in the window


def test_window_after_the_reference_and_labels_of_predictions_that_left_it(tmp_path):
    models = [{"name": "busy", "reference": {"first_n": FIRST_N}, "window": {"size": SIZE},
               "drift": {"default": {"method": "ks"}}}]
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, N)
    predicted = rng.choice(["0", "1"], N)
    truth = np.where(rng.random(N) < 0.75, predicted, np.where(predicted == "1", "0", "1"))
    with ProcessorProcess(tmp_path, models=models) as proc:
        # One request: the rows share a record time, so their order is their arrival.
        grpc_export(proc.grpc_endpoint, otlp_logs_request(
            [prediction("busy", f"p{i}", {"x": float(x[i])}, label=str(predicted[i])) for i in range(N)]))
        grpc_export(proc.grpc_endpoint, otlp_logs_request([label("busy", f"p{i}", str(truth[i])) for i in LABELED]))
        kept = list(LABELED)[-SIZE:]                       # the last 100 labeled, all after the reference
        expected = accuracy_score(truth[kept], predicted[kept])

        def accuracy():
            if proc.sample("ml_window_labeled", {"model": "busy"}) != SIZE:
                return None
            return proc.sample("ml_performance", {"model": "busy", "metric": "accuracy"})

        got = wait_for(accuracy, timeout=60, what="accuracy on the labeled window")
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
        assert proc.sample("ml_window_predictions", {"model": "busy"}) == SIZE
        ks = ks_2samp(x[:FIRST_N], x[N - SIZE:])
        score = wait_for(lambda: proc.sample("ml_drift_score", {"model": "busy", "feature": "x", "method": "ks"}),
                         what="ks of the window")
        assert math.isclose(score, ks.statistic, rel_tol=1e-9, abs_tol=1e-12)
        pvalue = proc.sample("ml_drift_pvalue", {"model": "busy", "feature": "x", "method": "ks"})
        assert math.isclose(pvalue, ks.pvalue, rel_tol=1e-9, abs_tol=1e-12)
