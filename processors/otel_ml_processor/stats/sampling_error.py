"""NannyML 0.13's sampling error of a label-free estimate, and the interval it gives.

Every one of NannyML's sampling errors has the form c / √n: a coefficient ``c`` measured once on
the reference (with its labels) divided by the root of the window's rows n. The interval is
estimate ± 3 c / √n (NannyML's ``SAMPLING_ERROR_RANGE``), clipped to [0, 1] for classification
metrics and to [0, ∞) for mae / rmse, as NannyML clips its confidence band. The coefficients,
with y, ŷ the reference's 0/1 labels and predictions (binary; one-vs-rest per class k for
multi-class) and std / var with ddof 0:

- binary accuracy: std(1[y = ŷ]);
- binary precision, recall, f1, roc_auc: std(s) / √f, with s and f: precision — s over the
  predicted positives, 1 when right, 0 when wrong, f = their share; recall — the same over the
  actual positives; f1 — over TP, FN and FP rows (1, 0, 0) times len / (TP + (FN + FP) / 2),
  f = their share; roc_auc — NannyML's rank statistic (:func:`_auroc_component`), f = positive share;
- multi-class accuracy: std(1[y = ŷ]); precision, recall, f1: √(Σ_k var(s_k) / f_k) / K with the
  per-class s_k, f_k above (f1 without the factor); roc_auc: the same with the rank statistic, × 1.2;
- regression mae: std(|y - ŷ|); rmse: std((y - ŷ)²) / (2 √mean((y - ŷ)²)) (the delta method).

A classification reference without labels (a ``first_n`` reference taken before its labels came)
has no such coefficients: accuracy's interval then comes from the window alone
(:func:`correctness_coefficient`), the other metrics have none.

Valid as NannyML's is: for a window drawn from the reference's distribution, it is the spread of
the realized metric; it says nothing of the estimator's own bias under concept drift.

Example::

    from otel_ml_processor.stats.sampling_error import binary_coefficients, interval

    c = binary_coefficients(y_true01, y_pred01, p_uncalibrated)
    interval(0.83, c["accuracy"], n=500)     # (lower, upper)
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from otel_ml import semconv as sc

__all__ = ["SAMPLING_ERROR_RANGE", "interval", "binary_coefficients", "multiclass_coefficients",
           "regression_coefficients", "correctness_coefficient"]

#: NannyML's band: ± this many standard errors.
SAMPLING_ERROR_RANGE = 3


def interval(estimate: float, coefficient: Optional[float], n: int, *, upper_limit: Optional[float] = 1.0
             ) -> Optional[tuple[float, float]]:
    """(lower, upper) = estimate ∓ 3 c / √n clipped to [0, upper_limit]; None when undefined."""
    if coefficient is None or n <= 0 or not math.isfinite(coefficient) or not math.isfinite(estimate):
        return None
    half = SAMPLING_ERROR_RANGE * coefficient / math.sqrt(n)
    upper = estimate + half
    if upper_limit is not None:
        upper = min(upper_limit, upper)
    return max(0.0, estimate - half), upper


def correctness_coefficient(q: np.ndarray) -> Optional[float]:
    """c of accuracy from the window alone, for a reference without labels (NannyML has none then):
    √mean(q (1 − q)), q = each row's estimated probability of being right. c / √n is then the exact
    standard error of the realized accuracy of those n rows given their (calibrated) probabilities
    (a Poisson-binomial count), which NannyML's reference-based one approximates."""
    q = np.asarray(q, dtype=float)
    return _finite(math.sqrt(float(np.mean(q * (1 - q))))) if q.size else None


def _finite(v: float) -> Optional[float]:
    v = float(v)
    return v if math.isfinite(v) else None


