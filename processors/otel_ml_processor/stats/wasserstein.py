"""``wasserstein``: ``scipy.stats.wasserstein_distance(reference, window) / max(np.std(reference), 0.001)``.

The distance is computed from the pre-sorted reference as the integral over q of the distance
between the two samples' quantile functions (equal to scipy's integral of |F_ref - F_window| over
x), on a grid of q that depends only on the two sample sizes and is cached. Score = that
normalized distance (no p-value); detected when score >= threshold (default 0.1).

Example::

    import numpy as np
    from otel_ml_processor.stats.wasserstein import wasserstein_sorted

    wasserstein_sorted(np.array([0.0, 1.0]), np.array([1.0, 2.0]))   # 1.0
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from otel_ml import semconv as sc
from otel_ml_processor.stats.registry import DISTANCE, NUMERIC, DriftScore, DriftTest, FeatureReference, FeatureWindow

#: Floor of the reference's standard deviation in the normalization (DESIGN.md).
MIN_STD = 0.001


@lru_cache(maxsize=16)
def _quantile_grid(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For samples of sizes n1 and n2: on each interval of q between consecutive points of
    {i / n1} U {j / n2}, the index of each sample's quantile and the interval's length.

    Depends on the sizes only, so one grid serves every feature of a window (cached)."""
    b = np.union1d(np.arange(n1 + 1, dtype=np.int64) * n2, np.arange(n2 + 1, dtype=np.int64) * n1)
    hi = b[1:]
    # q in (b[k], b[k+1]] / (n1 n2): sample 1's quantile is its ceil(q n1)-th smallest value
    ia = (hi + n2 - 1) // n2 - 1
    ib = (hi + n1 - 1) // n1 - 1
    dq = np.diff(b) / (float(n1) * float(n2))
    return ia, ib, dq


def wasserstein_sorted(ref_sorted: np.ndarray, win_sorted: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance`` of two sorted samples.

    scipy integrates |F_ref - F_window| over x; the same area is the integral over q in [0, 1]
    of |F_ref^-1(q) - F_window^-1(q)|, a sum over a grid that depends only on the two sizes.
    """
    ia, ib, dq = _quantile_grid(int(ref_sorted.size), int(win_sorted.size))
    return float(np.dot(np.abs(ref_sorted[ia] - win_sorted[ib]), dq))


def compute(ref: FeatureReference, cur: FeatureWindow, treatment: str) -> DriftScore:
    return DriftScore(score=wasserstein_sorted(ref.sorted, cur.sorted) / max(ref.std, MIN_STD))


TEST = DriftTest(
    name=sc.METHOD_WASSERSTEIN, kinds=frozenset({NUMERIC}), score_kind=DISTANCE,
    default_threshold=0.1, compute=compute,
    description="Wasserstein-1 distance / reference std (scipy.stats.wasserstein_distance)",
)
