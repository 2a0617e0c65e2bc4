"""The per-model metrics engine: one :class:`ModelMetrics` from a window and its prepared reference.

:func:`compute_model_metrics` applies DESIGN.md's "Statistics" to one (model, version):
performance on the labeled window, CBPE's estimate, OOD, drift per feature / of the prediction /
multivariate, fairness and per-group numbers, data quality counts, cardinality caps. Every value
is finite; what is undefined is absent (see docs/metrics.md for each rule).

Row rules:

- labeled row = its label is not None (regression: a finite number);
- classification metrics use labeled rows that have a predicted label; probability metrics
  (roc_auc, log_loss, brier) the subset of those with a known P(positive);
- regression metrics use labeled rows with a finite predicted value;
- a missing / NaN / infinite feature value is left out of that feature's drift and OOD (counted in
  ``data_quality``); rows missing a numeric feature are left out of the multivariate drift;
- fairness (binary models only) uses rows with a predicted label and the attribute; groups past
  ``max_groups_per_attribute`` (fewest rows first) are folded into ``__other__``.

Example::

    from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics

    m = compute_model_metrics(window, prepared_reference, ModelSpec(positive_label="1"))
    m.performance["accuracy"], [d for d in m.drift if d.detected]
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.compute.reference import PreparedFeature, PreparedReference, positive_probability
from otel_ml_processor.compute.window import QUALITY_MISSING, QUALITY_NAN, WindowData, number_str
from otel_ml_processor.stats import cbpe, fairness, performance
from otel_ml_processor.stats._codes import value_counts
from otel_ml_processor.stats.ood import categorical_ood, numeric_ood
from otel_ml_processor.stats.registry import NUMERIC, FeatureWindow

__all__ = ["ModelSpec", "DriftResult", "ModelMetrics", "compute_model_metrics"]


@dataclass
class ModelSpec:
    """What the engine needs from the config (the service maps the YAML config to this)."""

    task: Optional[str] = None                 # None -> take WindowData.task
    positive_label: Optional[str] = None       # set -> binary classification
    window_size: int = 10000
    window_max_age: Optional[float] = None     # seconds
    drift_default_method: str = sc.METHOD_AUTO
    drift_default_threshold: Optional[float] = None   # None -> the method's default
    #: feature -> (method, threshold); also the keys "__prediction__" and "__multivariate__"
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
    performance: dict = field(default_factory=dict)            # metric -> value
    estimated_performance: dict = field(default_factory=dict)  # metric -> value (CBPE)
    ood_ratio: Optional[float] = None
    feature_ood_ratio: dict = field(default_factory=dict)      # feature -> fraction
    drift: list = field(default_factory=list)                  # [DriftResult]
    fairness: dict = field(default_factory=dict)               # (attribute, metric) -> value
    group_performance: dict = field(default_factory=dict)      # (attribute, group, metric) -> value
    group_predictions: dict = field(default_factory=dict)      # (attribute, group) -> rows
    data_quality: dict = field(default_factory=dict)           # (feature, issue) -> rows in window
    cardinality_limited: dict = field(default_factory=dict)    # kind -> count folded this cycle


def _present(arr: np.ndarray) -> np.ndarray:
    return np.fromiter((x is not None for x in arr.tolist()), dtype=bool, count=len(arr))


def _labels_str(label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.array([v if isinstance(v, str) else number_str(v) if isinstance(v, (int, float)) and
                     not isinstance(v, bool) else str(v) for v in label[mask].tolist()], dtype=object)


def _regression_labels(label: np.ndarray) -> np.ndarray:
    out = np.full(len(label), np.nan)
    for i, v in enumerate(label.tolist()):
        if v is None or isinstance(v, bool):
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def _quality(window: WindowData, name: str, values: np.ndarray) -> tuple[int, int]:
    q = window.feature_quality.get(name)
    if q is not None:
        return int(np.count_nonzero(q == QUALITY_MISSING)), int(np.count_nonzero(q == QUALITY_NAN))
    if values.dtype == object:
        return int(len(values) - np.count_nonzero(_present(values))), 0
    nan = np.isnan(values)
    return int(np.count_nonzero(nan)), int(np.count_nonzero(~nan & ~np.isfinite(values)))


def _align(values: np.ndarray, pf: PreparedFeature) -> tuple[np.ndarray, np.ndarray]:
    """The window column in the reference's value kind, and a mask of values that cannot be
    (a string where the reference has numbers: OOD, left out of drift)."""
    if pf.ref.value_kind == NUMERIC:
        if values.dtype != object:
            return values.astype(float, copy=False), np.zeros(len(values), dtype=bool)
        out = np.full(len(values), np.nan)
        bad = np.zeros(len(values), dtype=bool)
        for i, v in enumerate(values.tolist()):
            if v is None:
                continue
            try:
                out[i] = float(v)
            except ValueError:
                bad[i] = True
        return out, bad
    if values.dtype != object:
        return np.array([None if not math.isfinite(v) else number_str(v) for v in values.tolist()],
                        dtype=object), np.zeros(len(values), dtype=bool)
    return values, np.zeros(len(values), dtype=bool)


def _drift(pf: PreparedFeature, values: np.ndarray, feature: str) -> Optional[DriftResult]:
    cur = FeatureWindow.build(values)
    if cur.n == 0 or pf.ref.n == 0:
        return None
    res = pf.test.compute(pf.ref, cur, pf.treatment)
    if not math.isfinite(res.score) or (res.pvalue is not None and not math.isfinite(res.pvalue)):
        return None
    return DriftResult(feature, pf.method, float(res.score), res.pvalue, pf.test.detected(res, pf.threshold))


def _cap_groups(groups: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    names, counts = value_counts(groups)
    if names.size <= limit:
        return groups, 0
    # keep the most frequent groups (ties: by name), fold the rest
    order = np.lexsort((names, -counts))
    keep = set(names[order[:limit]].tolist())
    folded = np.array([g if g in keep else sc.OVERFLOW_LABEL_VALUE for g in groups.tolist()], dtype=object)
    return folded, int(names.size - limit)


def compute_model_metrics(window: WindowData, ref: Optional[PreparedReference], spec: ModelSpec,
                          executor: Optional[Executor] = None, labeled: Optional[WindowData] = None) -> ModelMetrics:
    """All metrics of one (model, version) window; ``ref`` None -> no drift, OOD or CBPE.

    ``executor`` (e.g. a ``ThreadPoolExecutor`` with one worker per core, owned by the caller)
    runs the per-feature OOD and drift work in parallel; results are the same without it.
    """
    labeled_window, task = labeled, spec.task or window.task   # (``labeled`` is a mask below)
    n = len(window.prediction_ids)
    m = ModelMetrics(window_predictions=n)
    limited = {sc.KIND_FEATURE: 0, sc.KIND_GROUP: 0}
    binary = task == sc.TASK_CLASSIFICATION and spec.positive_label is not None
    pos = spec.positive_label

    # -- performance ----------------------------------------------------------------------------
    has_pred = _present(window.output_label)
    if task == sc.TASK_REGRESSION:
        y_true_r = _regression_labels(window.label)
        labeled = np.isfinite(y_true_r)
        use = labeled & np.isfinite(window.output_value)
        m.performance = performance.regression_performance(y_true_r[use], window.output_value[use])
    else:
        labeled = _present(window.label)
        use = labeled & has_pred
        y_true_s = _labels_str(window.label, use)
        y_pred_s = window.output_label[use].astype(str).astype(object)
        if binary:
            p_pos = positive_probability(pos, window.output_label, window.score, window.probabilities)
            pp = p_pos[use]
            t01 = (y_true_s == pos).astype(int)
            y01 = (y_pred_s == pos).astype(int)
            known = np.isfinite(pp)
            m.performance = performance.binary_performance(t01, y01)
            if np.any(known):
                probs = performance.binary_performance(t01[known], y01[known], pp[known])
                for k in (sc.PERF_ROC_AUC, sc.PERF_LOG_LOSS, sc.PERF_BRIER):
                    if k in probs:
                        m.performance[k] = probs[k]
        else:
            m.performance = performance.multiclass_performance(y_true_s, y_pred_s)
    m.window_labeled = int(np.count_nonzero(labeled))

    # -- data quality (window features under the cap) ---------------------------------------------
    names = sorted(window.features)
    if ref is not None:
        # the reference's features first, in its order; others after
        names = [k for k in ref.features if k in window.features] + [k for k in names if k not in ref.features]
    kept_names = names[: spec.max_features]
    cut = set(names[spec.max_features:])
    for name in kept_names:
        missing, nan = _quality(window, name, window.features[name])
        if missing:
            m.data_quality[(name, sc.ISSUE_MISSING)] = missing
        if nan:
            m.data_quality[(name, sc.ISSUE_NAN)] = nan

    # -- OOD and drift --------------------------------------------------------------------------
    if ref is not None:
        cut.update(ref.dropped_features)
        kept = set(kept_names)
        work = [(name, pf, window.features[name]) for name, pf in ref.features.items()
                if name in window.features and name in kept]

        def one_feature(item):
            # numpy releases the GIL in sort / searchsorted: features can run on a thread pool
            name, pf, col = item
            values, bad = _align(col, pf)
            mask = None
            if pf.ref.n:
                if pf.ref.value_kind == NUMERIC:
                    mask = numeric_ood(values, pf.ref.min, pf.ref.max) | bad
                else:
                    mask = categorical_ood(values, pf.ref.category_set)
            return name, mask, _drift(pf, values, name)

        results = list(executor.map(one_feature, work)) if executor is not None else [one_feature(w) for w in work]
        masks = []
        for name, mask, d in results:
            if mask is not None:
                masks.append(mask)
                if n:
                    m.feature_ood_ratio[name] = float(np.count_nonzero(mask)) / n
            if d is not None:
                m.drift.append(d)
        if n:
            anyood = np.zeros(n, dtype=bool)
            for mask in masks:
                anyood |= mask
            m.ood_ratio = float(np.count_nonzero(anyood)) / n
        if ref.prediction is not None:
            pcol = window.output_value if task == sc.TASK_REGRESSION else window.output_label
            values, _ = _align(pcol, ref.prediction)
            d = _drift(ref.prediction, values, sc.FEATURE_PREDICTION)
            if d is not None:
                m.drift.append(d)
        if ref.multivariate is not None and all(k in window.features for k in ref.multivariate_features) and n:
            x = np.stack([_align(window.features[k], ref.features[k])[0] for k in ref.multivariate_features])
            s = ref.multivariate.score_columns(x)
            if s is not None:
                m.drift.append(DriftResult(sc.FEATURE_MULTIVARIATE, sc.METHOD_PCA_RECONSTRUCTION, s, None,
                                           s >= ref.multivariate_threshold))

        # -- CBPE ---------------------------------------------------------------------------------
        if binary and n:
            p_all = positive_probability(pos, window.output_label, window.score, window.probabilities)
            ok = has_pred & np.isfinite(p_all) & (p_all >= 0) & (p_all <= 1)
            p = p_all[ok]
            if ref.calibrator is not None and p.size:
                p = ref.calibrator.transform(p)
            m.estimated_performance = cbpe.estimate(p, window.output_label[ok] == pos)

    # -- fairness and groups ----------------------------------------------------------------------
    for attr in spec.fairness_attributes:
        seg = window.segments.get(attr)
        if seg is None:
            continue
        has_attr = _present(seg)
        groups_all, folded = _cap_groups(seg[has_attr], spec.max_groups_per_attribute)
        limited[sc.KIND_GROUP] += folded
        g_names, g_counts = value_counts(groups_all)
        for g, c in zip(g_names.tolist(), g_counts.tolist()):
            m.group_predictions[(attr, g)] = int(c)
        if not binary:
            continue
        groups = np.full(n, None, dtype=object)
        groups[has_attr] = groups_all
        rows = has_attr & has_pred
        y_pred = (window.output_label[rows] == pos).astype(int)
        lab = labeled[rows]
        y_true = np.zeros(int(np.count_nonzero(rows)), dtype=int)
        if np.any(lab):
            y_true[lab] = (_labels_str(window.label[rows], lab) == pos).astype(int)
        fair, per_group = fairness.fairness_metrics(y_pred, groups[rows], lab, y_true,
                                                    spec.fairness_min_group_size)
        for metric, v in fair.items():
            m.fairness[(attr, metric)] = v
        for (g, metric), v in per_group.items():
            m.group_performance[(attr, g, metric)] = v

    limited[sc.KIND_FEATURE] = len(cut)
    m.cardinality_limited = {k: v for k, v in limited.items() if v}
    if labeled_window is not None:   # the labeled window (every row labeled): performance and ml_window_labeled
        on_labeled = compute_model_metrics(labeled_window, None, ModelSpec(task=task, positive_label=spec.positive_label))
        m.performance, m.window_labeled = on_labeled.performance, on_labeled.window_labeled
    return m
