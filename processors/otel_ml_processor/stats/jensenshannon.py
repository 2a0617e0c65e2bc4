"""``jensenshannon``: ``scipy.spatial.distance.jensenshannon(r, c, base=2)``.

Numeric features: r, c = raw fractions of reference and window in the PSI bins (no 1e-4
replacement). Categorical features: fractions over the sorted union of categories (a category
unseen in the reference has r = 0). Score = the distance in [0, 1] (no p-value); detected when
score >= threshold (default 0.1). scipy is called on the few-bin vectors (cheap).

Example::

    import numpy as np
    from otel_ml_processor.stats.registry import FeatureReference, FeatureWindow
    from otel_ml_processor.stats.jensenshannon import compute

    ref = FeatureReference.build(np.array(["a", "b"], dtype=object))
    compute(ref, FeatureWindow.build(np.array(["a", "a"], dtype=object)), "categorical").score
"""

from __future__ import annotations

from scipy.spatial import distance

from otel_ml import semconv as sc
from otel_ml_processor.stats.psi import window_bin_counts
from otel_ml_processor.stats.registry import (
    CATEGORICAL, DISTANCE, NUMERIC, DriftScore, DriftTest, FeatureReference, FeatureWindow, union_counts,
)


def compute(ref: FeatureReference, cur: FeatureWindow, treatment: str) -> DriftScore:
    if treatment == NUMERIC:
        r, c = ref.psi_counts, window_bin_counts(ref, cur)
    else:
        _, r, c = union_counts(ref, cur)
    return DriftScore(score=float(distance.jensenshannon(r / r.sum(), c / c.sum(), base=2)))


TEST = DriftTest(
    name=sc.METHOD_JENSENSHANNON, kinds=frozenset({NUMERIC, CATEGORICAL}), score_kind=DISTANCE,
    default_threshold=0.1, compute=compute,
    description="Jensen-Shannon distance, base 2 (scipy.spatial.distance.jensenshannon)",
)
