"""The per-model metrics engine: one :class:`ModelMetrics` from a window and its prepared reference.

:func:`compute_model_metrics` applies DESIGN.md's "Statistics" to one (model, version):
performance and its Wilson intervals on the labeled window, the label-free estimates (CBPE,
DLE) with NannyML's sampling-error intervals, OOD, drift per
feature / of the prediction / multivariate with their decisions, fairness with p-values and
per-group numbers, data quality counts, cardinality caps. Every value is finite; what is
undefined is absent (see docs/metrics.md for each rule).

Row rules:

- the labeled window (``labeled``) holds the last ``window.size`` predictions that have a joined
  label, whether or not they are still in the window (the caller reads them from the database);
  without it, the rows of ``window`` that carry a label are used. Performance, its intervals,
  ``window_labeled``, equalized odds and the per-group accuracy / tpr / fpr use it; drift, OOD,
  CBPE, selection rates and demographic parity use ``window``;
- labeled row = its label is not None (regression: a finite number);
- classification metrics use labeled rows that have a predicted label; probability metrics
  (roc_auc, log_loss, brier) the subset of those with a known P(positive);
- regression metrics use labeled rows with a finite predicted value;
- every feature value is read as the feature's type (the reference's: number, boolean or text,
  :mod:`otel_ml_processor.clean.values`); a missing, NaN / infinite or unreadable value is left
  out of that feature's drift and OOD (counted in ``data_quality`` as ``missing``, ``nan``,
  ``type_mismatch``); rows missing a numeric feature are left out of the multivariate drift;
- fairness (binary models only) uses rows with a predicted label and the attribute; groups past
  ``max_groups_per_attribute`` (fewest rows first) are folded into ``__other__``.

Missing values: every input feature also runs the companion test ``missing`` (its window's
missing fraction, ``feature_missing_ratio``, against its reference's, Fisher exact; a reference
feature that no window row sent is missing in every row), whatever its ``method``.

Decisions: p-value tests on the Benjamini-Hochberg q-values of the model version's input
features, the missing-value tests in the same family (the prediction on its own p-value),
distance tests and the multivariate score against max(threshold, noise floor)
(:mod:`otel_ml_processor.stats.decisions`).

Example::

    from otel_ml_processor.compute.engine import ModelSpec, compute_model_metrics

    m = compute_model_metrics(window, prepared_reference, ModelSpec(positive_label="1"))
    m.performance["accuracy"], [d for d in m.drift if d.detected]
    m.performance_interval[("accuracy", "upper")], {d.feature: d.threshold for d in m.drift}
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.clean.values import NUMBER, read_column, read_value, TEXT
from otel_ml_processor.compute.histograms import feature_histograms
from otel_ml_processor.compute.reference import PreparedFeature, PreparedReference, as_numbers, positive_probability
from otel_ml_processor.compute.window import QUALITY_MISSING, QUALITY_NAN, WindowData
from otel_ml_processor.stats import cbpe, fairness, performance, sampling_error
from otel_ml_processor.stats._codes import value_counts
from otel_ml_processor.stats.decisions import DEFAULT_ALPHA, bh_qvalues
from otel_ml_processor.stats.ood import DEFAULT_MARGIN, categorical_ood, numeric_ood, ood_ratio_floor, stable_ood_bound
from otel_ml_processor.stats.registry import FeatureWindow

__all__ = ["ModelSpec", "DriftResult", "ModelMetrics", "compute_model_metrics"]


@dataclass
class ModelSpec:
    """What the engine needs from the config (the service maps the YAML config to this)."""

    task: Optional[str] = None                 # None -> take WindowData.task
    positive_label: Optional[str] = None       # set -> binary classification
    window_size: int = 10000
    window_max_age: Optional[float] = None     # seconds
    drift_default_method: str = sc.METHOD_AUTO
    drift_default_threshold: Optional[float] = None   # None -> the method's default (p-value tests: drift_alpha)
    #: feature -> (method, threshold); also the keys "__prediction__" and "__multivariate__"
    drift_features: dict = field(default_factory=dict)
    drift_alpha: float = DEFAULT_ALPHA         # drift.alpha
    ood_margin: float = DEFAULT_MARGIN         # ood.margin
    fairness_attributes: tuple = ()
    fairness_min_group_size: int = 30
    max_features: int = 500
    max_groups_per_attribute: int = 50


@dataclass
class DriftResult:
    """One drift series. ``threshold`` is what is compared: the q-value threshold of a p-value
    test (detected when qvalue < threshold), the effective threshold max(threshold, noise floor)
    of a distance test or the multivariate score (detected when score >= threshold)."""

    feature: str
    method: str
    score: float
    pvalue: Optional[float]
    detected: bool
    qvalue: Optional[float] = None
    threshold: Optional[float] = None


@dataclass
class ModelMetrics:
    """One compute of one model version: plain values only (the exporter and the pages read it)."""

    window_predictions: int = 0
    window_labeled: int = 0
    #: labeled-window rows stored after the reference (all of them with a reference file): the
    #: labels the baseline comparison (MLPerformanceBelowBaseline) may rest on; set by the caller
    window_labeled_after_reference: Optional[int] = None
    #: rows of the reference so far (a file's rows; for first_n, the predictions collected towards
    #: it) and the rows it will have (the file's, or first_n); set by the caller
    reference_predictions: Optional[int] = None
    reference_target: Optional[int] = None
    performance: dict = field(default_factory=dict)            # metric -> value
    performance_interval: dict = field(default_factory=dict)   # (metric, "lower" | "upper") -> value
    estimated_performance: dict = field(default_factory=dict)  # metric -> value (CBPE, DLE)
    estimated_performance_interval: dict = field(default_factory=dict)  # (metric, bound) -> value
    ood_ratio: Optional[float] = None
    ood_ratio_floor: Optional[float] = None                    # what a stable window's ood_ratio stays under
    feature_ood_ratio: dict = field(default_factory=dict)      # feature -> fraction
    feature_missing_ratio: dict = field(default_factory=dict)  # feature -> missing fraction (method "missing")
    feature_missing_reference: dict = field(default_factory=dict)  # feature -> the reference's missing fraction (pages)
    drift: list = field(default_factory=list)                  # [DriftResult]
    fairness: dict = field(default_factory=dict)               # (attribute, metric) -> value
    fairness_pvalue: dict = field(default_factory=dict)        # (attribute, metric) -> p-value
    group_performance: dict = field(default_factory=dict)      # (attribute, group, metric) -> value
    group_predictions: dict = field(default_factory=dict)      # (attribute, group) -> rows
    data_quality: dict = field(default_factory=dict)           # (feature, issue) -> rows in window
    cardinality_limited: dict = field(default_factory=dict)    # kind -> count folded this cycle
    feature_histograms: dict = field(default_factory=dict)     # feature -> FeatureHistogram (model pages)


def _present(arr: np.ndarray) -> np.ndarray:
    """Mask of the values that are not None (object arrays; an elementwise C loop)."""
    # numpy's stubs take no None operand, though object arrays compare with it elementwise
    return np.asarray(np.not_equal(arr, None), dtype=np.bool_).reshape(len(arr))  # type: ignore[call-overload]


def _labels_str(label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The labels of ``mask`` as class strings (a label sent as a number is written as text)."""
    labels = label[mask]
    items = labels.tolist()
    if set(map(type, items)) <= {str}:
        return labels
    return np.array([read_value(TEXT, v) for v in items], dtype=object)


