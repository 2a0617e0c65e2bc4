"""The first hour of a model, through a real processor over OTLP/gRPC (DESIGN.md, "Statistics":
"Labeled window", ``ml_reference_predictions``; issue 22).

- ``churn`` has the default reference (``first_n: 1000``) and gets 200 predictions and 150
  labels: accuracy and its Wilson interval (equal to scikit-learn's and statsmodels' on those
  150 rows) are exported by the first compute cycle that starts after the labels are stored,
  ``ml_reference_predictions`` = 200 of ``ml_reference_size`` 1000, and drift, OOD and the
  window wait for the reference. The model page says "collecting the reference: 200 of 1000";
  so does the Grafana model dashboard, whose "Collecting the reference" queries (from the
  generated JSON) a real Prometheus scraping the processor answers with 200 and 1000.
- ``price`` (regression, default reference) gets 500 labeled predictions: mae, rmse, r2 equal
  scikit-learn's.
- ``early`` (``first_n: 50``) gets 80 labeled predictions: all 80 are in the labeled window, but
  only the 30 after the reference count for the baseline comparison
  (``ml_window_labeled_after_reference``, what MLPerformanceBelowBaseline's minimum reads).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, r2_score
from statsmodels.stats.proportion import proportion_confint

from otel_ml import semconv as sc
from tests.ops.grafana_queries import panel_queries, substitute
from tests.support import (PrometheusProcess, ProcessorProcess, grpc_export, http_get, label, otlp_logs_request,
                           prediction, wait_for)

pytestmark = pytest.mark.e2e

close = dict(rel_tol=1e-9, abs_tol=1e-12)


def regression(model: str, pid: str, x: float, value: float) -> tuple:
    event, attrs = prediction(model, pid, {"x": x}, **{sc.ML_MODEL_TASK: sc.TASK_REGRESSION,
                                                     sc.ML_OUTPUT_VALUE: value})
    del attrs[sc.ML_OUTPUT_LABEL]
    return event, attrs


def test_performance_from_the_first_labels_while_the_reference_fills(tmp_path):
    rng = np.random.default_rng(22)
    predicted = rng.choice(["0", "1"], 200)
    truth = np.where(rng.random(200) < 0.8, predicted, np.where(predicted == "1", "0", "1"))
    x = rng.normal(0, 1, 500)
    value = 3 * x + rng.normal(0, 1, 500)
    actual = value + rng.normal(0, 0.5, 500)
    early = rng.choice(["a", "b"], 80)
    models = [{"name": "early", "reference": {"first_n": 50}}]      # churn and price: every default
    with ProcessorProcess(tmp_path, models=models) as proc:
        grpc_export(proc.grpc_endpoint, otlp_logs_request(
            [prediction("churn", f"c{i}", {"x": float(i)}, label=str(predicted[i])) for i in range(200)]
            + [regression("price", f"r{i}", float(x[i]), float(value[i])) for i in range(500)]
            + [prediction("early", f"e{i}", {"x": float(i)}, label=str(early[i])) for i in range(80)]))
        grpc_export(proc.grpc_endpoint, otlp_logs_request(
            [label("churn", f"c{i}", str(truth[i])) for i in range(150)]
            + [label("price", f"r{i}", float(actual[i])) for i in range(500)]
            + [label("early", f"e{i}", "a") for i in range(80)]))
        stored = time.time()      # the answer came back: the labels are stored and joined

        churn = {"model": "churn"}

        def computed_after_labels():
            # a cycle computed more than one compute.interval (1s) after the labels were stored
            # started after them: the first one must already have the accuracy
            last = proc.sample(sc.M_LAST_COMPUTED, churn)
            return last is not None and last > stored + 1.0

        wait_for(computed_after_labels, timeout=60, what="a compute cycle after the labels")
        text = proc.metrics_text()
        expected = accuracy_score(truth[:150], predicted[:150])
        assert math.isclose(proc.sample(sc.M_PERFORMANCE, {**churn, "metric": "accuracy"}), expected, **close), text
        lower, upper = proportion_confint(int(round(expected * 150)), 150, alpha=0.05, method="wilson")
        assert math.isclose(proc.sample(sc.M_PERFORMANCE_INTERVAL, {**churn, "metric": "accuracy", "bound": "lower"}),
                            lower, **close)
        assert math.isclose(proc.sample(sc.M_PERFORMANCE_INTERVAL, {**churn, "metric": "accuracy", "bound": "upper"}),
                            upper, **close)
        assert proc.sample(sc.M_WINDOW_LABELED, churn) == 150
        assert proc.sample(sc.M_REFERENCE_PREDICTIONS, churn) == 200
        assert proc.sample(sc.M_REFERENCE_SIZE, churn) == 1000
        # the window, drift, OOD and the baseline's labels wait for a complete reference
        assert proc.sample(sc.M_WINDOW_PREDICTIONS, churn) == 0
        assert proc.sample(sc.M_DRIFT_SCORE, churn) is None
        assert proc.sample(sc.M_OOD_RATIO, churn) is None
        assert proc.sample(sc.M_WINDOW_LABELED_AFTER_REFERENCE, churn) is None
        status, page = http_get(f"http://{proc.metrics_endpoint}/models/churn")
        text = page.decode().replace("\u202f", " ")        # (thousands are spaced with a narrow space)
        assert status == 200 and "collecting the reference: 200 of 1 000" in text, text

        price = {"model": "price"}
        wait_for(lambda: proc.sample(sc.M_WINDOW_LABELED, price) == 500, what="price's labeled window")
        assert math.isclose(proc.sample(sc.M_PERFORMANCE, {**price, "metric": "mae"}),
                            mean_absolute_error(actual, value), **close)
        assert math.isclose(proc.sample(sc.M_PERFORMANCE, {**price, "metric": "rmse"}),
                            math.sqrt(mean_squared_error(actual, value)), **close)
        assert math.isclose(proc.sample(sc.M_PERFORMANCE, {**price, "metric": "r2"}), r2_score(actual, value), **close)
        assert proc.sample(sc.M_REFERENCE_PREDICTIONS, price) == 500

        first = {"model": "early"}
        wait_for(lambda: proc.sample(sc.M_WINDOW_LABELED_AFTER_REFERENCE, first) == 30,
                 what="early's labels after its reference")
        assert proc.sample(sc.M_WINDOW_LABELED, first) == 80
        assert math.isclose(proc.sample(sc.M_PERFORMANCE, {**first, "metric": "accuracy"}),
                            accuracy_score(["a"] * 80, early), **close)
        assert proc.sample(sc.M_REFERENCE_PREDICTIONS, first) == 50
        assert proc.sample(sc.M_REFERENCE_SIZE, first) == 50
        assert proc.sample(sc.M_WINDOW_PREDICTIONS, first) == 30

        # the Grafana model dashboard's "Collecting the reference" panel, as Grafana would query it
        (collecting_a, collecting_b) = [expr for dash, title, _ref, expr in panel_queries()
                                        if dash == "otel-ml-model.json" and title == "Collecting the reference"]
        with PrometheusProcess(tmp_path, targets=[proc.metrics_endpoint]) as prom:
            values = {"model": "churn", "model_version": "1"}
            assert wait_for(lambda: prom.value(substitute(collecting_a, values)), what="the panel's rows") == 200
            assert prom.value(substitute(collecting_b, values)) == 1000

        # docs/processor.md's curl example of POST /v1/labels, run as written, answers as documented
        doc = (Path(__file__).resolve().parents[2] / "docs" / "processor.md").read_text()
        command, answer = re.search(r"```\n(curl -s -X POST http://127\.0\.0\.1:4318/v1/labels .*?)```\n```\n(.*?)```",
                                    doc, re.S).groups()
        command = command.replace("127.0.0.1:4318", f"127.0.0.1:{proc.http_port}")
        got = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True).stdout
        assert json.loads(got) == json.loads(answer)
