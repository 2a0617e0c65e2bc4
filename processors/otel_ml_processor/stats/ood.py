"""Out-of-distribution flags (DESIGN.md "Out-of-distribution").

A value is OOD when a numeric feature lies outside the reference's range widened on each side
by ``margin`` x (max - min) (``ood.margin``, default 0.1; 0 gives [min, max]), or a categorical
feature has a value absent from the reference. The margin is there because a sample's own
[min, max] is crossed by about 2 / (n + 1) of new values of the very same distribution. A
missing value (NaN / None) is never OOD. A prediction is OOD when any of its features is;
``ml_ood_ratio`` is the OOD fraction of the window's rows, ``ml_feature_ood_ratio{feature}``
the same fraction per feature (denominator: every row of the window, missing ones included).
There is no third-party oracle; the tests hold these against a plain Python loop over the rows.

The OOD *floor* (``ml_ood_ratio_floor``, docs/metrics.md "OOD floor"): the OOD fraction a
window of ``n`` rows can show at level ``drift.alpha`` while the model is stable, because a
finite reference misses part of its own distribution (a 300-level Zipf feature and a 1 000-row
reference: ~8 % of fresh rows carry a level the reference never saw). Per feature, the chance
that a fresh value of the reference's own distribution is OOD, with the variance of that
estimate (:func:`categorical_unseen`: Good-Turing's N1/n and Esty's variance;
:func:`numeric_unseen`: the leave-one-value-out count, capped by the distribution-free 2/(n+1));
:func:`stable_ood_bound` sums them over the features (union bound) and adds z(1 - alpha/2)
standard errors; :func:`ood_ratio_floor` is the (1 - alpha/2) quantile of Binomial(n, that
bound) / n. P(ratio > floor) <= alpha/2 (the bound is too low) + alpha/2 (the window's draw).

Example::

    import numpy as np
    from otel_ml_processor.stats.ood import numeric_ood, categorical_ood

    numeric_ood(np.array([0.5, 1.05, 3.0, np.nan]), 0.0, 1.0)    # [False, False, True, False]
    categorical_ood(np.array(["a", "z", None], dtype=object), {"a", "b"})  # [False, True, False]

    from otel_ml_processor.stats.ood import categorical_unseen, numeric_unseen, ood_ratio_floor, stable_ood_bound

    p_var = [categorical_unseen(np.array([5, 1, 1, 2])), numeric_unseen(np.arange(100.0), 0.1)]
    ood_ratio_floor(400, stable_ood_bound(p_var, 0.01), 0.01)   # 0.815: 2 singletons among 9 values
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from functools import lru_cache

import numpy as np
from scipy import stats

__all__ = ["numeric_ood", "categorical_ood", "ood_ratio", "DEFAULT_MARGIN", "categorical_unseen",
           "numeric_unseen", "stable_ood_bound", "ood_ratio_floor"]

#: ``ood.margin``'s default (DESIGN.md).
DEFAULT_MARGIN = 0.1


def numeric_ood(values: np.ndarray, ref_min: float, ref_max: float, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Boolean mask: value outside [ref_min - w, ref_max + w], w = margin x (ref_max - ref_min)
    (NaN is not OOD; +-inf is)."""
    v = np.asarray(values, dtype=float)
    w = margin * (ref_max - ref_min)
    # comparisons with NaN are False, so a missing value is never OOD
    return (v < ref_min - w) | (v > ref_max + w)


def categorical_ood(values: np.ndarray, categories: Collection[object]) -> np.ndarray:
    """Boolean mask: value present and not one of the reference's ``categories``."""
    cats = set(categories)
    v = np.asarray(values, dtype=object)
    if v.size == 0:
        return np.zeros(0, dtype=bool)
    table: dict = {}
    codes = np.fromiter((table.setdefault(x, len(table)) for x in v.tolist()), dtype=np.intp, count=v.size)
    unseen = np.fromiter((x is not None and x not in cats for x in table), dtype=bool, count=len(table))
    return unseen[codes]


def ood_ratio(masks: list[np.ndarray], n_rows: int) -> float | None:
    """Fraction of rows flagged by any mask; None for an empty window."""
    if n_rows == 0:
        return None
    if not masks:
        return 0.0
    anyood = np.zeros(n_rows, dtype=bool)
    for m in masks:
        anyood |= m
    return float(np.count_nonzero(anyood)) / n_rows


