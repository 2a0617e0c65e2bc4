"""Performance of a labeled window, each metric exactly as ``sklearn.metrics`` with default args.

A value that the oracle leaves undefined (it raises, or returns NaN/inf) is *absent* from the
returned dict, never NaN. The rules, all those of scikit-learn 1.x:

- empty input: every metric absent;
- binary (0/1 arrays, ``pos_label=1``): precision / recall / f1 are 0.0 when their denominator
  is 0 (sklearn's ``zero_division="warn"`` value);
- ``roc_auc`` absent unless y_true holds both classes; ``log_loss`` absent unless y_true holds
  both classes (sklearn raises without ``labels=``); ``log_loss`` / ``brier`` absent when a
  probability is outside [0, 1] (sklearn raises; roc_auc only ranks, any finite score is fine);
- multi-class: macro average over the sorted union of true and predicted labels;
- regression: ``r2`` absent with fewer than 2 rows; when y_true is constant it is 1.0 for a
  perfect prediction else 0.0 (sklearn's ``force_finite=True``).

Intervals (``ml_performance_interval{metric, bound}``): the 95 % Wilson score interval of
accuracy (any classification) and, for binary models, of precision and recall, each a
proportion of its own denominator (labeled rows, predicted positives, actual positives), as
``statsmodels.stats.proportion.proportion_confint(count, nobs, alpha=0.05, method="wilson")``;
absent when the denominator is 0. With z = Phi^-1(0.975), p = count / nobs (clipped to [0, 1])::

    center = (p + z^2 / (2 nobs)) / (1 + z^2 / nobs)
    half   = z sqrt(p (1 - p) / nobs + z^2 / (4 nobs^2)) / (1 + z^2 / nobs)

An alert that compares the upper bound with a minimum fires only when even the optimistic end of
the interval is below it: 40 labels at accuracy 0.8 give [0.65, 0.90].

Example::

    import numpy as np
    from otel_ml_processor.stats.performance import binary_performance

    m = binary_performance(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([0.2, 0.9, 0.4]))
    m["accuracy"], m["roc_auc"]   # (0.666..., 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import stats

from otel_ml import semconv as sc

__all__ = ["binary_performance", "multiclass_performance", "regression_performance",
           "binary_counts", "roc_auc", "wilson_interval", "binary_intervals", "accuracy_interval",
           "LOWER", "UPPER"]

LOWER, UPPER = sc.BOUND_LOWER, sc.BOUND_UPPER
#: Two-sided level of the intervals (95 %).
INTERVAL_ALPHA = 0.05
_Z = float(stats.norm.isf(INTERVAL_ALPHA / 2.0))


def _finite(out: Mapping[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def binary_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of 0/1 arrays."""
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return tp, fp, fn, t.size - tp - fp - fn


def _ratio(num: float, den: float) -> float:
    # sklearn's zero_division="warn" yields 0.0
    return num / den if den else 0.0


def roc_auc(y_true: np.ndarray, p_pos: np.ndarray) -> float | None:
    """``sklearn.metrics.roc_auc_score(y_true, p_pos)``; None with one class.

    Computed as the Mann-Whitney U statistic with mid-ranks for ties, which is the area under
    sklearn's trapezoidal ROC curve.
    """
    t = np.asarray(y_true, dtype=bool)
    n_pos = int(np.count_nonzero(t))
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    s = np.asarray(p_pos, dtype=float)
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    # mid-ranks (1-based) of tied runs
    boundaries = np.flatnonzero(np.diff(ss)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [ss.size]))
    mid = (starts + ends + 1) / 2.0
    ranks_sorted = np.repeat(mid, ends - starts)
    pos_rank_sum = float(ranks_sorted[t[order]].sum())
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _prob_ok(p: np.ndarray) -> bool:
    return p.size > 0 and bool(np.all(np.isfinite(p))) and p.min() >= 0.0 and p.max() <= 1.0


