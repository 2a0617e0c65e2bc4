"""Fairness of a binary model per segment attribute (fairlearn's definitions).

Inputs are 0/1 ``y_pred`` (and ``y_true`` for the labeled rows) and the group of each row (str;
rows without the attribute are left out by the caller). Groups with fewer than
``min_group_size`` rows among the rows a metric uses are left out of that metric; a metric is
absent when no group is left, or when fairlearn's value is NaN (a ratio 0/0).

- demographic_parity_difference = max - min of the groups' selection rates (mean of y_pred):
  ``fairlearn.metrics.demographic_parity_difference``;
- disparate_impact_ratio = min / max of the same: ``fairlearn.metrics.demographic_parity_ratio``;
- equalized_odds_difference = max(TPR difference, FPR difference) between groups on the
  labeled rows: ``fairlearn.metrics.equalized_odds_difference`` (a group without positives has
  TPR 0, one without negatives FPR 0, as fairlearn's ``true_positive_rate`` / ``false_positive_rate``);
- per group: selection_rate (window rows), accuracy, tpr, fpr (labeled rows).

Example::

    import numpy as np
    from otel_ml_processor.stats.fairness import demographic_parity

    g = np.array(["a", "a", "b", "b"], dtype=object)
    demographic_parity(np.array([1, 0, 1, 1]), g, min_group_size=1)   # (0.5, 0.5)
"""

from __future__ import annotations

import math

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats._codes import factorize

__all__ = ["demographic_parity", "equalized_odds_difference", "group_rates", "selection_rates",
           "fairness_metrics"]


def _codes(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return factorize(np.asarray(groups, dtype=object))


def selection_rates(y_pred: np.ndarray, groups: np.ndarray, min_group_size: int) -> dict[str, float]:
    """Group -> mean of y_pred, for groups with at least ``min_group_size`` rows."""
    if len(y_pred) == 0:
        return {}
    names, inv = _codes(groups)
    n = np.bincount(inv, minlength=names.size)
    pos = np.bincount(inv, weights=np.asarray(y_pred, dtype=float), minlength=names.size)
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


def group_rates(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                min_group_size: int) -> dict[str, dict[str, float]]:
    """Group -> {accuracy, tpr, fpr} on labeled rows, groups with >= ``min_group_size`` rows."""
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
    out: dict[str, dict[str, float]] = {}
    for i, g in enumerate(names):
        if n[i] < min_group_size or n[i] == 0:
            continue
        out[str(g)] = {
            sc.GROUP_ACCURACY: float((tp[i] + tn[i]) / n[i]),
            sc.GROUP_TPR: float(tp[i] / (tp[i] + fn[i])) if tp[i] + fn[i] else 0.0,
            sc.GROUP_FPR: float(fp[i] / (fp[i] + tn[i])) if fp[i] + tn[i] else 0.0,
        }
    return out


def equalized_odds_difference(rates: dict[str, dict[str, float]]) -> float | None:
    """From :func:`group_rates`: max over {tpr, fpr} of (max - min between groups)."""
    if not rates:
        return None
    tpr = [r[sc.GROUP_TPR] for r in rates.values()]
    fpr = [r[sc.GROUP_FPR] for r in rates.values()]
    return max(max(tpr) - min(tpr), max(fpr) - min(fpr))


def fairness_metrics(y_pred: np.ndarray, groups: np.ndarray, labeled: np.ndarray, y_true: np.ndarray,
                     min_group_size: int) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """All fairness numbers of one attribute.

    ``y_pred``, ``groups``, ``labeled`` (bool) cover the window's rows that have the attribute and
    a predicted label; ``y_true`` is 0/1 where ``labeled``. Returns ({metric: value},
    {(group, metric): value}).
    """
    fair: dict[str, float] = {}
    per_group: dict[tuple[str, str], float] = {}
    diff, ratio = demographic_parity(y_pred, groups, min_group_size)
    for name, v in ((sc.FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE, diff), (sc.FAIR_DISPARATE_IMPACT_RATIO, ratio)):
        if v is not None and math.isfinite(v):
            fair[name] = float(v)
    for g, r in selection_rates(y_pred, groups, min_group_size).items():
        per_group[(g, sc.GROUP_SELECTION_RATE)] = r
    rates = group_rates(y_true[labeled], y_pred[labeled], groups[labeled], min_group_size)
    eod = equalized_odds_difference(rates)
    if eod is not None:
        fair[sc.FAIR_EQUALIZED_ODDS_DIFFERENCE] = float(eod)
    for g, r in rates.items():
        for metric, v in r.items():
            per_group[(g, metric)] = v
    return fair, per_group
