"""``wasserstein``: ``scipy.stats.wasserstein_distance(reference, window) / max(np.std(reference), 0.001)``.

The distance is the integral of |F_ref - F_window| over the merged sorted values, computed from
the pre-sorted reference. Score = that normalized distance (no p-value); detected when score >=
threshold (default 0.1).

Example::

    import numpy as np
    from otel_ml_processor.stats.wasserstein import wasserstein_sorted

    wasserstein_sorted(np.array([0.0, 1.0]), np.array([1.0, 2.0]))   # 1.0
"""

from __future__ import annotations

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats._ecdf import merge
from otel_ml_processor.stats.registry import DISTANCE, NUMERIC, DriftScore, DriftTest, FeatureReference, FeatureWindow

#: Floor of the reference's standard deviation in the normalization (DESIGN.md).
MIN_STD = 0.001


def wasserstein_sorted(ref_sorted: np.ndarray, win_sorted: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance`` of two sorted samples."""
    m = merge(ref_sorted, win_sorted)
    deltas = np.diff(m.values)
    # at a tie the delta is 0, so partial counts inside a run of equal values do not matter
    cdf_diff = np.abs(m.ref_le[:-1] / m.n1 - m.win_le[:-1] / m.n2)
    return float(np.dot(cdf_diff, deltas))


def compute(ref: FeatureReference, cur: FeatureWindow, treatment: str) -> DriftScore:
    return DriftScore(score=wasserstein_sorted(ref.sorted, cur.sorted) / max(ref.std, MIN_STD))


TEST = DriftTest(
    name=sc.METHOD_WASSERSTEIN, kinds=frozenset({NUMERIC}), score_kind=DISTANCE,
    default_threshold=0.1, compute=compute,
    description="Wasserstein-1 distance / reference std (scipy.stats.wasserstein_distance)",
)