def _quality(window: WindowData, name: str, values: np.ndarray) -> tuple[int, int]:
    q = window.feature_quality.get(name)
    if q is not None:
        return int(np.count_nonzero(q == QUALITY_MISSING)), int(np.count_nonzero(q == QUALITY_NAN))
    if values.dtype == object:
        return int(len(values) - np.count_nonzero(_present(values))), 0
    nan = np.isnan(values)
    return int(np.count_nonzero(nan)), int(np.count_nonzero(~nan & ~np.isfinite(values)))


@dataclass
class _Tested:
    """A feature's score before the model-wide decision."""

    feature: str
    pf: PreparedFeature
    score: float
    pvalue: Optional[float]
    n_window: int


def _score(pf: PreparedFeature, cur: FeatureWindow, feature: str) -> Optional[_Tested]:
    if pf.test.companion:
        # a companion (missing) scores counts: it needs window rows, not present values
        if cur.rows == 0 or pf.state is None:
            return None
    elif pf.ref.n == 0 or pf.state is None or cur.n == 0:
        return None
    res = pf.test.compute(pf.state, cur)
    if not math.isfinite(res.score) or (res.pvalue is not None and not math.isfinite(res.pvalue)):
        return None
    if not pf.is_pvalue:
        pf.effective_threshold(cur.n)   # the floor is computed here, on the feature's thread
    return _Tested(feature, pf, float(res.score), None if res.pvalue is None else float(res.pvalue), cur.n)


def _pvalue(t: _Tested) -> float:
    assert t.pvalue is not None, f"{t.pf.method} is a p-value test: it gives a p-value"
    return t.pvalue