def categorical_unseen(counts: np.ndarray) -> tuple[float, float]:
    """(p, variance): Good-Turing's estimate p = N1 / n of the probability that a fresh value of
    the reference's distribution is a category the reference never saw (N1: categories seen
    exactly once among its n present values), and Esty's (1983) estimate of the variance of
    that estimate's error, (N1 + 2 N2 - N1^2 / n) / n^2 (N2: categories seen exactly twice).
    ``counts``: the reference's count per category. (0, 0) for an empty reference."""
    c = np.asarray(counts, dtype=np.int64)
    n = int(c.sum())
    if n == 0:
        return 0.0, 0.0
    n1, n2 = int(np.count_nonzero(c == 1)), int(np.count_nonzero(c == 2))
    return n1 / n, max(n1 + 2 * n2 - n1 * n1 / n, 0.0) / (n * n)


def numeric_unseen(sorted_values: np.ndarray, margin: float = DEFAULT_MARGIN) -> tuple[float, float]:
    """(p, variance): the chance that a fresh value of the reference's distribution falls outside
    its OOD range (:func:`numeric_ood`), for a numeric feature whose present reference values are
    ``sorted_values`` (ascending).

    p = min(L / n, 2 / (n + 1)). 2 / (n + 1) bounds it for any distribution and any margin >= 0
    (of n + 1 exchangeable values, at most one is the strict largest and one the strict
    smallest; the widened range only holds more); with margin 0 it is the exact mean for a
    continuous distribution, and p is that. L, the leave-one-value-out count (Good-Turing's
    idea on a range), is the number of reference values that lie outside the OOD range of the
    reference without their value (all its copies): the smallest value's copies when it lies
    below [second smallest, largest] widened by the margin, the largest value's likewise. Its
    variance is taken as a count's, p / n. A reference with one distinct value gives L = n
    (nothing is left to bound it), so p = 2 / (n + 1). (0, 0) for an empty reference.
    """
    v = np.asarray(sorted_values, dtype=float)
    n = int(v.size)
    if n == 0:
        return 0.0, 0.0
    cap = 2.0 / (n + 1)
    if margin <= 0:
        return cap, cap / n
    lo, hi = float(v[0]), float(v[-1])
    if lo == hi:
        left_out = n
    else:
        # the extremes' copies and the next distinct values, by bisection (the values are sorted)
        n_lo = int(np.searchsorted(v, lo, side="right"))
        n_hi = n - int(np.searchsorted(v, hi, side="left"))
        lo2, hi2 = float(v[n_lo]), float(v[n - n_hi - 1])
        left_out = 0
        if lo < lo2 - margin * (hi - lo2):
            left_out += n_lo
        if hi > hi2 + margin * (hi2 - lo):
            left_out += n_hi
    p = min(left_out / n, cap)
    return p, p / n


def stable_ood_bound(parts: Sequence[tuple[float, float]], alpha: float) -> float:
    """Upper (1 - alpha/2) confidence bound of a stable row's OOD probability from its features'
    ``(p, variance)``: min(1, sum p + z sqrt(sum variance)), z = norm.isf(alpha / 2). The sum of
    the features' chances bounds the chance that any of them is OOD (union bound); the features'
    estimation errors are taken as independent."""
    p = sum(float(pi) for pi, _ in parts)
    var = sum(float(vi) for _, vi in parts)
    return min(1.0, p + float(stats.norm.isf(alpha / 2.0)) * math.sqrt(var))


@lru_cache(maxsize=4096)
def ood_ratio_floor(n: int, p_up: float, alpha: float) -> float:
    """``binom.ppf(1 - alpha/2, n, p_up) / n``: the OOD fraction a stable window of ``n`` rows
    exceeds with probability at most alpha/2 when a row is OOD with probability ``p_up``
    (cached: a model's ``p_up`` is fixed by its reference, ``n`` takes few values)."""
    if n <= 0:
        return 0.0
    return float(stats.binom.ppf(1.0 - alpha / 2.0, int(n), min(max(float(p_up), 0.0), 1.0))) / int(n)
