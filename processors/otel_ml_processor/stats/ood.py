"""Out-of-distribution flags (DESIGN.md "Out-of-distribution").

A value is OOD when a numeric feature lies outside the reference's range widened on each side
by ``margin`` x (max - min) (``ood.margin``, default 0.1; 0 gives [min, max]), or a categorical
feature has a value absent from the reference. The margin is there because a sample's own
[min, max] is crossed by about 2 / (n + 1) of new values of the very same distribution. A
missing value (NaN / None) is never OOD. A prediction is OOD when any of its features is;
``ml_ood_ratio`` is the OOD fraction of the window's rows, ``ml_feature_ood_ratio{feature}``
the same fraction per feature (denominator: every row of the window, missing ones included).
There is no third-party oracle; the tests hold these against a plain Python loop over the rows.

Example::

    import numpy as np
    from otel_ml_processor.stats.ood import numeric_ood, categorical_ood

    numeric_ood(np.array([0.5, 1.05, 3.0, np.nan]), 0.0, 1.0)    # [False, False, True, False]
    categorical_ood(np.array(["a", "z", None], dtype=object), {"a", "b"})  # [False, True, False]
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

__all__ = ["numeric_ood", "categorical_ood", "ood_ratio", "DEFAULT_MARGIN"]

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