def _decide(tested: list[_Tested], prediction: Optional[_Tested]) -> list[DriftResult]:
    """BH across the input features' p-values (the prediction on its own); distances against
    their effective thresholds."""
    out: list[DriftResult] = []
    # one family: every p-value test of every input feature, the missing-value tests included
    pv = [t for t in tested if t.pf.is_pvalue]
    qs = dict(zip(((t.feature, t.pf.method) for t in pv), bh_qvalues([_pvalue(t) for t in pv]).tolist()))
    for t in [*tested, *([prediction] if prediction is not None else [])]:
        if t.pf.is_pvalue:
            q = qs.get((t.feature, t.pf.method), _pvalue(t)) if t is not prediction else _pvalue(t)
            out.append(DriftResult(t.feature, t.pf.method, t.score, t.pvalue, q < t.pf.threshold, q, t.pf.threshold))
        else:
            th = t.pf.effective_threshold(t.n_window)
            out.append(DriftResult(t.feature, t.pf.method, t.score, None, t.score >= th, None, th))
    return out


def _group_keep(groups: list, limit: int) -> Optional[set]:
    """The groups kept under the cap (most rows first, ties by name), None when none is folded."""
    names, counts = value_counts(np.concatenate([g for g in groups if g.size] or [np.zeros(0, dtype=object)]))
    if names.size <= limit:
        return None
    order = np.lexsort((names, -counts))
    return set(names[order[:limit]].tolist())


def _fold(groups: np.ndarray, keep: Optional[set]) -> np.ndarray:
    if keep is None:
        return groups
    return np.array([g if g in keep else sc.OVERFLOW_LABEL_VALUE for g in groups.tolist()], dtype=object)


@dataclass
class _Labeled:
    """The labeled rows the performance and per-group numbers use (see the module doc)."""

    data: WindowData
    rows: np.ndarray           # mask over ``data``: labeled (and, for classification, a label present)


def _labeled_rows(window: WindowData, labeled: Optional[WindowData], task: str) -> _Labeled:
    data = window if labeled is None else labeled
    if task == sc.TASK_REGRESSION:
        rows = np.isfinite(as_numbers(data.label))
    else:
        rows = _present(data.label)
    return _Labeled(data, rows)


def _performance(m: ModelMetrics, lab: _Labeled, task: str, binary: bool, pos: Optional[str]) -> None:
    d = lab.data
    if task == sc.TASK_REGRESSION:
        y_true = as_numbers(d.label)
        use = lab.rows & np.isfinite(d.output_value)
        m.performance = performance.regression_performance(y_true[use], d.output_value[use])
        return
    use = lab.rows & _present(d.output_label)
    y_true_s = _labels_str(d.label, use)
    y_pred_s = d.output_label[use].astype(str).astype(object)
    if binary and pos is not None:            # (binary: the positive label is set)
        pp = positive_probability(pos, d.output_label, d.score, d.probabilities)[use]
        t01 = (y_true_s == pos).astype(int)
        y01 = (y_pred_s == pos).astype(int)
        known = np.isfinite(pp)
        m.performance = performance.binary_performance(t01, y01)
        m.performance_interval = performance.binary_intervals(t01, y01)
        if np.any(known):
            probs = performance.binary_performance(t01[known], y01[known], pp[known])
            for k in (sc.PERF_ROC_AUC, sc.PERF_LOG_LOSS, sc.PERF_BRIER):
                if k in probs:
                    m.performance[k] = probs[k]
    else:
        m.performance = performance.multiclass_performance(y_true_s, y_pred_s)
        m.performance_interval = performance.accuracy_interval(int(np.count_nonzero(y_true_s == y_pred_s)),
                                                               int(y_true_s.size))


