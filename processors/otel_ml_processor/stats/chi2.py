"""``chi2``: ``scipy.stats.chi2_contingency([ref_counts, window_counts], correction=False)``.

Over the sorted union of categories (a category unseen in the reference is a column of its own;
a numeric-valued feature's distinct numbers are its categories). Statistic = Pearson's
sum((O - E)^2 / E) with E = row total x column total / n; p-value = ``scipy.stats.chi2.sf(stat,
k - 1)`` (with a single category, dof 0: statistic 0, p-value 1, as scipy). Detected when p <
threshold (default 0.05).

Example::

    import numpy as np
    from otel_ml_processor.stats.chi2 import chi2_counts

    chi2_counts(np.array([50, 50]), np.array([70, 30]))   # (8.33..., 0.0039)
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from otel_ml import semconv as sc
from otel_ml_processor.stats.registry import (
    CATEGORICAL, PVALUE, DriftScore, DriftTest, FeatureReference, FeatureWindow, union_counts,
)


def chi2_counts(ref_counts: np.ndarray, win_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the 2 x k contingency table, no continuity correction."""
    obs = np.vstack((ref_counts, win_counts)).astype(float)
    k = obs.shape[1]
    if k <= 1:
        return 0.0, 1.0
    expected = np.outer(obs.sum(axis=1), obs.sum(axis=0)) / obs.sum()
    stat = float(np.sum((obs - expected) ** 2 / expected))
    return stat, float(stats.chi2.sf(stat, k - 1))


def compute(ref: FeatureReference, cur: FeatureWindow, treatment: str) -> DriftScore:
    _, r, c = union_counts(ref, cur)
    stat, p = chi2_counts(r, c)
    return DriftScore(score=stat, pvalue=p)


TEST = DriftTest(
    name=sc.METHOD_CHI2, kinds=frozenset({CATEGORICAL}), score_kind=PVALUE, default_threshold=0.05,
    compute=compute, description="chi-squared test of the 2 x k contingency table (scipy.stats.chi2_contingency)",
)
