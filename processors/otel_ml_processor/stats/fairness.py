"""Fairness of a binary model per segment attribute (fairlearn's definitions), with p-values.

Inputs are 0/1 predictions and the group of each row (str; rows without the attribute are left
out by the caller): the window's rows for the demographic-parity metrics and the selection
rates, the labeled window's rows (with their 0/1 truth) for equalized odds and the per-group
accuracy, tpr and fpr. A group is left out of a metric unless it has ``min_group_size`` rows
among the rows that metric uses:

- demographic_parity_difference = max - min of the groups' selection rates (mean of y_pred):
  ``fairlearn.metrics.demographic_parity_difference``; disparate_impact_ratio = min / max:
  ``fairlearn.metrics.demographic_parity_ratio`` (absent when max = 0: 0/0). Rows: the window.
- equalized_odds_difference = max(TPR difference, FPR difference) between the groups with
  ``min_group_size`` labeled rows with y_true = 1 *and* as many with y_true = 0 (with fewer, a
  group's TPR or FPR is a ratio of a handful of rows): ``fairlearn.metrics.equalized_odds_difference``
  on those groups' labeled rows.
- per group: selection_rate (window rows); accuracy (labeled rows), tpr (labeled rows with
  y_true = 1), fpr (labeled rows with y_true = 0), each for groups with ``min_group_size`` of
  the rows it divides by.

P-values (``ml_fairness_pvalue``): is the gap more than chance? For the two demographic-parity
metrics, the p-value of ``scipy.stats.chi2_contingency(table, correction=False)`` on the groups x
(y_pred = 1, y_pred = 0) counts of the groups the metric uses; for equalized_odds_difference,
min(1, 2 min(p1, p0)) (Bonferroni over the two halves) with the same test on the labeled rows
with y_true = 1 (p1) and with y_true = 0 (p0). A table with an all-zero row or column (e.g.
nothing predicted positive) gives p = 1 (no gap to explain; scipy raises there); a table of one
group gives p = 1 (scipy: dof 0); the p-value is absent only when its metric has no group.

Example::

    import numpy as np
    from otel_ml_processor.stats.fairness import demographic_parity, independence_pvalue

    g = np.array(["a", "a", "b", "b"], dtype=object)
    demographic_parity(np.array([1, 0, 1, 1]), g, min_group_size=1)   # (0.5, 0.5)
    independence_pvalue(np.array([[30, 70], [50, 50]]))               # 0.0039
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from otel_ml import semconv as sc
from otel_ml_processor.stats._codes import factorize

__all__ = ["demographic_parity", "equalized_odds", "group_rates", "selection_rates",
           "independence_pvalue", "fairness_metrics", "Fairness"]


def _codes(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return factorize(np.asarray(groups, dtype=object))


def _counts(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group names, rows per group, rows with y = 1 per group)."""
    names, inv = _codes(groups)
    n = np.bincount(inv, minlength=names.size)
    ones = np.bincount(inv, weights=np.asarray(y, dtype=float), minlength=names.size).astype(np.int64)
    return names, n, ones


def independence_pvalue(table: np.ndarray) -> float | None:
    """p-value of ``scipy.stats.chi2_contingency(table, correction=False)`` on a groups x 2 table;
    1.0 for an all-zero row or column or a single group; None for a table without rows."""
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or t.shape[0] == 0:
        return None
    if t.shape[0] == 1 or np.any(t.sum(axis=1) == 0) or np.any(t.sum(axis=0) == 0):
        return 1.0
    expected = np.outer(t.sum(axis=1), t.sum(axis=0)) / t.sum()
    stat = float(np.sum((t - expected) ** 2 / expected))
    dof = (t.shape[0] - 1) * (t.shape[1] - 1)
    return float(special.chdtrc(dof, stat))   # = scipy.stats.chi2.sf(stat, dof)


def selection_rates(y_pred: np.ndarray, groups: np.ndarray, min_group_size: int) -> dict[str, float]:
    """Group -> mean of y_pred, for groups with at least ``min_group_size`` rows."""
    if len(y_pred) == 0:
        return {}
    names, n, pos = _counts(y_pred, groups)
    return {str(g): float(pos[i] / n[i]) for i, g in enumerate(names) if n[i] >= min_group_size and n[i] > 0}


def demographic_parity(y_pred: np.ndarray, groups: np.ndarray,
                       min_group_size: int) -> tuple[float | None, float | None]:
    """(difference, ratio) of the groups' selection rates; None where undefined."""
    rates = list(selection_rates(y_pred, groups, min_group_size).values())
    if not rates:
        return None, None
    hi, lo = max(rates), min(rates)
    ratio = lo / hi if hi > 0 else None  # fairlearn: 0/0 -> NaN
    return hi - lo, ratio


