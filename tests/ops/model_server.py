"""A stand-in model server for the dashboard tests: OTel metrics on a Prometheus /metrics page.

It creates the model-server instruments of DESIGN.md (names from otel_ml.semconv, same units
and explicit buckets) plus ``opentelemetry-instrumentation-system-metrics``, and exports them
through the standard ``opentelemetry-exporter-prometheus`` reader, so Prometheus sees exactly
the OTel -> Prometheus names a real model server produces. It records a prediction every
50 ms (1 in 20 fails, 1 in 10 is dropped from a full buffer) until killed.

    python tests/ops/model_server.py --port 9100 --model churn --version 3
"""

from __future__ import annotations

import argparse
import random
import time

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

from otel_ml import semconv as sc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--version", required=True)
    args = ap.parse_args()

    start_http_server(args.port, addr="127.0.0.1")
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    SystemMetricsInstrumentor().instrument(meter_provider=provider)
    meter = provider.get_meter(sc.INSTRUMENTATION_NAME)
    predictions = meter.create_counter(sc.METRIC_CLIENT_PREDICTIONS, unit="{prediction}", description="Predict calls.")
    errors = meter.create_counter(sc.METRIC_CLIENT_ERRORS, unit="{error}", description="Predict calls that raised.")
    dropped = meter.create_counter(sc.METRIC_CLIENT_BUFFER_DROPPED, unit="{record}", description="Records dropped.")
    duration = meter.create_histogram(sc.METRIC_CLIENT_PREDICT_DURATION, unit="s", description="Predict duration.",
                                      explicit_bucket_boundaries_advisory=list(sc.PREDICT_DURATION_BUCKETS))
    score = meter.create_histogram(sc.METRIC_CLIENT_PREDICTION_SCORE, unit="1", description="Confidence.",
                                   explicit_bucket_boundaries_advisory=list(sc.SCORE_BUCKETS))
    attrs = {sc.ML_MODEL_NAME: args.model, sc.ML_MODEL_VERSION: args.version}
    rng = random.Random(1)
    i = 0
    while True:
        predictions.add(1, attrs)
        duration.record(rng.uniform(0.001, 0.05), attrs)
        score.record(rng.uniform(0.5, 1.0), attrs)
        if i % 20 == 0:
            errors.add(1, attrs)
        if i % 10 == 0:
            dropped.add(1, attrs)
        i += 1
        time.sleep(0.05)


if __name__ == "__main__":
    main()