def compute_model_metrics(window: WindowData, ref: Optional[PreparedReference], spec: ModelSpec,
                          executor: Optional[Executor] = None,
                          labeled: Optional[WindowData] = None) -> ModelMetrics:
    """All metrics of one (model, version) window; ``ref`` None -> no drift, OOD or estimates.

    ``labeled``: the labeled window (every row has a joined label; it may hold predictions that
    left ``window``); None -> the rows of ``window`` that carry a label. ``executor`` (e.g. a
    ``ThreadPoolExecutor`` with one worker per core, owned by the caller) runs the per-feature
    OOD and drift work in parallel; results are the same without it.
    """
    task = spec.task or window.task
    n = len(window.prediction_ids)
    m = ModelMetrics(window_predictions=n)
    limited = {sc.KIND_FEATURE: 0, sc.KIND_GROUP: 0}
    binary = task == sc.TASK_CLASSIFICATION and spec.positive_label is not None
    pos = spec.positive_label

    # -- performance (labeled window) --------------------------------------------------------
    lab = _labeled_rows(window, labeled, task)
    _performance(m, lab, task, binary, pos)
    m.window_labeled = int(np.count_nonzero(lab.rows))

    # -- data quality (window features under the cap) ---------------------------------------------
    names = sorted(window.features)
    if ref is not None:
        # the reference's features first, in its order; others after
        names = list(ref.features) + [k for k in names if k not in ref.features]
    kept_names = names[: spec.max_features]
    cut = set(names[spec.max_features:])
    for name in kept_names:
        col = window.features.get(name)
        # a reference feature that no window row sent is missing in every row
        missing, nan = (n, 0) if col is None else _quality(window, name, col)
        if missing:
            m.data_quality[(name, sc.ISSUE_MISSING)] = missing
        if nan:
            m.data_quality[(name, sc.ISSUE_NAN)] = nan

    # -- OOD and drift --------------------------------------------------------------------------
    has_pred = _present(window.output_label)
    if ref is not None:
        cut.update(ref.dropped_features)
        kept = set(kept_names)
        work = [(name, pf, window.features.get(name)) for name, pf in ref.features.items() if name in kept]
        margin = spec.ood_margin

        def one_feature(item):
            # numpy releases the GIL in sort / searchsorted: features can run on a thread pool
            name, pf, col = item
            companions = ref.companions.get(name, ())
            if col is None:
                # a reference feature that no window row sent: missing in every row (fraction 1)
                cur = FeatureWindow(np.zeros(0), rows=n)
                return name, None, [_score(c, cur, name) for c in companions], 0
            values, bad = read_column(pf.value_type, col)
            mask = None
            if pf.ref.n:
                if pf.value_type == NUMBER:
                    mask = numeric_ood(values, pf.ref.min, pf.ref.max, margin)
                else:
                    mask = categorical_ood(values, pf.ref.category_set)
            # unreadable values are left out of the drift like missing ones, but counted apart
            cur = FeatureWindow.build(values, unreadable=int(np.count_nonzero(bad)))
            scored = [_score(pf, cur, name), *(_score(c, cur, name) for c in companions)]
            return name, mask, scored, int(np.count_nonzero(bad))

        results = list(executor.map(one_feature, work)) if executor is not None else [one_feature(w) for w in work]
        masks, tested, unseen = [], [], []
        for name, mask, scored, bad in results:
            if bad:
                m.data_quality[(name, sc.ISSUE_TYPE_MISMATCH)] = bad
            if mask is not None:
                masks.append(mask)
                unseen.append(ref.features[name].unseen)
                if n:
                    m.feature_ood_ratio[name] = float(np.count_nonzero(mask)) / n
            for t in scored:
                if t is None:
                    continue
                tested.append(t)
                if t.pf.method == sc.METHOD_MISSING:
                    m.feature_missing_ratio[name] = t.score
                    if t.pf.ref.rows:
                        m.feature_missing_reference[name] = t.pf.ref.missing / t.pf.ref.rows
        if n:
            anyood = np.zeros(n, dtype=bool)
            for mask in masks:
                anyood |= mask
            m.ood_ratio = float(np.count_nonzero(anyood)) / n
            # the OOD features of this window only (stats/ood.py, docs/metrics.md "OOD floor")
            m.ood_ratio_floor = ood_ratio_floor(n, stable_ood_bound(unseen, spec.drift_alpha), spec.drift_alpha)
        pred = None
        if ref.prediction is not None:
            pcol = window.output_value if task == sc.TASK_REGRESSION else window.output_label
            values, _ = read_column(ref.prediction.value_type, pcol)
            pred = _score(ref.prediction, FeatureWindow.build(values), sc.FEATURE_PREDICTION)
        m.drift = _decide(tested, pred)
        if ref.multivariate is not None and all(k in window.features for k in ref.multivariate_features) and n:
            x = np.stack([read_column(NUMBER, window.features[k])[0] for k in ref.multivariate_features])
            s, rows = ref.multivariate.score_and_rows(x)
            if s is not None:
                th = ref.multivariate_effective_threshold(rows)
                m.drift.append(DriftResult(sc.FEATURE_MULTIVARIATE, sc.METHOD_PCA_RECONSTRUCTION, s, None,
                                           s >= th, None, th))

        # -- label-free estimates: CBPE (binary, multi-class), DLE (regression) ----------------------
        if binary and n and pos is not None:
            p_all = positive_probability(pos, window.output_label, window.score, window.probabilities)
            ok = has_pred & np.isfinite(p_all) & (p_all >= 0) & (p_all <= 1)
            p = p_all[ok]
            if ref.calibrator is not None and p.size:
                p = ref.calibrator.transform(p)
            m.estimated_performance = cbpe.estimate(p, window.output_label[ok] == pos)
            coefficients = dict(ref.binary_coefficients)
            if sc.PERF_ACCURACY not in coefficients:    # a reference without labels: from the window
                right = np.where(window.output_label[ok] == pos, p, 1 - p)
                coefficients[sc.PERF_ACCURACY] = sampling_error.correctness_coefficient(right)
            for k, v in m.estimated_performance.items():
                iv = sampling_error.interval(v, coefficients.get(k), int(p.size))
                if iv is not None:
                    m.estimated_performance_interval[(k, sc.BOUND_LOWER)], \
                        m.estimated_performance_interval[(k, sc.BOUND_UPPER)] = iv
        elif ref.multiclass is not None and ref.multiclass.ready() is not None and n:
            mc = ref.multiclass.ready()
            assert mc is not None
            probs = np.column_stack([window.probabilities.get(c, np.full(n, np.nan)) for c in mc.classes])
            preds = np.full(n, None, dtype=object)
            preds[has_pred] = _labels_str(window.output_label, has_pred)
            est, est_rows = mc.estimate(probs, preds)
            m.estimated_performance = est
            fallback = None
            if sc.PERF_ACCURACY not in mc.coefficients:  # a reference without labels: from the window
                fallback = sampling_error.correctness_coefficient(mc.correct_probability(probs, preds))
            m.estimated_performance_interval = mc.intervals(est, est_rows, fallback)
        elif ref.dle is not None and (dle := ref.dle.ready()) is not None and n:
            feats = {name: read_column(pf.value_type, window.features[name])[0]
                     for name, pf in ref.features.items() if name in window.features}
            est_r, rows_r = dle.estimate(feats, window.output_value)
            m.estimated_performance = est_r
            m.estimated_performance_interval = dle.intervals(est_r, rows_r)

    # -- fairness and groups ----------------------------------------------------------------------
    ld = lab.data
    l_has_pred = _present(ld.output_label) if labeled is not None else has_pred
    for attr in spec.fairness_attributes:
        seg = window.segments.get(attr)
        lseg = ld.segments.get(attr)
        if seg is None and lseg is None:
            continue
        seg = np.full(n, None, dtype=object) if seg is None else seg
        lseg = np.full(len(ld.prediction_ids), None, dtype=object) if lseg is None else lseg
        has_attr, l_has_attr = _present(seg), _present(lseg)
        seen = [seg[has_attr], lseg[l_has_attr & lab.rows]]
        keep = _group_keep(seen, spec.max_groups_per_attribute)
        if keep is not None:
            limited[sc.KIND_GROUP] += len(set().union(*(set(g.tolist()) for g in seen)) - keep)
        groups_all = _fold(seg[has_attr], keep)
        g_names, g_counts = value_counts(groups_all)
        for g, c in zip(g_names.tolist(), g_counts.tolist()):
            m.group_predictions[(attr, g)] = int(c)
        if not binary:
            continue
        groups = np.full(n, None, dtype=object)
        groups[has_attr] = groups_all
        rows = has_attr & has_pred
        y_pred = (window.output_label[rows] == pos).astype(int)
        lrows = l_has_attr & l_has_pred & lab.rows
        l_true = (_labels_str(ld.label, lrows) == pos).astype(int)
        l_pred = (ld.output_label[lrows] == pos).astype(int)
        l_groups = _fold(lseg[lrows], keep)
        fair = fairness.fairness_metrics(y_pred, groups[rows], l_true, l_pred, l_groups,
                                         spec.fairness_min_group_size)
        for metric, v in fair.metrics.items():
            m.fairness[(attr, metric)] = v
        for metric, v in fair.pvalues.items():
            m.fairness_pvalue[(attr, metric)] = v
        for (g, metric), v in fair.groups.items():
            m.group_performance[(attr, g, metric)] = v

    # -- per-feature histograms for the model pages (compute/histograms.py) ------------------------
    if ref is not None:
        m.feature_histograms = feature_histograms(window, ref, spec, kept_names)

    limited[sc.KIND_FEATURE] = len(cut)
    m.cardinality_limited = {k: v for k, v in limited.items() if v}
    return m
