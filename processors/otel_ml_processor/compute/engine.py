"""The metrics engine (stand-in: accuracy and ks only, until the full engine lands)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import stats

from otel_ml import semconv as sc
from otel_ml_processor.compute.reference import PreparedReference
from otel_ml_processor.compute.window import WindowData


@dataclass
class ModelSpec:
    task: Optional[str] = None
    positive_label: Optional[str] = None
    window_size: int = 10000
    window_max_age: Optional[float] = None
    drift_default_method: str = "auto"
    drift_default_threshold: Optional[float] = None
    drift_features: dict = field(default_factory=dict)
    fairness_attributes: tuple = ()
    fairness_min_group_size: int = 30
    max_features: int = 500
    max_groups_per_attribute: int = 50


@dataclass
class DriftResult:
    feature: str
    method: str
    score: float
    pvalue: Optional[float]
    detected: bool


@dataclass
class ModelMetrics:
    window_predictions: int = 0
    window_labeled: int = 0
    performance: dict = field(default_factory=dict)
    estimated_performance: dict = field(default_factory=dict)
    ood_ratio: Optional[float] = None
    feature_ood_ratio: dict = field(default_factory=dict)
    drift: list = field(default_factory=list)
    fairness: dict = field(default_factory=dict)
    group_performance: dict = field(default_factory=dict)
    group_predictions: dict = field(default_factory=dict)
    data_quality: dict = field(default_factory=dict)
    cardinality_limited: dict = field(default_factory=dict)


def compute_model_metrics(window: WindowData, ref: Optional[PreparedReference], spec: ModelSpec) -> ModelMetrics:
    m = ModelMetrics(window_predictions=len(window.prediction_ids))
    labeled = np.array([v is not None for v in window.label], dtype=bool)
    m.window_labeled = int(labeled.sum())
    if m.window_labeled:
        y_true = np.array([str(v) for v in window.label[labeled]])
        y_pred = np.array([str(v) for v in window.output_label[labeled]])
        m.performance[sc.PERF_ACCURACY] = float(np.mean(y_true == y_pred))
    if ref is not None:
        for name, col in window.features.items():
            method, threshold = spec.drift_features.get(name, (spec.drift_default_method, spec.drift_default_threshold))
            r = ref.data.features.get(name)
            if method != sc.METHOD_KS or r is None or col.dtype != float:
                continue
            w = col[~np.isnan(col)]
            if len(w) == 0:
                continue
            res = stats.ks_2samp(r[~np.isnan(r)], w)
            alpha = 0.05 if threshold is None else threshold
            m.drift.append(DriftResult(name, sc.METHOD_KS, float(res.statistic), float(res.pvalue), bool(res.pvalue < alpha)))
    return m