def _auroc_component(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, float]:
    """NannyML's rank statistic of one (0/1 label, score) set: (its array, the positive share)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if np.mean(y) > 0.5:
        y, p = np.abs(y - 1), 1 - p
    order = np.argsort(p)   # NannyML's (unstable) sort, on the same array: the same order
    y = y[order]
    positive_ranks = y * np.arange(len(p))
    indexes = np.unique(positive_ranks)[1:]
    ser = indexes - np.arange(len(indexes))
    n_pos = float(np.sum(y))
    with np.errstate(divide="ignore", invalid="ignore"):
        return ser / (len(y) - n_pos), n_pos / len(y)


def _subset(values: np.ndarray) -> float:
    return float(np.std(values)) if values.size else math.nan


def _binary_parts(y: np.ndarray, yp: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """metric -> (observation-level array, fraction) of precision / recall / f1 for 0/1 arrays."""
    n = len(y)
    tp, fp, fn = (y == 1) & (yp == 1), (y == 0) & (yp == 1), (y == 1) & (yp == 0)
    prec = np.concatenate([np.ones(np.count_nonzero(tp)), np.zeros(np.count_nonzero(fp))])
    rec = np.concatenate([np.ones(np.count_nonzero(tp)), np.zeros(np.count_nonzero(fn))])
    f1 = np.concatenate([np.ones(np.count_nonzero(tp)), np.zeros(np.count_nonzero(fn) + np.count_nonzero(fp))])
    return {sc.PERF_PRECISION: (prec, float(np.sum(yp)) / n), sc.PERF_RECALL: (rec, float(np.sum(y)) / n),
            sc.PERF_F1: (f1, f1.size / n)}


def binary_coefficients(y_true: np.ndarray, y_pred: np.ndarray, p_uncalibrated: Optional[np.ndarray] = None
                        ) -> dict[str, float]:
    """metric -> c of a binary model's reference (0/1 labels, 0/1 predictions, uncalibrated
    P(positive) for roc_auc); undefined coefficients are left out."""
    y = np.asarray(y_true).astype(int)
    yp = np.asarray(y_pred).astype(int)
    if y.size == 0:
        return {}
    out: dict[str, Optional[float]] = {sc.PERF_ACCURACY: _finite(np.std((y == yp).astype(int)))}
    for metric, (obs, frac) in _binary_parts(y, yp).items():
        if metric == sc.PERF_F1 and obs.size:
            ntp = float(np.count_nonzero((y == 1) & (yp == 1)))
            obs = obs * (obs.size / ((obs.size - ntp) * 0.5 + ntp))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[metric] = _finite(_subset(obs) / math.sqrt(frac)) if frac > 0 else None
    if p_uncalibrated is not None and np.all(np.isfinite(p_uncalibrated)) and 0 < y.sum() < y.size:
        ser, frac = _auroc_component(y, p_uncalibrated)
        out[sc.PERF_ROC_AUC] = _finite(_subset(ser) / math.sqrt(frac))
    return {k: v for k, v in out.items() if v is not None}


def _spread(parts: list[tuple[float, float]], factor: float = 1.0) -> Optional[float]:
    """√(Σ var_k / f_k) / K (NannyML's ``_standard_deviation_of_variances``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = math.sqrt(sum(var / f if f > 0 else math.inf for var, f in parts)) / len(parts) * factor
    return _finite(v)


def multiclass_coefficients(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str],
                            p_uncalibrated: Optional[np.ndarray] = None) -> dict[str, float]:
    """metric -> c of a multi-class reference: label and predicted label strings, ``classes``
    sorted, ``p_uncalibrated`` (rows × classes) for roc_auc."""
    y = np.asarray(y_true, dtype=object)
    yp = np.asarray(y_pred, dtype=object)
    if y.size == 0:
        return {}
    out: dict[str, Optional[float]] = {sc.PERF_ACCURACY: _finite(np.std((y == yp).astype(int)))}
    # NannyML binarizes with the classes seen in the reference's labels (LabelBinarizer)
    seen = sorted(set(y.tolist()))
    parts: dict[str, list[tuple[float, float]]] = {sc.PERF_PRECISION: [], sc.PERF_RECALL: [], sc.PERF_F1: []}
    for cls in seen:
        yk, ypk = (y == cls).astype(int), (yp == cls).astype(int)
        for metric, (obs, frac) in _binary_parts(yk, ypk).items():
            parts[metric].append((float(np.var(obs)) if obs.size else math.nan, frac))
    for metric, ps in parts.items():
        out[metric] = _spread(ps)
    if p_uncalibrated is not None and set(seen) == set(classes):
        comps = []
        for k, cls in enumerate(classes):
            ser, frac = _auroc_component((y == cls).astype(int), p_uncalibrated[:, k])
            comps.append((float(np.var(ser)) if ser.size else math.nan, frac))
        out[sc.PERF_ROC_AUC] = _spread(comps, 1.2)
    return {k: v for k, v in out.items() if v is not None}


def regression_coefficients(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """metric -> c of a regression reference (finite labels and predictions)."""
    y = np.asarray(y_true, dtype=float)
    yp = np.asarray(y_pred, dtype=float)
    if y.size == 0:
        return {}
    sq = (y - yp) ** 2
    out = {sc.PERF_MAE: _finite(np.std(np.abs(y - yp)))}
    mean_sq = float(np.mean(sq))
    out[sc.PERF_RMSE] = _finite(float(np.std(sq)) / (2 * math.sqrt(mean_sq))) if mean_sq > 0 else None
    return {k: v for k, v in out.items() if v is not None}