def demographic_parity_pvalue(y_pred: np.ndarray, groups: np.ndarray, min_group_size: int) -> float | None:
    """Chi-squared p-value of the groups x (predicted 1, predicted 0) table of the used groups."""
    if len(y_pred) == 0:
        return None
    names, n, pos = _counts(y_pred, groups)
    use = (n >= min_group_size) & (n > 0)
    return independence_pvalue(np.column_stack((pos[use], n[use] - pos[use])))


def group_rates(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                min_group_size: int) -> dict[str, dict[str, float]]:
    """Group -> {accuracy, tpr, fpr} on labeled rows, each for groups with ``min_group_size``
    rows of its denominator (labeled rows, rows with y_true = 1, rows with y_true = 0)."""
    if len(y_true) == 0:
        return {}
    names, inv = _codes(groups)
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    k = names.size
    n = np.bincount(inv, minlength=k)
    tp = np.bincount(inv[t & p], minlength=k)
    fn = np.bincount(inv[t & ~p], minlength=k)
    fp = np.bincount(inv[~t & p], minlength=k)
    tn = n - tp - fn - fp
    floor = max(min_group_size, 1)
    out: dict[str, dict[str, float]] = {}
    for i, g in enumerate(names):
        rates = {}
        if n[i] >= floor:
            rates[sc.GROUP_ACCURACY] = float((tp[i] + tn[i]) / n[i])
        if tp[i] + fn[i] >= floor:
            rates[sc.GROUP_TPR] = float(tp[i] / (tp[i] + fn[i]))
        if fp[i] + tn[i] >= floor:
            rates[sc.GROUP_FPR] = float(fp[i] / (fp[i] + tn[i]))
        if rates:
            out[str(g)] = rates
    return out


def equalized_odds(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                   min_group_size: int) -> tuple[float | None, float | None]:
    """(equalized_odds_difference, its p-value) over the groups with ``min_group_size`` labeled
    rows of each class; (None, None) when no group qualifies."""
    if len(y_true) == 0:
        return None, None
    names, inv = _codes(groups)
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    k = names.size
    pos = np.bincount(inv[t], minlength=k)
    neg = np.bincount(inv[~t], minlength=k)
    tp = np.bincount(inv[t & p], minlength=k)
    fp = np.bincount(inv[~t & p], minlength=k)
    use = (pos >= max(min_group_size, 1)) & (neg >= max(min_group_size, 1))
    if not np.any(use):
        return None, None
    tpr = tp[use] / pos[use]
    fpr = fp[use] / neg[use]
    diff = max(float(tpr.max() - tpr.min()), float(fpr.max() - fpr.min()))
    p1 = independence_pvalue(np.column_stack((tp[use], pos[use] - tp[use])))
    p0 = independence_pvalue(np.column_stack((fp[use], neg[use] - fp[use])))
    halves = [1.0 if v is None else v for v in (p1, p0)]
    pvalue = None if p1 is None and p0 is None else min(1.0, 2.0 * min(halves))
    return diff, pvalue


@dataclass
class Fairness:
    """Everything of one attribute: {metric: value}, {metric: p-value}, {(group, metric): value}."""

    metrics: dict = field(default_factory=dict)
    pvalues: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)


def fairness_metrics(y_pred: np.ndarray, groups: np.ndarray, labeled_true: np.ndarray,
                     labeled_pred: np.ndarray, labeled_groups: np.ndarray, min_group_size: int) -> Fairness:
    """All fairness numbers of one attribute.

    ``y_pred`` / ``groups``: the window's rows that have the attribute and a predicted label;
    ``labeled_true`` / ``labeled_pred`` / ``labeled_groups``: the labeled window's rows that have
    the attribute and a predicted label (0/1 arrays and group names).
    """
    out = Fairness()
    diff, ratio = demographic_parity(y_pred, groups, min_group_size)
    dp_p = demographic_parity_pvalue(y_pred, groups, min_group_size)
    for name, v in ((sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE, diff), (sc.FAIR_DISPARATE_IMPACT_RATIO, ratio)):
        if v is not None and math.isfinite(v):
            out.metrics[name] = float(v)
            if dp_p is not None:
                out.pvalues[name] = dp_p
    for g, r in selection_rates(y_pred, groups, min_group_size).items():
        out.groups[(g, sc.GROUP_SELECTION_RATE)] = r
    eod, eod_p = equalized_odds(labeled_true, labeled_pred, labeled_groups, min_group_size)
    if eod is not None:
        out.metrics[sc.FAIR_EQUALIZED_ODDS_DIFFERENCE] = float(eod)
        if eod_p is not None:
            out.pvalues[sc.FAIR_EQUALIZED_ODDS_DIFFERENCE] = eod_p
    for g, rates in group_rates(labeled_true, labeled_pred, labeled_groups, min_group_size).items():
        for metric, v in rates.items():
            out.groups[(g, metric)] = v
    return out