def binary_performance(y_true: np.ndarray, y_pred: np.ndarray,
                       p_pos: np.ndarray | None = None) -> dict[str, float]:
    """accuracy, precision, recall, f1 (and roc_auc, log_loss, brier from ``p_pos``).

    ``y_true`` and ``y_pred`` are 0/1 (1 = positive label); ``p_pos`` is P(positive) per row of
    the same rows. Oracles: ``sklearn.metrics.accuracy_score``, ``precision_score``,
    ``recall_score``, ``f1_score`` (``pos_label=1``), ``roc_auc_score``, ``log_loss``,
    ``brier_score_loss``.
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    if t.size == 0:
        return {}
    tp, fp, fn, tn = binary_counts(t, p)
    out: dict[str, float | None] = {   # None: undefined (e.g. roc_auc with one class), left out
        sc.PERF_ACCURACY: (tp + tn) / t.size,
        sc.PERF_PRECISION: _ratio(tp, tp + fp),
        sc.PERF_RECALL: _ratio(tp, tp + fn),
        sc.PERF_F1: _ratio(2 * tp, 2 * tp + fp + fn),
    }
    if p_pos is not None:
        q = np.asarray(p_pos, dtype=float)
        if np.all(np.isfinite(q)):
            # sklearn ranks any finite scores for roc_auc, but rejects values outside [0, 1]
            # for the probability losses
            out[sc.PERF_ROC_AUC] = roc_auc(t, q)
        if _prob_ok(q):
            y = t.astype(float)
            out[sc.PERF_BRIER] = float(np.mean((y - q) ** 2))
            if 0 < np.count_nonzero(t) < t.size:
                # sklearn stacks [1 - p, p] and clips each column to [eps, 1 - eps]
                eps = np.finfo(float).eps
                p1 = np.clip(q, eps, 1 - eps)
                p0 = np.clip(1 - q, eps, 1 - eps)
                out[sc.PERF_LOG_LOSS] = float(np.mean(-np.where(t, np.log(p1), np.log(p0))))
    return _finite(out)


def multiclass_performance(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """accuracy and macro precision / recall / f1 on label strings.

    Oracles: ``sklearn.metrics.accuracy_score`` and ``precision_score`` / ``recall_score`` /
    ``f1_score`` with ``average="macro"``: the unweighted mean over the sorted union of true and
    predicted labels of each label's one-vs-rest value (0.0 where a denominator is 0).
    """
    t = np.asarray(y_true, dtype=object)
    p = np.asarray(y_pred, dtype=object)
    if t.size == 0:
        return {}
    labels, inv = np.unique(np.concatenate((t, p)).astype(str), return_inverse=True)
    ti, pi = inv[: t.size], inv[t.size:]
    k = labels.size
    hit = ti == pi
    tp = np.bincount(ti[hit], minlength=k).astype(float)
    pred_n = np.bincount(pi, minlength=k).astype(float)
    true_n = np.bincount(ti, minlength=k).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(pred_n > 0, tp / pred_n, 0.0)
        rec = np.where(true_n > 0, tp / true_n, 0.0)
        den = pred_n + true_n
        f1 = np.where(den > 0, 2 * tp / den, 0.0)
    return _finite({
        sc.PERF_ACCURACY: float(np.count_nonzero(hit)) / t.size,
        sc.PERF_PRECISION: float(np.mean(prec)),
        sc.PERF_RECALL: float(np.mean(rec)),
        sc.PERF_F1: float(np.mean(f1)),
    })


def regression_performance(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """mae, rmse, r2 as ``sklearn.metrics.mean_absolute_error``, ``root_mean_squared_error``,
    ``r2_score`` (rows with a non-finite value must be removed by the caller)."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.size == 0:
        return {}
    err = t - p
    out: dict[str, float] = {
        sc.PERF_MAE: float(np.mean(np.abs(err))),
        sc.PERF_RMSE: float(np.sqrt(np.mean(err ** 2))),
    }
    if t.size >= 2:
        num = float(np.sum(err ** 2))
        den = float(np.sum((t - np.mean(t)) ** 2))
        if den != 0.0:
            out[sc.PERF_R2] = 1.0 - num / den
        else:
            out[sc.PERF_R2] = 1.0 if num == 0.0 else 0.0
    return _finite(out)


def wilson_interval(count: int, nobs: int) -> tuple[float, float] | None:
    """95 % Wilson score interval of ``count`` / ``nobs`` (statsmodels' expression); None for nobs 0."""
    if nobs <= 0:
        return None
    q = count / nobs
    z2 = _Z * _Z
    denom = 1.0 + z2 / nobs
    center = (q + z2 / (2.0 * nobs)) / denom
    dist = _Z * np.sqrt(q * (1.0 - q) / nobs + z2 / (4.0 * nobs ** 2)) / denom
    # statsmodels clips to [0, 1] (rounding can put a bound a hair outside)
    return float(np.clip(center - dist, 0.0, 1.0)), float(np.clip(center + dist, 0.0, 1.0))


def _put(out: dict, metric: str, interval: tuple[float, float] | None) -> None:
    if interval is not None:
        out[(metric, LOWER)], out[(metric, UPPER)] = interval


def accuracy_interval(correct: int, n: int) -> dict[tuple[str, str], float]:
    """{(accuracy, lower|upper): bound}; {} for no rows."""
    out: dict = {}
    _put(out, sc.PERF_ACCURACY, wilson_interval(correct, n))
    return out


def binary_intervals(y_true: np.ndarray, y_pred: np.ndarray) -> dict[tuple[str, str], float]:
    """{(metric, bound): value} for accuracy, precision and recall of 0/1 arrays."""
    tp, fp, fn, tn = binary_counts(y_true, y_pred)
    out = accuracy_interval(tp + tn, tp + fp + fn + tn)
    _put(out, sc.PERF_PRECISION, wilson_interval(tp, tp + fp))
    _put(out, sc.PERF_RECALL, wilson_interval(tp, tp + fn))
    return out
