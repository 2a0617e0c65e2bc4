"""The Prometheus collector read through a real CollectorRegistry (client_python's
``get_sample_value`` pattern): every computed series, its labels, and what is never exported."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest

from otel_ml import semconv as sc
from otel_ml_processor.compute.engine import DriftResult, ModelMetrics
from otel_ml_processor.compute.manager import Snapshot
from otel_ml_processor.counters import Counters
from otel_ml_processor.export.prometheus import MLCollector

MV = {"model": "churn", "model_version": "3"}


def registry_of(metrics: ModelMetrics) -> CollectorRegistry:
    snap = Snapshot(models={("churn", "3"): metrics}, computed_at={("churn", "3"): 1700000000.0},
                    durations={("churn", "3"): 0.25}, labels_pending=4)
    registry = CollectorRegistry()
    registry.register(MLCollector(Counters(), lambda: snap))
    return registry


def metrics() -> ModelMetrics:
    return ModelMetrics(
        window_predictions=500, window_labeled=40,
        performance={"accuracy": 0.8, "precision": 0.0},
        performance_interval={("accuracy", "lower"): 0.65, ("accuracy", "upper"): 0.9},
        drift=[
            DriftResult("age", "ks", 0.12, 0.004, True, 0.02, 0.01),
            DriftResult("plan", "jensenshannon", 0.08, None, False, None, 0.21),
            DriftResult("__multivariate__", "pca_reconstruction", 1.05, None, False, None, 1.3),
            DriftResult("zip", "wasserstein", 0.3, None, True, None, math.inf),
            DriftResult("age", "missing", 0.3, 1e-6, True, 1e-5, 0.01),
        ],
        feature_missing_ratio={"age": 0.3, "plan": 0.0},
        fairness={("gender", "demographic_parity_difference"): 0.12},
        fairness_pvalue={("gender", "demographic_parity_difference"): 0.003,
                         ("gender", "equalized_odds_difference"): math.nan},
    )


def test_new_series_and_their_labels():
    r = registry_of(metrics())
    get = r.get_sample_value
    assert get(sc.M_PERFORMANCE_INTERVAL, {**MV, "metric": "accuracy", "bound": "lower"}) == 0.65
    assert get(sc.M_PERFORMANCE_INTERVAL, {**MV, "metric": "accuracy", "bound": "upper"}) == 0.9
    age = {**MV, "feature": "age", "method": "ks"}
    assert get(sc.M_DRIFT_SCORE, age) == 0.12 and get(sc.M_DRIFT_PVALUE, age) == 0.004
    assert get(sc.M_DRIFT_QVALUE, age) == 0.02 and get(sc.M_DRIFT_THRESHOLD, age) == 0.01
    assert get(sc.M_DRIFT_DETECTED, age) == 1.0
    plan = {**MV, "feature": "plan", "method": "jensenshannon"}
    assert get(sc.M_DRIFT_THRESHOLD, plan) == 0.21 and get(sc.M_DRIFT_DETECTED, plan) == 0.0
    assert get(sc.M_DRIFT_QVALUE, plan) is None and get(sc.M_DRIFT_PVALUE, plan) is None
    mv = {**MV, "feature": "__multivariate__", "method": "pca_reconstruction"}
    assert get(sc.M_DRIFT_THRESHOLD, mv) == 1.3
    age_missing = {**MV, "feature": "age", "method": sc.METHOD_MISSING}
    assert get(sc.M_DRIFT_SCORE, age_missing) == 0.3 and get(sc.M_DRIFT_QVALUE, age_missing) == 1e-5
    assert get(sc.M_FEATURE_MISSING_RATIO, {**MV, "feature": "age"}) == 0.3
    assert get(sc.M_FEATURE_MISSING_RATIO, {**MV, "feature": "plan"}) == 0.0
    gender = {**MV, "attribute": "gender", "metric": "demographic_parity_difference"}
    assert get(sc.M_FAIRNESS, gender) == 0.12 and get(sc.M_FAIRNESS_PVALUE, gender) == 0.003
    assert get(sc.M_WINDOW_LABELED, MV) == 40 and get(sc.M_WINDOW_PREDICTIONS, MV) == 500


def test_non_finite_values_are_absent():
    r = registry_of(metrics())
    zip_ = {**MV, "feature": "zip", "method": "wasserstein"}
    assert r.get_sample_value(sc.M_DRIFT_THRESHOLD, zip_) is None      # inf: not exported
    assert r.get_sample_value(sc.M_DRIFT_SCORE, zip_) == 0.3
    eo = {**MV, "attribute": "gender", "metric": "equalized_odds_difference"}
    assert r.get_sample_value(sc.M_FAIRNESS_PVALUE, eo) is None          # NaN: not exported
    text = generate_latest(r).decode()
    assert "NaN" not in text and "+Inf" not in text.replace('le="+Inf"', "")
    # precision 0.0 is a value (sklearn's), not an absence
    assert r.get_sample_value(sc.M_PERFORMANCE, {**MV, "metric": "precision"}) == 0.0


def test_an_empty_snapshot_exports_only_ingest_series():
    registry = CollectorRegistry()
    registry.register(MLCollector(Counters(), lambda: Snapshot()))
    assert registry.get_sample_value(sc.M_LABELS_PENDING) == 0
    assert registry.get_sample_value(sc.M_RECORDS_REJECTED + "_total", {"reason": "malformed"}) == 0
    assert registry.get_sample_value(sc.M_DRIFT_THRESHOLD, {**MV, "feature": "age", "method": "ks"}) is None
