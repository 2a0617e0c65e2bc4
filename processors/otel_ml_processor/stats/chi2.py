"""``chi2``: ``scipy.stats.chi2_contingency([ref_counts, window_counts], correction=False)``.

Over the sorted union of categories (a category unseen in the reference is a column of its own;
a numeric-valued feature's distinct numbers are its categories). Sparse categories are pooled
first (DESIGN.md): a category whose smaller expected count, (ref_count + window_count) x
min(n_ref, n_window) / (n_ref + n_window), is below 5 is summed with the other such categories
into one column placed last, when at least two are sparse (chi2's p-value is not valid on
sparse cells). Statistic = Pearson's sum((O - E)^2 / E) with E = row total x column total / n;
p-value = ``scipy.stats.chi2.sf(stat, k - 1)``; a table left with one column gives statistic 0
and p-value 1. Decided on the Benjamini-Hochberg q-value (see the engine).

Example::

    import numpy as np
    from otel_ml_processor.stats.chi2 import chi2_counts, pool_sparse

    chi2_counts(np.array([50, 50]), np.array([70, 30]))   # (8.33..., 0.0039)
    pool_sparse(np.array([500, 3, 2]), np.array([50, 1, 0]))   # ([500, 5], [50, 1])
"""

from __future__ import annotations

import numpy as np
from scipy import special

from otel_ml import semconv as sc
from otel_ml_processor.stats.decisions import DEFAULT_ALPHA
from otel_ml_processor.stats.drift_types import (
    CATEGORICAL, PVALUE, SMALL, DriftScore, DriftTest, FeatureReference, FeatureWindow, union_counts,
)

#: Categories whose smaller expected count is below this are pooled (DESIGN.md).
MIN_EXPECTED = 5.0


def pool_sparse(ref_counts: np.ndarray, win_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two count rows with the sparse categories summed into one last column (module doc)."""
    r = np.asarray(ref_counts, dtype=np.int64)
    w = np.asarray(win_counts, dtype=np.int64)
    n_r, n_w = int(r.sum()), int(w.sum())
    if n_r + n_w == 0:
        return r, w
    sparse = (r + w) * min(n_r, n_w) / (n_r + n_w) < MIN_EXPECTED
    if np.count_nonzero(sparse) < 2:
        return r, w
    keep = ~sparse
    return (np.append(r[keep], r[sparse].sum()), np.append(w[keep], w[sparse].sum()))


def chi2_counts(ref_counts: np.ndarray, win_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the 2 x k contingency table as given (no pooling, no correction)."""
    obs = np.vstack((ref_counts, win_counts)).astype(float)
    k = obs.shape[1]
    if k <= 1:
        return 0.0, 1.0
    expected = np.outer(obs.sum(axis=1), obs.sum(axis=0)) / obs.sum()
    stat = float(np.sum((obs - expected) ** 2 / expected))
    return stat, float(special.chdtrc(k - 1, stat))   # = scipy.stats.chi2.sf(stat, k - 1), without its overhead


def prepare(ref: FeatureReference, treatment: str) -> FeatureReference:
    """The reference's categories and counts (computed now, kept on the reference)."""
    _ = ref.category_counts
    return ref


def compute(ref: FeatureReference, cur: FeatureWindow) -> DriftScore:
    _, r, c = union_counts(ref, cur)
    stat, p = chi2_counts(*pool_sparse(r, c))
    return DriftScore(score=stat, pvalue=p)


TEST = DriftTest(
    name=sc.METHOD_CHI2, kinds=frozenset({CATEGORICAL}), score_kind=PVALUE, default_threshold=DEFAULT_ALPHA,
    prepare=prepare, compute=compute, auto=frozenset({(CATEGORICAL, SMALL)}),
    description="chi-squared test of the 2 x k contingency table, sparse categories pooled "
                "(scipy.stats.chi2_contingency)",
)
